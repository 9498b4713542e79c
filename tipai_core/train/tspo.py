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
oracle and the uniform policy. Every mode writes progress lines, a learning-curve PNG next to --out and
checkpoints (--checkpoint-every iterations, atomic safetensors + JSON, as Stage A); --resume continues from
the newest one, --stop-after-iteration splits a run.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import torch

from ..guard.calibration import learning_curve_png
from ..policy.policy_net import DEFAULT_CHOICES, PolicyNet
from ..records.tournament_log import LogStats, iter_records, require_records
from ..policy.tspo import TSPOConfig, records_to_batches, tspo_step
from .checkpoint import complete_checkpoints, load_checkpoint, remove_checkpoints, save_checkpoint

CHECKPOINT_FORMAT = "tipai-tspo-checkpoint"
FINGERPRINT = ("mode", "credit", "tau", "beta", "beta_final", "lambda_c", "lambda_div", "clip", "self_normalise", "lr", "hidden", "n_classes",
               "seed", "iterations")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tipai_core.train tspo",
                                description="Stage B3: train the candidate policy π_θ(a|s) with TSPO.")
    p.add_argument("mode", choices=("offline", "online", "bandit"),
                   help="offline: from logs; online: drive ComfyUI servers; bandit: the synthetic test bed")
    g = p.add_argument_group("data")
    g.add_argument("--logs", nargs="+", help="offline: .records.jsonl files or folders of them")
    g.add_argument("--server", action="append", default=[], help="online: a ComfyUI server URL on 127.0.0.1 (repeat)")
    g.add_argument("--policy-dir", action="append", default=[],
                   help="online: the models/tipai folder of each server (one for all, or one per --server)")
    g.add_argument("--workflow", help="online: API-format workflow template (TSPO Sampler + TiPAI KSampler + Save Log)")
    g.add_argument("--jobs", type=int, default=2, help="online: runs queued per server per iteration")
    g.add_argument("--job-timeout", type=float, default=300.0, help="online: seconds to wait for one run")
    g = p.add_argument_group("policy")
    g.add_argument("--out", required=True, help="policy file to write (<stem>.safetensors + <stem>.json)")
    g.add_argument("--init", help="start from this policy file (its knobs must match --knobs when given)")
    g.add_argument("--knobs", help="JSON {knob: [choices]} (default: the choices seen in the logs, or the defaults)")
    g.add_argument("--hidden", type=int, default=32)
    g.add_argument("--n-classes", type=int, default=5, help="risk-vector length the policy reads")
    g = p.add_argument_group("TSPO")
    g.add_argument("--credit", choices=("loo", "soft"), default="loo")
    g.add_argument("--tau", type=float, default=0.1, help="soft-credit temperature τ")
    g.add_argument("--beta", type=float, default=0.02, help="entropy β")
    g.add_argument("--beta-final", type=float,
                   help="anneal β linearly to this by the last iteration (default: constant β)")
    g.add_argument("--lambda-c", type=float, default=0.05, help="compute cost λ_c per denoiser call of a candidate")
    g.add_argument("--lambda-div", type=float, default=0.0, help="diversity λ_div")
    g.add_argument("--clip", type=float, default=5.0, help="importance-weight clip ρ̄")
    g.add_argument("--self-normalise", action="store_true",
                   help="offline: divide the clipped weights by their batch mean (weighted importance sampling)")
    g.add_argument("--lr", type=float, default=0.01)
    g.add_argument("--iterations", type=int, default=200, help="offline: epochs; online/bandit: draw-and-update rounds")
    g.add_argument("--steps", type=int, default=1, help="gradient steps per online iteration")
    g.add_argument("--batch", type=int, default=256, help="offline: tournaments per gradient step")
    g.add_argument("--tournaments", type=int, default=32, help="bandit: tournaments per iteration")
    g.add_argument("--n", type=int, default=4, help="bandit: N candidates per tournament")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("checkpoints")
    g.add_argument("--checkpoint-dir", help="default: <out stem>.ckpt next to --out (emptied when the run completes)")
    g.add_argument("--checkpoint-every", type=int, default=10)
    g.add_argument("--resume", action="store_true")
    g.add_argument("--stop-after-iteration", type=int)
    return p


# ----------------------------------------------------------------------------- the policy


def make_policy(args, seen: dict[str, set] | None = None) -> PolicyNet:
    choices = json.loads(args.knobs) if args.knobs else None
    if args.init:
        return PolicyNet.load(args.init, expect_knobs=choices)
    if choices is None and seen:
        choices = {k: sorted(v, key=lambda x: (str(type(x)), x)) for k, v in seen.items()}
    return PolicyNet(choices or DEFAULT_CHOICES, n_classes=args.n_classes, hidden=args.hidden)


def _cfg(args, it: int = 1) -> TSPOConfig:
    """The loss settings of iteration ``it`` (1-based): β_it = β + (β_final - β)·(it - 1)/(iterations - 1)."""
    beta = args.beta
    if args.beta_final is not None and args.iterations > 1:
        beta = args.beta + (args.beta_final - args.beta) * (it - 1) / (args.iterations - 1)
    return TSPOConfig(credit=args.credit, tau=args.tau, beta=beta, lambda_c=args.lambda_c,
                      lambda_div=args.lambda_div, clip=args.clip, self_normalise=args.self_normalise)


def _check_covered(policy: PolicyNet, batch) -> None:
    """Logged actions the policy cannot draw teach it nothing: fail clearly when that is all of them."""
    if not bool(batch.valid.any()):
        raise ValueError(f"no logged action uses only knob values the policy can draw (its knobs: "
                         f"{ {k: list(v) for k, v in policy.choices.items()} }); the policy file's knobs do not "
                         "match the logs")


# ----------------------------------------------------------------------------- online: ComfyUI over HTTP


class ComfyClient:
    """The few ComfyUI HTTP calls on-policy training needs; loopback servers only."""

    def __init__(self, url: str):
        host = urllib.parse.urlparse(url).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"--server {url}: on-policy TSPO only talks to servers on 127.0.0.1")
        self.url = url.rstrip("/")

    def _get(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return r.read()

    def queue(self, graph: dict) -> str:
        req = urllib.request.Request(self.url + "/prompt", data=json.dumps({"prompt": graph}).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read())["prompt_id"]
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{self.url} refused the workflow: {exc.read().decode(errors='replace')[:2000]}") from None

    def wait(self, prompt_id: str, timeout: float) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            hist = json.loads(self._get(f"/history/{prompt_id}"))
            if prompt_id in hist:
                status = hist[prompt_id].get("status", {})
                if status.get("status_str") == "error":
                    raise RuntimeError(f"{self.url}: run {prompt_id} failed: {json.dumps(status.get('messages'))[:2000]}")
                if status.get("completed"):
                    return hist[prompt_id]
            time.sleep(0.2)
        raise TimeoutError(f"{self.url}: run {prompt_id} did not finish within {timeout:.0f} s")

    def log_lines(self, entry: dict) -> list[bytes]:
        lines = []
        for out in entry.get("outputs", {}).values():
            for f in out.get("tipai_logs", []):
                if f["filename"].endswith(".records.jsonl"):
                    q = urllib.parse.urlencode({"filename": f["filename"], "subfolder": f.get("subfolder", ""),
                                                "type": f.get("type", "output")})
                    lines += self._get(f"/view?{q}").splitlines()
        return lines


def prepare_template(graph: dict) -> dict[str, str]:
    """The ids of the nodes on-policy training sets: the TSPO Sampler, the samplers and the log node."""
    find = lambda cls: [k for k, v in graph.items() if v.get("class_type") == cls]  # noqa: E731
    ids = {"policy": find("TiPAITSPOSampler"), "sampler": find("TiPAIKSampler"), "log": find("TiPAISaveTournamentLog")}
    missing = [k for k, v in ids.items() if not v]
    if missing:
        raise ValueError(f"the workflow template needs a TiPAI TSPO Sampler, a TiPAI KSampler and a TiPAI Save "
                         f"Tournament Log node; it has none of: {missing}")
    return {k: v[0] for k, v in ids.items()}


def online_round(clients: list[ComfyClient], template: dict, ids: dict, policy_name: str, jobs: int,
                 rng: random.Random, timeout: float, stats: LogStats):
    """Queue ``jobs`` runs on every server (fresh seeds, the current policy file), then collect their records."""
    import tempfile

    queued = []
    for c in clients:
        for _ in range(jobs):
            g = copy.deepcopy(template)
            g[ids["policy"]]["inputs"]["policy_file"] = policy_name
            g[ids["policy"]]["inputs"]["seed"] = rng.randrange(2**31)
            g[ids["sampler"]]["inputs"]["seed"] = rng.randrange(2**31)  # a new image, never ComfyUI's cached one
            g[ids["log"]]["inputs"]["filename_prefix"] = "tspo_online"
            queued.append((c, c.queue(g)))
    lines = []
    for c, pid in queued:
        lines += c.log_lines(c.wait(pid, timeout))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "round.records.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        return list(iter_records([path], stats))


# ----------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    out = Path(args.out).with_suffix(".safetensors")
    ckpt_dir = Path(args.checkpoint_dir) if args.checkpoint_dir else out.with_name(out.stem + ".ckpt")
    cfg = _cfg(args)
    say = print
    data = None
    bandit = None
    stats = LogStats()
    if args.mode == "offline":
        if not args.logs:
            raise ValueError("offline mode needs --logs")
        # two streaming passes: the knob values the logs use (the policy's choices), then the rows
        seen: dict[str, set] = {}
        for rec in iter_records(args.logs, stats):
            for a in rec.actions:
                for k in DEFAULT_CHOICES:
                    if k in a:
                        seen.setdefault(k, set()).add(a[k])
        require_records(stats, "tspo offline")
        say(f"[tspo] {stats.summary()}")
        for e in stats.errors[:5]:
            say(f"[tspo] skipped {e}")
        policy = make_policy(args, seen)
        data = list(records_to_batches(policy, iter_records(args.logs)).values())
        for b in data:
            _check_covered(policy, b)
        if not args.init and not args.resume:
            policy.fit_normaliser(torch.cat([b.feats for b in data]))
    elif args.mode == "bandit":
        from ..testing.bandit import CONTEXTS, KnobBandit

        bandit = KnobBandit(seed=args.seed)
        policy = make_policy(args)
        if not args.init:
            policy.fit_normaliser(torch.stack([policy.features_of(bandit.state(t), policy.n_classes) for t in CONTEXTS]))
    else:
        if not args.server or not args.workflow:
            raise ValueError("online mode needs --server (one or more) and --workflow")
        clients = [ComfyClient(u) for u in args.server]
        dirs = args.policy_dir
        if len(dirs) not in (1, len(clients)):
            raise ValueError("give one --policy-dir for all servers or one per --server")
        dirs = [Path(d) for d in (dirs * len(clients) if len(dirs) == 1 else dirs)]
        template = json.loads(Path(args.workflow).read_text())
        ids = prepare_template(template)
        policy = make_policy(args)

    opt = torch.optim.Adam(policy.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    fingerprint = {k: getattr(args, k) for k in FINGERPRINT}
    first, curve = 1, []
    if args.resume:
        stems = complete_checkpoints(ckpt_dir)
        if stems:
            done, _, extra = load_checkpoint(stems[-1], policy, opt, None, gen, fingerprint, fmt=CHECKPOINT_FORMAT,
                                             key="policy", what="TSPO")
            first, curve = done + 1, list(extra.get("curve", []))
            say(f"[tspo] resumed from {stems[-1]} (iteration {done})")
    rng = random.Random(args.seed * 7919 + first)
    t0 = time.time()
    for it in range(first, args.iterations + 1):
        policy.train()
        cfg = _cfg(args, it)
        if args.mode == "offline":
            totals = {"pg": 0.0, "entropy": 0.0, "cost": 0.0, "weight": 0.0}
            steps = 0
            for b in data:
                perm = torch.randperm(len(b), generator=gen)
                for s in range(0, len(b), args.batch):
                    parts = tspo_step(policy, opt, b.take(perm[s:s + args.batch]), cfg)
                    steps += 1
                    for k, v in (("pg", parts.pg), ("entropy", parts.entropy), ("cost", parts.cost),
                                 ("weight", parts.mean_weight)):
                        totals[k] += v
            point = {"iteration": it, **{k: v / max(1, steps) for k, v in totals.items()}}
        elif args.mode == "bandit":
            batch = bandit.play_batch(policy.eval(), args.tournaments, args.n, gen)
            policy.train()
            parts = tspo_step(policy, opt, batch, cfg)
            point = {"iteration": it, **bandit.evaluate(policy.eval()), "entropy": parts.entropy}
        else:
            name = f"_tspo_online_{out.stem}.safetensors"
            for d in dirs:
                policy.save(d / name, metadata={"iteration": it - 1})
            recs = online_round(clients, template, ids, name, args.jobs, rng, args.job_timeout, stats)
            if not recs:
                raise RuntimeError(f"iteration {it}: the servers returned no tournament records "
                                   "(did the miner find no region? is the Save Tournament Log node connected?)")
            if it == 1 and not args.init:
                # a fresh policy draws uniformly whatever its normaliser, so fitting it to the states of the
                # first round leaves that round's behaviour log-probs exact
                policy.fit_normaliser(policy.features([r.state for r in recs]))
            policy.train()
            u = [max(r.utilities[1:]) for r in recs]
            batches = list(records_to_batches(policy, recs).values())
            for _ in range(args.steps):
                for b in batches:
                    parts = tspo_step(policy, opt, b, cfg)
            point = {"iteration": it, "tournaments": len(recs), "best_u": sum(u) / len(u), "entropy": parts.entropy,
                     "cost": parts.cost, "accepted": sum(r.accepted for r in recs) / len(recs)}
        policy.eval()
        curve.append(point)
        if it == first or it == args.iterations or it % max(1, args.iterations // 10) == 0 or args.mode == "online":
            say(f"[tspo] {args.mode} iteration {it}/{args.iterations}  " +
                "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items()
                          if k != "iteration"))
        stop = args.stop_after_iteration is not None and it >= args.stop_after_iteration and it < args.iterations
        due = args.checkpoint_every > 0 and it % args.checkpoint_every == 0 and it < args.iterations
        if due or stop:
            save_checkpoint(ckpt_dir, it, it, policy, opt, None, gen, fingerprint, fmt=CHECKPOINT_FORMAT,
                            key="policy", extra={"curve": curve})
        if stop:
            say(f"[tspo] stopped after iteration {it}; continue with --resume (checkpoints in {ckpt_dir})")
            return {"stopped": it, "curve": curve}

    meta = {"mode": args.mode, "iterations": args.iterations, "curve_last": curve[-1] if curve else None,
            "config": vars(cfg), "seconds": time.time() - t0}
    result: dict[str, Any] = {"curve": curve}
    if bandit is not None:
        from ..testing.bandit import CONTEXTS

        final, oracle, uniform = bandit.evaluate(policy), bandit.oracle(), bandit.evaluate(bandit.uniform())
        result.update(final=final, oracle=oracle, uniform=uniform,
                      preferred={str(t): policy.preferred(bandit.state(t)) for t in CONTEXTS})
        meta.update(result["preferred"] and {"bandit": {k: result[k] for k in ("final", "oracle", "uniform")}})
        say(f"[tspo] bandit: win rate {final['win_rate']:.3f} = {final['win_rate'] / oracle['win_rate']:.1%} of the "
            f"oracle's {oracle['win_rate']:.3f}; compute {final['cost']:.2f} calls/candidate = "
            f"{1 - final['cost'] / uniform['cost']:.1%} less than uniform's {uniform['cost']:.2f}")
        for t, pref in result["preferred"].items():
            say(f"[tspo] bandit: preferred at t={t}: {pref}")
    policy.save(out, metadata=meta)
    series = {k: [p[k] for p in curve] for k in ("win_rate", "cost", "pg", "best_u", "entropy") if curve and k in curve[0]}
    png = learning_curve_png(series, out.with_name(out.stem + ".curve.png"))
    (out.with_name(out.stem + ".curve.json")).write_text(json.dumps(curve, indent=1))
    remove_checkpoints(ckpt_dir)
    if args.mode == "online":
        for d in dirs:  # the rolling policy file served its purpose
            for suffix in (".safetensors", ".json"):
                (d / f"_tspo_online_{out.stem}{suffix}").unlink(missing_ok=True)
    say(f"[tspo] wrote {out} (+ {out.with_suffix('.json').name}) and the learning curve {png}")
    result.update(policy=str(out), png=str(png))
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"[tspo] error: {exc}")
        raise SystemExit(2) from None
    return 0
