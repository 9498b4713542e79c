"""ShapesWorld evaluation: plain sampling vs best-of-N vs the TiPAI loop, scored by the checker.

For each held-out (prompt, seed) (``worlds.shapes.evaluate.held_out``):

1. ``plain``: ``sampler.sample`` from the seed's noise, n_steps steps;
2. ``best-of-N``: N whole images (seeds ``seed + j·100003``), the auditor's S picks one; N is the
   smallest whole number with ``N·n_steps ≥`` TiPAI's mean denoiser calls per image (≥ 2), so
   best-of-N gets equal or greater compute;
3. ``tipai``: ``loop.sample_with_audits`` from the same noise, with an ``AuditSuite`` of the pixel
   decoder (factor 1), a ``SaliencyMiner``, the auditor, ``DiffusionEditor``, a
   ``FixedKnobPolicy`` and a ``TournamentGuard``;
4. ``tipai[learned+cal]`` and ``tipai[learned+tspo+cal]``: the same loop with the guard's δ and τ_F(t)
   from Stage C, and (the second) the candidate policy learned by offline TSPO. Both are fitted on
   tournaments of a separate calibration set (``evaluate.calibration_set``): the loop with the fixed
   knob distribution and δ = 0 runs on it, the checker labels every candidate (``true_win``: more
   clauses satisfied than the control; the checker plays the "stronger judge" Stage C asks for), then
   ``python -m tipai_core.train calibrate`` and ``python -m tipai_core.train tspo offline`` run on that
   log exactly as a user runs them on ComfyUI logs. Cached under ``<cache>/shapes/stagec-<key>/``.

Reported per method: checker accuracy per clause type and for whole prompts, denoiser calls per
image (one call of D on a batch; CFG inside) and evaluations per image (batch rows: N candidates
in one call count N; best-of-N's N is chosen from these), wall time per image, the guard's accept rate
(accepted tournaments / tournaments), and the non-regression fraction: over all prompts, the
share of images where the guard accepted an edit and the checker's count of satisfied clauses
fell below the plain image's (the plain run is the loop's control trajectory).

Every draw is seeded, so a second run prints the same table.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..policy.actions import FixedKnobPolicy
from ..loop.audit_schedule import AuditSchedule
from ..records.costs import CountingDenoiser, Costs
from ..diffusion.conditioning import Conditioning
from ..editing.diffusion_editor import DiffusionEditor
from ..guard.tournament_guard import TournamentGuard
from ..loop.audit_step import AuditSuite
from ..loop.sampling import sample_with_audits
from ..mining.regions import SaliencyMiner
from ..diffusion.sampler import sample
from ..worlds.shapes.checker import Checker
from ..worlds.shapes.evaluate import clause_accuracy, held_out, save_grid
from ..worlds.shapes.generate import SAMPLE_SIGMA_MAX, sigmas_for, start_latent
from ..worlds.shapes.model import PixelDecoder, ShapesDenoiser, ShapesUNet
from ..worlds.shapes.oracle import CheckerAuditor, checker_saliency


@dataclass
class EvalSettings:
    n_prompts: int = 64
    n_steps: int = 20
    cfg: float = 3.0
    sampler: str = "ddim"
    sigma_max: float = SAMPLE_SIGMA_MAX
    n_candidates: int = 4
    k_regions: int = 2
    audit_every: int = 3
    audit_first: int = 3
    audit_skip_last: int = 3
    delta: float = 0.0
    knobs: dict = field(default_factory=lambda: {
        "editor": (["renoise"], [1.0]),
        "depth": ([2, 3, 4], [1 / 3, 1 / 3, 1 / 3]),
        "cfg_inside": ([3.0, 5.0, 7.0], [1 / 3, 1 / 3, 1 / 3]),
        "jitter": ([0.5, 1.0], [0.5, 0.5]),
        "dilation": ([0, 1], [0.5, 0.5]),
    })


@dataclass
class MethodResult:
    name: str
    images: list[torch.Tensor]
    calls: list[int]
    seconds: float
    evals: list[int] = field(default_factory=list)  # batch rows through D: the compute that matters here
    tournaments: int = 0
    accepted: int = 0
    accepted_boxes: list[list[tuple[int, int, int, int]]] = field(default_factory=list)


def _to_image(x: torch.Tensor) -> torch.Tensor:
    return ((x[0] + 1) / 2).clamp(0, 1)


def run_plain(model: ShapesUNet, items, s: EvalSettings, seed_offset: int = 0) -> MethodResult:
    den, sig = ShapesDenoiser(model), sigmas_for(model, s.n_steps, s.sigma_max)
    images, calls, evals, t = [], [], [], time.time()
    for prompt, seed in items:
        c = Costs()
        x = sample(CountingDenoiser(den, c), sig, start_latent(model, sig, seed + seed_offset),
                   Conditioning(payload=prompt, cfg=s.cfg), "eps", s.sampler)
        images.append(_to_image(x))
        calls.append(c.denoiser_calls)
        evals.append(c.denoiser_evals)
    return MethodResult("plain", images, calls, time.time() - t, evals)


def run_best_of_n(model, items, s: EvalSettings, n: int, auditor, first: MethodResult | None = None,
                  memo: dict | None = None) -> MethodResult:
    """N whole images per prompt; the auditor's S picks (ties: the lowest j). j = 0 is the plain image.
    ``memo`` (j -> run) shares the whole-image runs between rows; their time is counted in each row."""
    memo = {} if memo is None else memo
    for j in range(1, n):
        if j not in memo:
            memo[j] = run_plain(model, items, s, seed_offset=j * 100_003)
    runs = [first] + [memo[j] for j in range(1, n)]
    t = time.time()
    images, calls, evals = [], [], []
    for i, (prompt, _) in enumerate(items):
        cands = torch.stack([r.images[i] for r in runs])
        S = auditor.score(cands, prompt).S
        images.append(cands[int(torch.argmax(S))])
        calls.append(sum(r.calls[i] for r in runs))
        evals.append(sum(r.evals[i] for r in runs))
    # wall time as if run alone: its N whole-image runs plus the auditor's picks
    seconds = time.time() - t + sum(r.seconds for r in runs)
    return MethodResult(f"best-of-{n}", images, calls, seconds, evals)


class LabellingAuditor:
    """Wraps an auditor: every tournament it scores is also judged by the checker, so each record can
    carry ``true_win[i] = sat(C_i) > sat(C_0)`` (sat = satisfied clauses), what Stage C calibrates on.
    A call with one image (a policy that reads the control's scores first) is no tournament: not labelled."""

    def __init__(self, inner, checker: Checker):
        self.inner, self.checker = inner, checker
        self.labels: list[list[bool | None]] = []
        self.classes = getattr(inner, "classes", None)

    def score(self, images, prompt, mask=None):
        if len(images) > 1:
            sat = [sum(ok for _, ok in self.checker(img, prompt)) for img in images]
            self.labels.append([None] + [v > sat[0] for v in sat[1:]])
        return self.inner.score(images, prompt, mask)


@dataclass
class Pieces:
    """What one TiPAI row runs with. ``policy``/``guard`` None: the fixed knobs and the δ of the settings.
    ``judge``: the label of the auditor, which also names the best-of-N row matched to it."""

    auditor: object
    miner: object
    judge: str
    policy: object = None
    guard: object = None


def make_suite(s: EvalSettings, auditor, miner, policy=None, guard=None) -> AuditSuite:
    return AuditSuite(
        decoder=PixelDecoder(),
        miner=miner,
        auditor=auditor,
        editor=DiffusionEditor(),
        policy=policy if policy is not None else FixedKnobPolicy(s.knobs),
        guard=guard if guard is not None else TournamentGuard(delta=s.delta),
        schedule=AuditSchedule(every=s.audit_every, first=s.audit_first, skip_last=s.audit_skip_last, scales=(1.0,)),
        n_candidates=s.n_candidates,
        seed=0,
    )


def oracle_pieces(checker: Checker):
    """(auditor, miner) read from the checker: an upper bound, see ``worlds/shapes/oracle.py``."""
    return CheckerAuditor(checker), SaliencyMiner(checker_saliency(checker), k=2, threshold=0.5)


# The learned miner's settings here. Grad-CAM alone: the miner's default fusion also adds the risk map
# (one "safe" class in this world: no signal), drift and feature change (they mark wherever the image is
# still changing). On 32 calibration prompts (``--diagnose``) the share of tournaments holding a true
# winner was 3.0% with the default fusion, 8.7% with Grad-CAM alone, 6.1% with the prompt-mismatch map
# alone, and 1.3% with regions capped at 12% of the image.
LEARNED_MINER = {"weights": {"gradcam": 1.0, "drift": 0.0, "feature_change": 0.0, "risk": 0.0},
                 "k": 2, "threshold": 0.5, "max_area_frac": 0.3}


def learned_pieces(folder):
    """(auditor, miner): the trained tiny open_clip + Stage A heads, and the Grad-CAM RegionMiner."""
    from ..mining.miner import RegionMiner
    from ..worlds.shapes.auditor import load_auditor

    auditor = load_auditor(folder)
    miner = RegionMiner(auditor, **LEARNED_MINER, latent_factor=1, feather_radius=1, region_prompts=False)
    return auditor, miner


def _weights_digest(path: Path) -> str:
    """sha256 of a safetensors file's tensors (names and bytes in name order): its header's metadata
    order varies between writes of the same weights, so the file's bytes do not key them."""
    import hashlib

    from safetensors.torch import load_file

    h = hashlib.sha256()
    for name, t in sorted(load_file(str(path)).items()):
        h.update(name.encode())
        h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def stage_c_key(model_meta: dict, auditor_folder: Path, s: EvalSettings, n_calib: int, target: float) -> str:
    """What the fitted guard and policy depend on: the base model, the auditor's weights (backbone and
    heads), the loop's settings and the checker's version."""
    import hashlib

    from ..worlds.shapes.checker import CHECKER_VERSION

    blob = {"model": [model_meta["recipe"], model_meta["step"]], "n": n_calib, "target": target,
            "checker": CHECKER_VERSION, "miner": LEARNED_MINER,
            "auditor": [_weights_digest(Path(auditor_folder) / f) for f in ("clip.safetensors", "heads.safetensors")],
            "settings": {k: v for k, v in s.__dict__.items() if k != "n_prompts"}}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]


def fit_stage_c(model, s: EvalSettings, pieces: "Pieces", folder: Path, n_calib: int, target: float = 0.9,
                log=print) -> tuple[Path, Path]:
    """Stage C and offline TSPO on the calibration set; returns (calibration file, policy file).

    1. the loop (fixed knobs, δ = 0) on ``calibration_set(n_calib)``, every candidate labelled by the
       checker, written to ``tournaments.records.jsonl`` (a .partial name until complete);
    2. ``python -m tipai_core.train calibrate`` on it -> ``calibration.json`` (+ reliability PNG);
    3. ``python -m tipai_core.train tspo offline`` on it -> ``policy.safetensors`` + ``.json``.
    Each output is reused when present.
    """
    from ..train.__main__ import main as train_main
    from ..worlds.shapes.evaluate import calibration_set

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    logs, cal, pol = folder / "tournaments.records.jsonl", folder / "calibration.json", folder / "policy.safetensors"
    if not logs.is_file():
        part = folder / "tournaments.partial"
        part.unlink(missing_ok=True)
        suite = make_suite(s, LabellingAuditor(pieces.auditor, Checker()), pieces.miner)
        r = run_tipai(model, calibration_set(n_calib), s, suite, part)
        part.rename(logs)
        log(f"calibration set: {n_calib} prompts, {r.tournaments} tournaments logged ({r.seconds:.0f}s)")
    if not cal.is_file():
        rc = train_main(["calibrate", "--logs", str(logs), "--out", str(cal), "--target", str(target),
                         "--auditor", pieces.judge])
        if rc:
            raise RuntimeError(f"Stage C (python -m tipai_core.train calibrate) failed with exit status {rc}")
    if not pol.with_suffix(".json").is_file():
        knobs = {k: list(v[0]) for k, v in s.knobs.items()}
        rc = train_main(["tspo", "offline", "--logs", str(logs), "--out", str(pol), "--knobs", json.dumps(knobs),
                         "--n-classes", str(len(getattr(pieces.auditor, "classes", ("safe",)))),
                         "--beta", "0.2", "--seed", "0"])
        if rc:
            raise RuntimeError(f"TSPO (python -m tipai_core.train tspo offline) failed with exit status {rc}")
    return cal, pol


def calibrated_pieces(base: "Pieces", cal_path: Path, policy_path: Path | None) -> "Pieces":
    """The same auditor and miner with the Stage C guard and, when given, the TSPO policy."""
    from ..guard.calibration import Calibration, calibrated_guard
    from ..policy.policy_net import PolicyNet

    cal = Calibration.load(cal_path)
    policy = PolicyNet.load(policy_path) if policy_path is not None else None
    return Pieces(base.auditor, base.miner, base.judge, policy=policy, guard=calibrated_guard(cal))


def run_tipai(model, items, s: EvalSettings, suite: AuditSuite, log_path: Path | None = None) -> MethodResult:
    """The loop on every item; with ``log_path`` its tournaments (with checker ``true_win``) go to JSONL."""
    labeller = suite.auditor if isinstance(suite.auditor, LabellingAuditor) else None
    den, sig = ShapesDenoiser(model), sigmas_for(model, s.n_steps, s.sigma_max)
    res = MethodResult("tipai", [], [], 0.0)
    t = time.time()
    for prompt, seed in items:
        if hasattr(suite.miner, "reset"):
            suite.miner.reset()  # drift and feature change start afresh in every run
        c = Costs()
        out = sample_with_audits(CountingDenoiser(den, c), sig, start_latent(model, sig, seed),
                                 Conditioning(payload=prompt, cfg=s.cfg), "eps", prompt, suite, s.sampler)
        res.images.append(_to_image(out.latent))
        # c counts every call through the wrapper: the base steps, the editor's and the restarts
        res.calls.append(c.denoiser_calls)
        res.evals.append(c.denoiser_evals)
        res.tournaments += len(out.records)
        if log_path is not None and labeller is not None:
            from ..records.tournament_log import append_records

            # one auditor call per tournament (FixedKnobPolicy reads no control scores), in order
            labels, labeller.labels = labeller.labels[-len(out.records):] if out.records else [], []
            for rec, lab in zip(out.records, labels):
                rec.true_win = lab
            append_records(log_path, out.records)
        acc = [r for r in out.records if r.accepted]
        res.accepted += len(acc)
        res.accepted_boxes.append([tuple(r.region["bbox"]) for r in acc])
    res.seconds = time.time() - t
    return res


def table(results: list[MethodResult], items, checker: Checker, plain: MethodResult) -> tuple[str, list[dict]]:
    prompts = [p for p, _ in items]
    _, plain_v = clause_accuracy(plain.images, prompts, checker)
    rows = []
    for r in results:
        acc, v = clause_accuracy(r.images, prompts, checker)
        worse = sum(
            1 for i in range(len(items))
            if r.accepted_boxes and r.accepted_boxes[i] and sum(v[i]) < sum(plain_v[i])
        )
        rows.append({
            "method": r.name, **{k: acc.get(k) for k in ("binding", "count", "relation", "all")},
            "calls_per_image": sum(r.calls) / len(r.calls),
            "evals_per_image": sum(r.evals) / len(r.evals),
            "seconds_per_image": r.seconds / len(items),
            "accept_rate": (r.accepted / r.tournaments) if r.tournaments else None,
            "tournaments": r.tournaments,
            "regressions": worse / len(items) if r.accepted_boxes else None,
        })

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    head = f"{'method':<24} {'binding':>8} {'count':>6} {'relation':>8} {'all':>6} {'calls/img':>9} {'evals/img':>9} {'s/img':>6} " \
           f"{'accept':>7} {'tourn.':>6} {'regress':>7}"
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append(
            f"{row['method']:<24} {f(row['binding'], '.3f'):>8} {f(row['count'], '.3f'):>6} "
            f"{f(row['relation'], '.3f'):>8} {f(row['all'], '.3f'):>6} {row['calls_per_image']:>9.1f} "
            f"{row['evals_per_image']:>9.1f} "
            f"{row['seconds_per_image']:>6.2f} {f(row['accept_rate'], '.3f'):>7} {row['tournaments']:>6} "
            f"{f(row['regressions'], '.3f'):>7}"
        )
    return "\n".join(lines), rows


def outlines_for(r: MethodResult, size: int) -> list[torch.Tensor | None]:
    out = []
    for boxes in r.accepted_boxes:
        if not boxes:
            out.append(None)
            continue
        m = torch.zeros(size, size)
        for y0, x0, y1, x1 in boxes:
            m[y0:y1, x0:x1] = 1
        out.append(m)
    return out


def diagnose(model, s: EvalSettings, pairs: dict, n: int, folder: Path, log=print) -> list[dict]:
    """Which piece limits the loop: for each label -> (auditor, miner), the loop (fixed knobs, δ = 0) on
    n prompts of the calibration set with checker labels, and per candidate: the true-win rate, the share
    of tournaments that hold a true winner (what the miner and editor make possible) and the ROC-AUC of
    the auditor's margin S_i - S_0 for a true win (how well it ranks them). Logs go to ``folder``."""
    from ..records.tournament_log import iter_records
    from ..worlds.shapes.evaluate import calibration_set
    from ..auditor.metrics import roc_auc

    out = []
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for label, (auditor, miner) in pairs.items():
        path = folder / f"diagnose-{label}.records.jsonl"
        path.unlink(missing_ok=True)
        r = run_tipai(model, calibration_set(n), s, make_suite(s, LabellingAuditor(auditor, Checker()), miner), path)
        m, y, has = [], [], []
        for rec in iter_records([path]):
            has.append(any(rec.true_win[1:]))
            for i in range(1, len(rec.actions) + 1):
                m.append(rec.scores["S"][i] - rec.scores["S"][0])
                y.append(bool(rec.true_win[i]))
        auc = roc_auc(torch.tensor(m), torch.tensor(y)) if 0 < sum(y) < len(y) else None
        row = {"pieces": label, "tournaments": r.tournaments, "candidate_win": sum(y) / max(1, len(y)),
               "tournaments_with_winner": sum(has) / max(1, len(has)), "auc_margin": auc,
               "accept_rate_delta0": r.accepted / max(1, r.tournaments)}
        log(f"diagnose {label:<34} tournaments {row['tournaments']:4d}  candidate true-win {row['candidate_win']:.3f}  "
            f"tournaments with a winner {row['tournaments_with_winner']:.3f}  AUC(margin) "
            f"{'-' if auc is None else format(auc, '.3f')}")
        out.append(row)
    return out


def evaluate(model: ShapesUNet, s: EvalSettings, png: str | Path | None = None, log=print,
             pieces: dict | None = None, log_dir: str | Path | None = None) -> tuple[str, list[dict]]:
    """Plain, then for each row label in ``pieces`` (label -> ``Pieces`` or an (auditor, miner) pair;
    default: the checker oracle) TiPAI and the best-of-N whole images matched to its evaluations.
    Returns the printed table and its rows."""
    items = held_out(s.n_prompts)
    checker = Checker()
    pieces = pieces or {"oracle": oracle_pieces(checker)}
    plain = run_plain(model, items, s)
    log(f"plain done ({plain.seconds:.0f}s)")
    results, cols, outl = [plain], [plain.images], [[None] * len(items)]
    memo: dict[int, MethodResult] = {}
    for label, piece in pieces.items():
        if not isinstance(piece, Pieces):
            piece = Pieces(*piece, judge=label)
        auditor = LabellingAuditor(piece.auditor, checker) if log_dir else piece.auditor
        suite = make_suite(s, auditor, piece.miner, piece.policy, piece.guard)
        log_path = Path(log_dir) / f"tournaments-{label}.records.jsonl" if log_dir else None
        if log_path is not None and log_path.exists():
            log_path.unlink()  # one evaluation, one log: a rerun must not append twice
        tipai = run_tipai(model, items, s, suite, log_path)
        tipai.name = f"tipai[{label}]"
        log(f"{tipai.name} done ({tipai.seconds:.0f}s)")
        # N whole images cost N·n_steps evaluations of D; match TiPAI's evaluations (candidates count)
        n = max(2, math.ceil(sum(tipai.evals) / len(tipai.evals) / s.n_steps - 1e-9))
        name = f"best-of-{n}[{piece.judge}]"
        if all(r.name != name for r in results):
            best = run_best_of_n(model, items, s, n, piece.auditor, first=plain, memo=memo)
            best.name = name
            log(f"{best.name} done ({best.seconds:.0f}s)")
            results.append(best)
            cols.append(best.images)
            outl.append([None] * len(items))
        results.append(tipai)
        cols.append(tipai.images)
        outl.append(outlines_for(tipai, model.config.size))
    text, rows = table(results, items, checker, plain)
    if png:
        save_grid(cols, png, outlines=outl, labels=[r.name for r in results])
        Path(png).with_suffix(".txt").write_text(
            "columns: " + " | ".join(r.name for r in results) + " (accepted regions outlined in magenta)\n"
            + "\n".join(p for p, _ in items) + "\n")
    return text, rows


def main(argv=None) -> int:
    from ..worlds.shapes.model import ModelConfig
    from ..worlds.shapes.train import TrainConfig, ensure_model, load_model, recipe_dir

    ap = argparse.ArgumentParser(prog="python -m tipai_core.eval shapes")
    # 3902: the steps the reported model reached in 3000 s on one CPU thread (RESULTS.md); a fresh run
    # trains the same batches to the same step, so it rebuilds that model up to the machine's float rounding
    ap.add_argument("--train-steps", type=int, default=3902,
                    help="base-model steps (trained, or continued if the cache has fewer; about 50 min on one CPU thread)")
    ap.add_argument("--reuse", action="store_true", help="use the cached model as it is, never train")
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--size", type=int, default=24)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=64, help="held-out prompts")
    ap.add_argument("--steps", type=int, default=20, help="sampling steps")
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--sigma-max", type=float, default=SAMPLE_SIGMA_MAX, help="first σ of the sampling schedule")
    ap.add_argument("--png", default="shapes_eval.png")
    ap.add_argument("--json", default=None)
    ap.add_argument("--log-dir", default=None, help="write the TiPAI tournaments (with checker true_win) as JSONL here")
    ap.add_argument("--calibration-prompts", type=int, default=64,
                    help="prompts of the calibration set whose tournaments fit Stage C and TSPO (0: skip those rows)")
    ap.add_argument("--pairs", choices=("audit", "fresh"), default="audit",
                    help="Stage A pairs: audit = in-place edits, degraded like mid-sampling previews; fresh = apart, clean")
    ap.add_argument("--diagnose", type=int, default=0, metavar="N",
                    help="first, on N calibration prompts, which of the learned auditor and miner limits the loop")
    ap.add_argument("--target", type=float, default=0.9, help="Stage C: Pr[true win | margin ≥ δ] to reach")
    ap.add_argument("--auditor", choices=("oracle", "learned", "both"), default="both",
                    help="oracle: the checker-based auditor and miner; learned: tiny open_clip + Stage A heads "
                         "(trained into the cache when missing) with the Grad-CAM RegionMiner")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    cfg = TrainConfig(model=ModelConfig(size=args.size))
    if args.reuse:
        model, meta = load_model(recipe_dir(cfg, args.cache))
    else:
        model, meta = ensure_model(cfg, args.train_steps, args.cache)
    print(f"base model {meta['recipe']} at step {meta['step']} ({recipe_dir(cfg, args.cache)})")
    if args.train_only:
        return 0
    from ..worlds.shapes.validate import validate

    print(f"checker on rendered scenes with known truth (300 chosen + 300 rejected, every clause) at "
          f"{args.size}px: {validate(300, args.size):.4f}")
    s = EvalSettings(n_prompts=args.n, n_steps=args.steps, cfg=args.cfg, n_candidates=args.candidates,
                     sigma_max=args.sigma_max)
    pieces = {}
    if args.auditor in ("oracle", "both"):
        pieces["oracle"] = oracle_pieces(Checker())
    if args.auditor in ("learned", "both"):
        from ..worlds.shapes.auditor import auditor_dir, heads_pairs, train_auditor

        folder = auditor_dir(args.cache)
        if not (folder / "heads.safetensors").is_file() or heads_pairs(folder) != args.pairs:
            train_auditor(folder, size=args.size, pairs=args.pairs)  # the backbone is reused when present
        metrics = json.loads((folder / "heads.metrics.json").read_text())
        print(f"learned auditor {folder}: held-out pair-AUC {metrics['trained']['pair_auc']:.3f} "
              f"(zero-shot {metrics['zero_shot']['pair_auc']:.3f}), patch pair-AUC {metrics['trained']['patch_pair_auc']:.3f}, "
              f"on held-out {metrics.get('pairs', 'fresh')} pairs")
        auditor, miner = learned_pieces(folder)
        pieces["learned"] = Pieces(auditor, miner, "learned")
        if args.calibration_prompts > 0:
            key = stage_c_key(meta, folder, s, args.calibration_prompts, args.target)
            stage = folder.parent / f"stagec-{key}"
            cal, pol = fit_stage_c(model, s, pieces["learned"], stage, args.calibration_prompts, args.target)
            c = json.loads(cal.read_text())
            print(f"Stage C ({stage}): δ = {c['delta']:.4g}, τ_F {c['tau_F']}; "
                  f"eval-half Pr[true win | m ≥ δ] = {c['metrics'].get('delta_eval_win_rate')}")
            pieces["learned+cal"] = calibrated_pieces(pieces["learned"], cal, None)
            pieces["learned+tspo+cal"] = calibrated_pieces(pieces["learned"], cal, pol)
    if args.diagnose > 0 and "learned" in pieces:
        oracle_a, oracle_m = oracle_pieces(Checker())
        learned = pieces["learned"]
        diagnose(model, s, {"learned auditor + learned miner": (learned.auditor, learned.miner),
                            "learned auditor + oracle miner": (learned.auditor, oracle_m),
                            "oracle auditor + learned miner": (oracle_a, learned.miner),
                            "oracle auditor + oracle miner": (oracle_a, oracle_m)},
                 args.diagnose, Path(args.log_dir or ".") / "diagnose")
    text, rows = evaluate(model, s, args.png, pieces=pieces, log_dir=args.log_dir)
    if "oracle" in pieces:
        print("[oracle] rows: auditor and miner read the checker itself (worlds/shapes/oracle.py): an upper bound")
    print(text)
    print(f"total {time.time() - t0:.0f}s; grid: {args.png}")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": s.__dict__, "rows": rows, "model": meta["recipe"],
                                               "model_step": meta["step"]}, indent=1, default=str))
    return 0
