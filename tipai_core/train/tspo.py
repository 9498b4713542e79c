"""Stage B3: train the candidate policy π_θ(a | s) with TSPO (tspo.py for the loss).

Offline, from logged tournaments (clipped importance weights correct for the policy that drew them):

    python -m tipai_core.train tspo offline --logs output/tipai_logs --out models/tipai/policy.safetensors

On-policy, driving one or several running ComfyUI servers (127.0.0.1 only) with an API workflow template
that holds a TiPAI TSPO Sampler, a TiPAI KSampler and a TiPAI Save Tournament Log node. Each iteration
writes the current policy into each server's models/tipai folder (--policy-dir), queues --jobs runs per
server with fresh seeds, reads their tournament logs back over HTTP and takes --steps gradient steps:

    python -m tipai_core.train tspo online --server http://127.0.0.1:8188 --policy-dir ComfyUI/models/tipai \
        --workflow workflows/api/tipai_txt2img.json --iterations 20 --out models/tipai/policy.safetensors

The policy's feature normaliser (policy_net.py) is fitted to the training states before the first step: to
the logged states offline, to the bandit's contexts, or to the first round's states on-policy (a fresh
policy draws uniformly whatever its normaliser, so that round's log-probs stay exact). --beta-final anneals β
linearly. Offline, keep β larger and constant (e.g. 0.2): a π that stays spread over the behaviour
policy's support keeps the clipped importance weights informative (the progress lines report their mean;
near 0 means π has left the data and the estimate is noise).

The bandit mode trains on the synthetic knob bandit (bandit.py) and prints the learning curve against the
oracle and the uniform policy. Every mode writes progress lines, a learning-curve PNG (matplotlib) next to
--out and checkpoints (--checkpoint-every iterations, atomic safetensors + JSON, as Stage A); --resume continues from
the newest one, --stop-after-iteration splits a run.

Every numeric option has a range (shown by --help; --iterations 1..100000) checked before any work, by
the command and by the library functions alike. Corrupt log lines are skipped and named; readable records
TSPO cannot learn from (NaN log-probs, huge state numbers, a depth above max_depth) are dropped, counted
and named; a run whose weights turn non-finite stops with an error before it writes a policy.

Library use: ``train_offline``, ``train_online`` and ``train_bandit`` (one per mode) take a ``TSPOSettings``;
the command is a thin argparse wrapper around them (``run``). The ComfyUI HTTP client is comfy_client.py.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from ..guard.plots import learning_curve
from ..policy.actions import KNOBS, Action, PolicyState
from ..policy.policy_net import DEFAULT_CHOICES, PolicyNet, state_features
from ..policy.tspo import TournamentBatch, TSPOConfig, TSPOParts, records_to_batches, tspo_step
from ..records.files import atomic_write
from ..records.tournament_log import LogStats, iter_records, require_records
from ..records.tournament_record import TournamentRecord
from .checkpoint import complete_checkpoints, load_checkpoint, remove_checkpoints, save_checkpoint
from .cli import StageParser, check_ranges, number, run_command, seed_option
from .comfy_client import ComfyClient, online_round, prepare_template

CHECKPOINT_FORMAT = "tipai-tspo-checkpoint"
# what must match for a checkpoint to continue a run (in this order in its JSON)
FINGERPRINT = (
    "mode",
    "credit",
    "tau",
    "beta",
    "beta_final",
    "lambda_c",
    "lambda_div",
    "clip",
    "self_normalise",
    "lr",
    "hidden",
    "n_classes",
    "seed",
    "iterations",
)
Say = Callable[..., Any]
MAX_ITERATIONS = 100_000  # --iterations (and what counts iterations): 1 .. 100000


def build_parser() -> argparse.ArgumentParser:
    p = StageParser(
        prog="python -m tipai_core.train tspo",
        description="Stage B3: train the candidate policy π_θ(a|s) with TSPO.",
        tag="tspo",
    )
    p.add_argument(
        "mode",
        choices=("offline", "online", "bandit"),
        help="offline: from logs; online: drive ComfyUI servers; bandit: the synthetic test bed",
    )
    g = p.add_argument_group("data")
    g.add_argument("--logs", nargs="+", help="offline: .records.jsonl files or folders of them")
    g.add_argument("--server", action="append", default=[], help="online: a ComfyUI server URL on 127.0.0.1 (repeat)")
    g.add_argument(
        "--policy-dir",
        action="append",
        default=[],
        help="online: the models/tipai folder of each server (one for all, or one per --server)",
    )
    g.add_argument("--workflow", help="online: API-format workflow template (TSPO Sampler + TiPAI KSampler + Save Log)")
    number(g, "--jobs", int, 1, 1024, default=2, help="online: runs queued per server per iteration")
    number(g, "--job-timeout", float, 0, 86400, lo_open=True, default=300.0, help="online: seconds to wait for one run")
    g = p.add_argument_group("policy")
    g.add_argument("--out", required=True, help="policy file to write (<stem>.safetensors + <stem>.json)")
    g.add_argument("--init", help="start from this policy file (its knobs must match --knobs when given)")
    g.add_argument("--knobs", help="JSON {knob: [choices]} (default: the choices seen in the logs, or the defaults)")
    number(g, "--hidden", int, 1, 4096, default=32, help="width of the policy's hidden layer")
    number(g, "--n-classes", int, 1, 256, default=5, help="risk-vector length the policy reads")
    g = p.add_argument_group("TSPO")
    g.add_argument("--credit", choices=("loo", "soft"), default="loo")
    number(g, "--tau", float, 1e-3, 100, default=0.1, help="soft-credit temperature τ (u/τ must not overflow)")
    number(g, "--beta", float, 0, 100, default=0.02, help="entropy β")
    number(
        g, "--beta-final", float, 0, 100, help="anneal β linearly to this by the last iteration (default: constant β)"
    )
    number(g, "--lambda-c", float, 0, 100, default=0.05, help="compute cost λ_c per denoiser call of a candidate")
    number(g, "--lambda-div", float, 0, 100, default=0.0, help="diversity λ_div")
    number(g, "--clip", float, 0, 1e6, lo_open=True, default=5.0, help="importance-weight clip ρ̄")
    g.add_argument(
        "--self-normalise",
        action="store_true",
        help="offline: divide the clipped weights by their batch mean (weighted importance sampling)",
    )
    number(g, "--lr", float, 0, 1, lo_open=True, default=0.01, help="Adam learning rate")
    number(
        g,
        "--iterations",
        int,
        1,
        MAX_ITERATIONS,
        default=200,
        help="offline: epochs; online/bandit: draw-and-update rounds",
    )
    number(g, "--steps", int, 1, 10000, default=1, help="gradient steps per online iteration")
    number(g, "--batch", int, 1, 65536, default=256, help="offline: tournaments per gradient step")
    number(g, "--tournaments", int, 1, 65536, default=32, help="bandit: tournaments per iteration")
    number(g, "--n", int, 1, 64, default=4, help="bandit: N candidates per tournament")
    seed_option(g)
    g = p.add_argument_group("checkpoints")
    g.add_argument("--checkpoint-dir", help="default: <out stem>.ckpt next to --out (emptied when the run completes)")
    number(g, "--checkpoint-every", int, 0, MAX_ITERATIONS, default=10, help="iterations between checkpoints (0: none)")
    g.add_argument("--resume", action="store_true")
    number(g, "--stop-after-iteration", int, 1, MAX_ITERATIONS, help="checkpoint and stop after this iteration")
    return p


# ----------------------------------------------------------------------------- settings and the policy


@dataclass
class TSPOSettings:
    """What every mode takes: the policy file, the TSPO loss, the schedule and the checkpoints.

    Defaults are the command's. ``knobs`` ({knob: [choices]}) fixes the policy's choices; None: the
    choices seen in the logs (offline), else the defaults.
    """

    out: str | Path
    init: str | Path | None = None
    knobs: dict[str, list] | None = None
    hidden: int = 32
    n_classes: int = 5
    credit: str = "loo"
    tau: float = 0.1
    beta: float = 0.02
    beta_final: float | None = None
    lambda_c: float = 0.05
    lambda_div: float = 0.0
    clip: float = 5.0
    self_normalise: bool = False
    lr: float = 0.01
    iterations: int = 200
    seed: int = 0
    checkpoint_dir: str | Path | None = None
    checkpoint_every: int = 10
    resume: bool = False
    stop_after_iteration: int | None = None

    @property
    def out_path(self) -> Path:
        return Path(self.out).with_suffix(".safetensors")

    @property
    def checkpoint_path(self) -> Path:
        out = self.out_path
        return Path(self.checkpoint_dir) if self.checkpoint_dir else out.with_name(out.stem + ".ckpt")

    def config(self, it: int = 1) -> TSPOConfig:
        """The loss settings of iteration ``it`` (1-based): β_it = β + (β_final - β)·(it - 1)/(iterations - 1)."""
        beta = self.beta
        if self.beta_final is not None and self.iterations > 1:
            beta = self.beta + (self.beta_final - self.beta) * (it - 1) / (self.iterations - 1)
        return TSPOConfig(
            credit=self.credit,
            tau=self.tau,
            beta=beta,
            lambda_c=self.lambda_c,
            lambda_div=self.lambda_div,
            clip=self.clip,
            self_normalise=self.self_normalise,
        )

    def fingerprint(self, mode: str) -> dict[str, Any]:
        return {k: mode if k == "mode" else getattr(self, k) for k in FINGERPRINT}


def check_settings(s: TSPOSettings, **mode_options: Any) -> None:
    """Every number of ``s`` and of a mode's options (``batch=``, ``n=``...) in the command's range
    (``cli.bounded``), checked before any work starts; raises ValueError naming the option."""
    check_ranges(build_parser(), {**{f.name: getattr(s, f.name) for f in fields(s)}, **mode_options})


def make_policy(s: TSPOSettings, seen: dict[str, set] | None = None) -> PolicyNet:
    """The policy to train: ``s.init`` when given, else a fresh one over ``s.knobs``, the choices seen in the
    logs (``seen``) or the default ones."""
    if s.init:
        return PolicyNet.load(s.init, expect_knobs=s.knobs)
    choices = s.knobs
    if choices is None and seen:
        choices = {k: sorted(v, key=lambda x: (str(type(x)), x)) for k, v in seen.items()}
    return PolicyNet(choices or DEFAULT_CHOICES, n_classes=s.n_classes, hidden=s.hidden)


def _check_covered(policy: PolicyNet, batch: TournamentBatch) -> None:
    """Logged actions the policy cannot draw teach it nothing: fail clearly when that is all of them."""
    if not bool(batch.valid.any()):
        raise ValueError(
            f"no logged action uses only knob values the policy can draw (its knobs: "
            f"{ {k: list(v) for k, v in policy.choices.items()} }); the policy file's knobs do not "
            "match the logs"
        )


# ----------------------------------------------------------------------------- the loop every mode shares


@dataclass
class Trainer:
    """The moving parts of one run that a mode's iteration uses."""

    policy: PolicyNet
    opt: torch.optim.Optimizer
    gen: torch.Generator
    rng: random.Random


# one iteration of a mode: (iteration, its loss settings, the trainer) -> its learning-curve point
Iterate = Callable[[int, TSPOConfig, Trainer], dict]


def _progress(mode: str, it: int, iterations: int, point: dict) -> str:
    return f"[tspo] {mode} iteration {it}/{iterations}  " + "  ".join(
        f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items() if k != "iteration"
    )


def _resume(
    s: TSPOSettings, mode: str, policy: PolicyNet, opt: torch.optim.Optimizer, gen: torch.Generator, say: Say
) -> tuple[int, list[dict]]:
    """(first iteration to run, the curve so far): from the newest checkpoint with --resume, else (1, [])."""
    if not s.resume:
        return 1, []
    stems = complete_checkpoints(s.checkpoint_path)
    if not stems:
        return 1, []
    done, _, extra = load_checkpoint(
        stems[-1], policy, opt, None, gen, s.fingerprint(mode), fmt=CHECKPOINT_FORMAT, key="policy", what="TSPO"
    )
    say(f"[tspo] resumed from {stems[-1]} (iteration {done})")
    return done + 1, list(extra.get("curve", []))


def _check_finite(policy: PolicyNet, it: int, point: dict) -> None:
    """A diverged run (non-finite weights or progress numbers) stops before it writes a checkpoint or a policy."""
    bad = [n for n, p in policy.state_dict().items() if p.is_floating_point() and not bool(torch.isfinite(p).all())]
    bad += [k for k, v in point.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise ValueError(
            f"iteration {it}: training diverged (non-finite {', '.join(bad[:4])}); nothing was written. "
            "Lower --lr or check the logs' numbers"
        )


def _iterate_all(
    mode: str, s: TSPOSettings, policy: PolicyNet, iterate: Iterate, say: Say
) -> tuple[list[dict], TSPOConfig, int | None]:
    """Run the iterations (resumed, checkpointed); (curve, last loss settings, iteration stopped at or None)."""
    opt = torch.optim.Adam(policy.parameters(), lr=s.lr)
    gen = torch.Generator().manual_seed(s.seed)
    first, curve = _resume(s, mode, policy, opt, gen, say)
    # seeded by where the run starts: a resumed run draws fresh server seeds
    t = Trainer(policy, opt, gen, random.Random(s.seed * 7919 + first))
    cfg = s.config()
    for it in range(first, s.iterations + 1):
        policy.train()
        cfg = s.config(it)
        point = iterate(it, cfg, t)
        policy.eval()
        _check_finite(policy, it, point)
        curve.append(point)
        if it == first or it == s.iterations or it % max(1, s.iterations // 10) == 0 or mode == "online":
            say(_progress(mode, it, s.iterations, point))
        stop = s.stop_after_iteration is not None and it >= s.stop_after_iteration and it < s.iterations
        due = s.checkpoint_every > 0 and it % s.checkpoint_every == 0 and it < s.iterations
        if due or stop:
            save_checkpoint(
                s.checkpoint_path,
                it,
                it,
                policy,
                opt,
                None,
                gen,
                s.fingerprint(mode),
                fmt=CHECKPOINT_FORMAT,
                key="policy",
                extra={"curve": curve},
            )
        if stop:
            say(f"[tspo] stopped after iteration {it}; continue with --resume (checkpoints in {s.checkpoint_path})")
            return curve, cfg, it
    return curve, cfg, None


def _train(
    mode: str,
    s: TSPOSettings,
    policy: PolicyNet,
    iterate: Iterate,
    say: Say,
    finish: Callable[[dict, dict], None] | None = None,
) -> dict[str, Any]:
    """The shared loop, then the policy file, its learning curve (PNG + JSON) and the checkpoints' removal.

    ``finish(result, meta)`` adds a mode's final numbers before the policy is saved.
    """
    t0 = time.time()
    curve, cfg, stopped = _iterate_all(mode, s, policy, iterate, say)
    if stopped is not None:
        return {"stopped": stopped, "curve": curve}
    meta = {
        "mode": mode,
        "iterations": s.iterations,
        "curve_last": curve[-1] if curve else None,
        "config": vars(cfg),
        "seconds": time.time() - t0,
    }
    result: dict[str, Any] = {"curve": curve}
    if finish is not None:
        finish(result, meta)
    out = s.out_path
    policy.save(out, metadata=meta)
    series = {
        k: [p[k] for p in curve] for k in ("win_rate", "cost", "pg", "best_u", "entropy") if curve and k in curve[0]
    }
    png = learning_curve(series, out.with_name(out.stem + ".curve.png"))
    atomic_write(out.with_name(out.stem + ".curve.json"), json.dumps(curve, indent=1))
    remove_checkpoints(s.checkpoint_path)
    result.update(policy=str(out), png=str(png))
    return result


def _wrote(result: dict[str, Any], say: Say) -> None:
    out = Path(result["policy"])
    say(f"[tspo] wrote {out} (+ {out.with_suffix('.json').name}) and the learning curve {result['png']}")


# ----------------------------------------------------------------------------- the modes


FEATURE_LIMIT = 1e6  # |φ(s)| and |u| above this are corrupt numbers (no real state or utility comes near)


def _real(v: Any, limit: float = FEATURE_LIMIT) -> bool:
    """A finite number (not a bool) with |v| <= limit; a huge JSON integer is not one."""
    try:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= limit
    except OverflowError:
        return False


def _knobs_typed(actions: list[dict]) -> bool:
    """Integer knobs hold integers (2 or 2.0, not 1.5 or true), the editor a name: what a policy can draw."""
    for a in actions:
        for k, kind in KNOBS.items():
            v = a.get(k)
            if v is None:
                continue
            if kind is str and not isinstance(v, str):
                return False
            if kind is int and not (_real(v, math.inf) and float(v).is_integer()):
                return False
    return True


def unusable(rec: TournamentRecord, n_classes: int, policy: PolicyNet | None = None) -> str | None:
    """Why TSPO cannot learn from a readable record (None: it can): its state, actions, behaviour log-probs
    or utilities hold numbers that would turn the loss into NaN, or (given the policy) no depth it can draw."""
    try:
        state = PolicyState.from_dict(rec.state)
        feats = state_features(state, n_classes)
        actions = [Action.from_dict(a) for a in rec.actions]
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        return f"state or actions unreadable ({type(exc).__name__}: {exc})"
    if not _real(state.max_depth) or not bool(torch.isfinite(feats).all()) or float(feats.abs().max()) > FEATURE_LIMIT:
        return f"state numbers non-finite or beyond ±{FEATURE_LIMIT:g}"
    if not _knobs_typed(rec.actions):
        return "an action's knob has the wrong type (integer knobs take integers, the editor a name)"
    if any(a.depth > state.max_depth for a in actions):
        return f"an action's depth exceeds the state's max_depth {state.max_depth}"
    if not all(_real(v, math.inf) for v in rec.log_probs):
        return "log_probs must be finite"
    if not all(_real(u) or (isinstance(u, float) and not math.isfinite(u)) for u in rec.utilities):
        return f"utilities beyond ±{FEATURE_LIMIT:g}"
    depths = policy.choices.get("depth") if policy is not None else None
    if depths and state.max_depth < min(depths):
        return f"max_depth {state.max_depth} is below every depth the policy can draw {list(depths)}"
    return None


def usable_records(
    logs: Sequence[str | Path], stats: LogStats, n_classes: int, policy: PolicyNet | None = None
) -> Iterator[TournamentRecord]:
    """The records of ``logs`` TSPO can learn from, streamed; the others are dropped, counted and named in ``stats``."""
    for rec in iter_records(logs, stats):
        why = unusable(rec, n_classes, policy)
        if why is None:
            yield rec
        else:
            stats.drop(why)


def _require_usable(stats: LogStats, what: str) -> None:
    require_records(stats, what)
    if stats.used <= 0:
        raise ValueError(
            f"{what}: every record of {', '.join(stats.files)} was dropped ({stats.dropped}), "
            f"e.g. {stats.dropped_errors[0]}"
        )


def _say_stats(stats: LogStats, say: Say) -> None:
    say(f"[tspo] {stats.summary()}")
    for e in stats.errors[:5]:
        say(f"[tspo] skipped {e}")
    for e in stats.dropped_errors[:5]:
        say(f"[tspo] dropped {e}")


def _offline_data(logs: Sequence[str | Path], s: TSPOSettings, say: Say) -> tuple[PolicyNet, list]:
    """The policy and its batches (one per N) from two streaming passes over the logs: the knob values the
    logs use (the policy's choices), then the rows. Unusable records are dropped and named in both."""
    stats = LogStats()
    seen: dict[str, set] = {}
    for rec in usable_records(logs, stats, s.n_classes):
        for a in rec.actions:
            for k in DEFAULT_CHOICES:
                if k in a:
                    seen.setdefault(k, set()).add(a[k])
    _require_usable(stats, "tspo offline")
    policy = make_policy(s, seen)
    final = LogStats()  # the second pass also knows the policy's depths
    try:
        data = list(records_to_batches(policy, usable_records(logs, final, policy.n_classes, policy)).values())
    except ValueError:
        _require_usable(final, "tspo offline")
        raise
    _say_stats(final, say)
    for b in data:
        _check_covered(policy, b)
    return policy, data


def train_offline(logs: Sequence[str | Path], s: TSPOSettings, *, batch: int = 256, say: Say = print) -> dict:
    """TSPO from logged tournaments, ``batch`` tournaments per gradient step; every iteration is one epoch.

    The clipped importance weights min(π_θ/μ, ρ̄) correct for the behaviour policy μ that drew the logs.
    """
    if not logs:
        raise ValueError("offline mode needs --logs")
    logs = [logs] if isinstance(logs, (str, Path)) else list(logs)
    check_settings(s, batch=batch)
    torch.manual_seed(s.seed)
    policy, data = _offline_data(logs, s, say)
    if not s.init and not s.resume:
        policy.fit_normaliser(torch.cat([b.feats for b in data]))

    def iterate(it: int, cfg: TSPOConfig, t: Trainer) -> dict:
        totals = {"pg": 0.0, "entropy": 0.0, "cost": 0.0, "weight": 0.0}
        steps = 0
        for b in data:
            perm = torch.randperm(len(b), generator=t.gen)
            for start in range(0, len(b), batch):
                parts = tspo_step(policy, t.opt, b.take(perm[start : start + batch]), cfg)
                steps += 1
                for k, v in (
                    ("pg", parts.pg),
                    ("entropy", parts.entropy),
                    ("cost", parts.cost),
                    ("weight", parts.mean_weight),
                ):
                    totals[k] += v
        return {"iteration": it, **{k: v / max(1, steps) for k, v in totals.items()}}

    result = _train("offline", s, policy, iterate, say)
    if "policy" in result:
        _wrote(result, say)
    return result


def train_bandit(s: TSPOSettings, *, tournaments: int = 32, n: int = 4, say: Say = print) -> dict:
    """On-policy TSPO on the synthetic knob bandit (testing/bandit.py): ``tournaments`` of ``n`` candidates
    per iteration; the result adds the final, oracle and uniform win rates and the preferred knobs."""
    from ..testing.bandit import CONTEXTS, KnobBandit

    check_settings(s, tournaments=tournaments, n=n)
    torch.manual_seed(s.seed)
    bandit = KnobBandit(seed=s.seed)
    policy = make_policy(s)
    if not s.init:
        policy.fit_normaliser(torch.stack([policy.features_of(bandit.state(t), policy.n_classes) for t in CONTEXTS]))

    def iterate(it: int, cfg: TSPOConfig, t: Trainer) -> dict:
        batch = bandit.play_batch(policy.eval(), tournaments, n, t.gen)
        policy.train()
        parts = tspo_step(policy, t.opt, batch, cfg)
        return {"iteration": it, **bandit.evaluate(policy.eval()), "entropy": parts.entropy}

    def finish(result: dict, meta: dict) -> None:
        final, oracle, uniform = bandit.evaluate(policy), bandit.oracle(), bandit.evaluate(bandit.uniform())
        result.update(
            final=final,
            oracle=oracle,
            uniform=uniform,
            preferred={str(t): policy.preferred(bandit.state(t)) for t in CONTEXTS},
        )
        meta.update(result["preferred"] and {"bandit": {k: result[k] for k in ("final", "oracle", "uniform")}})
        say(
            f"[tspo] bandit: win rate {final['win_rate']:.3f} = {final['win_rate'] / oracle['win_rate']:.1%} of the "
            f"oracle's {oracle['win_rate']:.3f}; compute {final['cost']:.2f} calls/candidate = "
            f"{1 - final['cost'] / uniform['cost']:.1%} less than uniform's {uniform['cost']:.2f}"
        )
        for t, pref in result["preferred"].items():
            say(f"[tspo] bandit: preferred at t={t}: {pref}")

    result = _train("bandit", s, policy, iterate, say, finish)
    if "policy" in result:
        _wrote(result, say)
    return result


def _keep(rec: TournamentRecord, policy: PolicyNet, stats: LogStats) -> bool:
    why = unusable(rec, policy.n_classes, policy)
    if why is not None:
        stats.drop(why, "online round")
    return why is None


def _server_dirs(policy_dirs: Sequence[str | Path], n_servers: int) -> list[Path]:
    """Each server's models/tipai folder: one --policy-dir for all servers, or one per server."""
    if len(policy_dirs) not in (1, n_servers):
        raise ValueError("give one --policy-dir for all servers or one per --server")
    return [Path(d) for d in (list(policy_dirs) * n_servers if len(policy_dirs) == 1 else policy_dirs)]


def train_online(
    servers: Sequence[str],
    workflow: str | Path | None,
    s: TSPOSettings,
    *,
    policy_dirs: Sequence[str | Path],
    jobs: int = 2,
    job_timeout: float = 300.0,
    steps: int = 1,
    say: Say = print,
) -> dict:
    """On-policy TSPO driving running ComfyUI servers (loopback only) with an API workflow template.

    Each iteration writes the current policy into every server's models/tipai folder (``policy_dirs``: one
    for all or one per server), queues ``jobs`` runs per server, reads their tournament logs back and takes
    ``steps`` gradient steps on them.
    """
    if not servers or not workflow:
        raise ValueError("online mode needs --server (one or more) and --workflow")
    check_settings(s, jobs=jobs, job_timeout=job_timeout, steps=steps)
    torch.manual_seed(s.seed)
    clients = [ComfyClient(u) for u in servers]
    dirs = _server_dirs(policy_dirs, len(clients))
    template = json.loads(Path(workflow).read_text())
    ids = prepare_template(template)
    policy = make_policy(s)
    stats = LogStats()
    name = f"_tspo_online_{s.out_path.stem}.safetensors"  # the rolling policy file the servers load

    def iterate(it: int, cfg: TSPOConfig, t: Trainer) -> dict:
        for d in dirs:
            policy.save(d / name, metadata={"iteration": it - 1})
        recs = online_round(clients, template, ids, name, jobs, t.rng, job_timeout, stats)
        recs = [r for r in recs if _keep(r, policy, stats)]
        if not recs:
            raise RuntimeError(
                f"iteration {it}: the servers returned no tournament records "
                "(did the miner find no region? is the Save Tournament Log node connected?)"
            )
        if it == 1 and not s.init:
            # a fresh policy draws uniformly whatever its normaliser, so fitting it to the states of the
            # first round leaves that round's behaviour log-probs exact
            policy.fit_normaliser(policy.features([r.state for r in recs]))
        policy.train()
        u = [max(r.utilities[1:]) for r in recs]
        batches = list(records_to_batches(policy, recs).values())
        parts: TSPOParts | None = None
        for _ in range(steps):
            for b in batches:
                parts = tspo_step(policy, t.opt, b, cfg)
        assert parts is not None  # steps ≥ 1 and recs is not empty, so a step was taken
        return {
            "iteration": it,
            "tournaments": len(recs),
            "best_u": sum(u) / len(u),
            "entropy": parts.entropy,
            "cost": parts.cost,
            "accepted": sum(r.accepted for r in recs) / len(recs),
        }

    result = _train("online", s, policy, iterate, say)
    if "policy" in result:
        for d in dirs:  # the rolling policy file served its purpose
            for suffix in (".safetensors", ".json"):
                (d / name).with_suffix(suffix).unlink(missing_ok=True)
        _wrote(result, say)
    return result


# ----------------------------------------------------------------------------- the command


def settings_from_args(args: argparse.Namespace) -> TSPOSettings:
    """The ``TSPOSettings`` of parsed command-line arguments (--knobs is JSON there)."""
    values = {f.name: getattr(args, f.name) for f in fields(TSPOSettings)}
    values["knobs"] = None
    if args.knobs:
        try:
            values["knobs"] = json.loads(args.knobs)
        except ValueError as exc:
            raise ValueError(f"--knobs is not valid JSON ({exc}): {args.knobs!r}") from None
        if not isinstance(values["knobs"], dict) or not all(isinstance(v, list) for v in values["knobs"].values()):
            raise ValueError(f'--knobs must be a JSON object {{"knob": [choices]}}, got {args.knobs!r}')
    return TSPOSettings(**values)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The command's parsed arguments, handed to the mode's function."""
    s = settings_from_args(args)
    if args.mode == "offline":
        return train_offline(args.logs, s, batch=args.batch)
    if args.mode == "bandit":
        return train_bandit(s, tournaments=args.tournaments, n=args.n)
    return train_online(
        args.server,
        args.workflow,
        s,
        policy_dirs=args.policy_dir,
        jobs=args.jobs,
        job_timeout=args.job_timeout,
        steps=args.steps,
    )


def main(argv: list[str] | None = None) -> int:
    return run_command("tspo", build_parser(), run, argv)
