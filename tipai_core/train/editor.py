"""Stage B1: train the learned local editor A_g on DETONATE-format preference pairs.

    python -m tipai_core.train editor --data pairs.parquet --backbone clip.safetensors --arch ViT-B-16 \
        --heads auditor_heads.safetensors --out models/tipai/editor.safetensors

* Data: the Stage A reader (Prompt, Chosen, Rejected[, Category][, Mask]); the rejected image is the
  view I, the chosen one the target Y. The region of a pair is its mask when it has one, else, as Stage A
  mines patches, the K cells of the auditor's token grid where chosen and rejected differ most (cells with
  no difference are never taken); a pair whose images are equal everywhere has no region and is skipped
  and counted like an unreadable row.
* Each step draws, per pair, t in --t-band, a strength s in [--strength-min, 1] and noise ε, builds
  X = I ⊙ (1 − h) + (√(1 − s²)·I + s·ε) ⊙ h, and drops the prompt with probability --p-uncond (the
  null branch that the inside-CFG knob guides against). The objective L_G is ``editor_losses``; the
  auditor (backbone and heads) is frozen and only carries gradients to the editor.
* Curriculum: pairs ranked by region area, smallest first; epoch 1 trains on the --curriculum-start
  fraction, annealed linearly to all pairs by --curriculum-epochs.
* Validation, printed before training (the untrained net), after, and for the target itself (the
  ceiling): Δr, ΔCLIP on crops, ΔS_R and its win rate, boundary distance on the ring (LPIPS with
  --lpips-backbone, else DSSIM), and L1 inside the region; all at s = 1 and the band's middle t, with a
  fixed noise seed, so two runs compare.
* Checkpoints every --checkpoint-every epochs (``train/checkpoint.py``: net, AdamW moments, scheduler,
  RNG states); --resume continues from the newest complete one and ends with the same weights, bit for
  bit, as a run never stopped. --accelerate uses HF accelerate (DDP) when it is installed.
* Output: ``<out>.safetensors`` + ``<out>.json`` (``editing/learned_file.py``: architecture, space,
  family, text encoder, t band) and ``<out stem>.metrics.json``. Bad input fails before the work with one
  ``[editor] error: ...`` line and status 2, and leaves no file behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..auditor.data import PreferencePairs, SkippedRow, read_pairs, skipped_report, summary
from ..editing.learned_editor import editor_input
from ..editing.learned_file import EditorIdentity, save_editor
from ..editing.learned_net import EditorArch, EditorNet, fit_text_norm
from ..records.files import atomic_write
from . import checkpoint
from .checkpoint import complete_checkpoints, remove_checkpoints
from .cli import StageParser, check_ranges, number, run_command, seed_option
from .editor_losses import EditorLossWeights, editor_loss, region_metrics
from .scorer import _accelerator, _pick_device, curriculum_pool, split_pairs

log = logging.getLogger("tipai.train.editor")
CHECKPOINT_FORMAT = "tipai.editor.checkpoint/1"
MAX_EPOCHS = 10_000
VAL_NOISE_SEED = 1234  # the validation's fixed noise: every run and epoch is measured on the same draws
# what a checkpoint must share with the run resuming it (device, paths and stop points may change)
NOT_FINGERPRINTED = {"resume", "stop_after_epoch", "checkpoint_dir", "keep_checkpoints", "device", "accelerate", "out"}


def build_parser() -> argparse.ArgumentParser:
    p = StageParser(
        prog="python -m tipai_core.train editor",
        description="Stage B1: train the learned local editor on DETONATE-format preference pairs "
        "(Prompt, Chosen, Rejected[, Category][, Mask]).",
        tag="editor",
    )
    g = p.add_argument_group("data")
    g.add_argument("--data", required=True, help="training pairs: .parquet, folder of parquet, or pairs.csv/jsonl")
    g.add_argument("--val-data", help="held-out pairs (same formats); default: --val-fraction of --data")
    number(g, "--val-fraction", float, 0, 1, lo_open=True, hi_open=True, default=0.2, help="held-out fraction")
    number(g, "--image-size", int, 8, 4096, help="train at this square size (default: the auditor's input size)")
    number(g, "--patches-k", int, 1, 1024, default=4, help="K, grid cells mined per pair without a mask")
    g = p.add_argument_group("auditor (frozen; local files only)")
    g.add_argument("--backbone", required=True, help="open_clip weights file or a transformers CLIPModel folder")
    g.add_argument("--arch", help="open_clip architecture name (needed for a weights file)")
    g.add_argument("--config-dir", help="folder of extra open_clip model-config JSONs")
    g.add_argument("--tokenizer-dir", help="local HF tokenizer folder")
    g.add_argument("--heads", help="trained auditor heads (.safetensors); default: the zero-shot heads")
    g.add_argument("--lpips-backbone", help="local LPIPS backbone for the ring term; default: the DSSIM fallback")
    g = p.add_argument_group("editor")
    g.add_argument("--out", required=True, help="editor file to write (<stem>.safetensors + <stem>.json)")
    g.add_argument("--family", default="any", help="the base model family it is for ('shapes', 'sd15', ...; 'any')")
    number(g, "--width", int, 4, 512, default=32, help="channels of the network's first level")
    number(g, "--t-lo", float, 0, 1, default=0.0, help="lower end of the trained t band")
    number(g, "--t-hi", float, 0, 1, default=1.0, help="upper end of the trained t band")
    number(g, "--strength-min", float, 0, 1, lo_open=True, default=0.5, help="smallest noise strength s drawn")
    number(g, "--p-uncond", float, 0, 1, hi_open=True, default=0.1, help="probability of dropping the prompt")
    g = p.add_argument_group("training")
    number(g, "--epochs", int, 1, MAX_EPOCHS, default=10, help="passes over the training pairs")
    number(g, "--batch-size", int, 1, 65536, default=32, help="pairs per optimizer step")
    number(g, "--lr", float, 0, 1, lo_open=True, default=2e-3, help="AdamW learning rate")
    number(g, "--weight-decay", float, 0, 1, default=0.0, help="AdamW weight decay")
    number(g, "--w-l1", float, 0, 1000, default=1.0, help="β1, weight of the L1 term")
    number(g, "--w-clip", float, 0, 1000, default=0.1, help="β2, weight of 1 − S_R")
    number(g, "--w-risk", float, 0, 1000, default=0.1, help="β3, weight of the region risk")
    number(g, "--w-ring", float, 0, 1000, default=0.5, help="β4, weight of the boundary distance")
    number(g, "--w-pref", float, 0, 1000, default=0.1, help="β5, weight of L_pref")
    number(g, "--tau", float, 0, 100, lo_open=True, default=0.1, help="τ of L_pref")
    number(g, "--curriculum-start", float, 0, 1, lo_open=True, default=0.5, help="fraction of pairs in epoch 1")
    number(g, "--curriculum-epochs", int, 1, MAX_EPOCHS, help="epochs to anneal to all pairs (default: half)")
    seed_option(g)
    g.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    g.add_argument("--accelerate", action="store_true", help="use HF accelerate (DDP) if installed")
    g.add_argument("--strict", action="store_true", help="stop at the first unreadable row instead of skipping it")
    g = p.add_argument_group("checkpoints")
    g.add_argument("--checkpoint-dir", help="default: <out stem>.ckpt next to --out; emptied when the run completes")
    number(g, "--checkpoint-every", int, 0, MAX_EPOCHS, default=1, help="epochs between checkpoints (0: none)")
    number(g, "--keep-checkpoints", int, 1, 1000, default=2, help="how many recent checkpoints to keep")
    g.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --checkpoint-dir")
    number(g, "--stop-after-epoch", int, 1, MAX_EPOCHS, help="checkpoint and stop after this epoch (resume later)")
    return p


@dataclass(kw_only=True)
class EditorSettings:
    """One Stage B1 run: the command's options as fields, with its defaults (``build_parser`` says what each means)."""

    data: str | Path
    val_data: str | Path | None = None
    val_fraction: float = 0.2
    image_size: int | None = None
    patches_k: int = 4
    backbone: str | Path
    arch: str | None = None
    config_dir: str | Path | None = None
    tokenizer_dir: str | Path | None = None
    heads: str | Path | None = None
    lpips_backbone: str | Path | None = None
    out: str | Path
    family: str = "any"
    width: int = 32
    t_lo: float = 0.0
    t_hi: float = 1.0
    strength_min: float = 0.5
    p_uncond: float = 0.1
    epochs: int = 10
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.0
    w_l1: float = 1.0
    w_clip: float = 0.1
    w_risk: float = 0.1
    w_ring: float = 0.5
    w_pref: float = 0.1
    tau: float = 0.1
    curriculum_start: float = 0.5
    curriculum_epochs: int | None = None
    seed: int = 0
    device: str = "auto"
    accelerate: bool = False
    strict: bool = False
    checkpoint_dir: str | Path | None = None
    checkpoint_every: int = 1
    keep_checkpoints: int = 2
    resume: bool = False
    stop_after_epoch: int | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EditorSettings:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def weights(self) -> EditorLossWeights:
        return EditorLossWeights(self.w_l1, self.w_clip, self.w_risk, self.w_ring, self.w_pref, self.tau)

    def fingerprint(self) -> dict[str, Any]:
        return {
            k: (str(v) if isinstance(v, Path) else v) for k, v in self.as_dict().items() if k not in NOT_FINGERPRINTED
        }


def check_settings(s: EditorSettings) -> None:
    """Every number in its range, a t band with lo <= hi, a device this machine has, an --out file."""
    check_ranges(build_parser(), s.as_dict())
    if s.t_lo > s.t_hi:
        raise ValueError(f"--t-lo {s.t_lo} is above --t-hi {s.t_hi}")
    try:
        device = _pick_device(s.device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"--device {s.device!r} is not a device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {s.device!r}: this machine has no CUDA device")
    if Path(s.out).suffix != ".safetensors" or Path(s.out).is_dir():
        raise ValueError(f"--out {s.out} must name a .safetensors file")
    if not s.family.strip():
        raise ValueError("--family is empty; give the model family ('any' for every family)")


# ----------------------------------------------------------------------------- data


@dataclass
class EditorData:
    view: torch.Tensor  # [N, 3, H, W] the rejected images
    target: torch.Tensor  # [N, 3, H, W] the chosen images
    hard: torch.Tensor  # [N, 1, H, W] the regions
    text: torch.Tensor  # [N, D] the prompts' features
    f_chosen: torch.Tensor  # [N, D] normalised embeddings of the chosen and rejected images
    f_rejected: torch.Tensor


def mine_regions(chosen: torch.Tensor, rejected: torch.Tensor, grid: tuple[int, int], k: int) -> torch.Tensor:
    """[N, 1, H, W]: the K grid cells where the two images differ most (only cells that differ at all)."""
    n, _, h, w = chosen.shape
    diff = (chosen - rejected).abs().mean(1, keepdim=True)
    cells = F.adaptive_avg_pool2d(diff, grid).flatten(1)
    k = min(k, cells.shape[1])
    top = cells.topk(k, dim=1)
    keep = torch.zeros_like(cells).scatter(1, top.indices, (top.values > 0).to(cells))
    return (F.interpolate(keep.view(n, 1, *grid), size=(h, w), mode="nearest") > 0).float()


def load_pairs(
    pairs: PreferencePairs, idx: list[int], auditor, k: int, strict: bool, skipped: list[SkippedRow]
) -> EditorData:
    """Read, mine and encode ``idx`` (unreadable rows and rows without a region go to ``skipped``)."""
    items = read_pairs(pairs, idx, strict, skipped)
    if not items:
        raise ValueError(f"none of the {len(idx)} rows of {pairs.source} could be read")
    dev = auditor.device
    chosen = torch.stack([it.chosen for it in items]).to(dev)
    rejected = torch.stack([it.rejected for it in items]).to(dev)
    with torch.no_grad():
        g_c, z = auditor.encode(chosen)
        g_r, _ = auditor.encode(rejected)
    grid = (int(z.shape[1]), int(z.shape[2]))
    mined = mine_regions(chosen, rejected, grid, k)
    hard = torch.stack(
        [
            (F.interpolate(it.mask[None].to(dev), size=chosen.shape[-2:], mode="nearest")[0] > 0.5).float()
            if it.mask is not None
            else mined[j]
            for j, it in enumerate(items)
        ]
    )
    ok = hard.flatten(1).sum(1) > 0
    for j in torch.nonzero(~ok).flatten().tolist():
        skipped.append(SkippedRow(items[j].index, "no region: chosen and rejected are equal and the row has no mask"))
    if not bool(ok.any()):
        raise ValueError(f"no row of {pairs.source} has a region to edit")
    text = auditor.text_features([it.prompt for it in items]).to(dev)
    sel = torch.nonzero(ok).flatten()
    return EditorData(
        rejected[sel],
        chosen[sel],
        hard[sel],
        text[sel],
        F.normalize(g_c[sel].float(), dim=-1),
        F.normalize(g_r[sel].float(), dim=-1),
    )


# ----------------------------------------------------------------------------- the steps


def draw_inputs(s: EditorSettings, net: EditorNet, d: EditorData, idx: torch.Tensor, gen: torch.Generator):
    """(X, t, drop) for the rows ``idx``, every draw from ``gen`` (so a resumed run draws the same)."""
    b = len(idx)
    view = d.view[idx]
    t = s.t_lo + (s.t_hi - s.t_lo) * torch.rand(b, generator=gen)
    strength = s.strength_min + (1 - s.strength_min) * torch.rand(b, generator=gen)
    noise = torch.randn(view.shape, generator=gen)
    drop = torch.rand(b, generator=gen) < s.p_uncond
    dev = view.device
    return editor_input(view, d.hard[idx], noise.to(dev), strength.to(dev)), t.to(dev), drop.to(dev)


def composite(x: torch.Tensor, pred: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    return torch.where(hard > 0, pred, x)


@torch.no_grad()
def validate(s: EditorSettings, net, auditor, d: EditorData, ceiling: bool = False) -> dict[str, float]:
    """The metrics (``region_metrics``) averaged over the validation pairs: at s = 1, t mid-band, a fixed noise
    seed; ``ceiling``: of the target itself instead of the net's edit."""
    gen = torch.Generator().manual_seed(VAL_NOISE_SEED)
    t_mid = (s.t_lo + s.t_hi) / 2
    sums: dict[str, float] = {}
    n = len(d.view)
    for start in range(0, n, 256):
        idx = torch.arange(start, min(start + 256, n))
        view, hard = d.view[idx], d.hard[idx]
        if ceiling:
            edited = composite(view, d.target[idx], hard)
        else:
            x = editor_input(view, hard, torch.randn(view.shape, generator=gen).to(view), 1.0)
            t = torch.full((len(idx),), t_mid, device=view.device)
            edited = composite(view, net(x, hard, d.text[idx], t), hard)
        m = region_metrics(auditor, edited, view, d.target[idx], hard, d.text[idx])
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + float(v.sum())
    return {k: v / n for k, v in sums.items()}


def format_metrics(tag: str, m: dict[str, float]) -> str:
    return f"[editor] {tag:<22} " + "  ".join(f"{k}={v:+.4f}" for k, v in m.items())


@dataclass
class EditorResult:
    out: Path | None = None
    before: dict[str, float] | None = None
    after: dict[str, float] | None = None
    ceiling: dict[str, float] | None = None
    skipped: int = 0
    stopped_at: int | None = None


@dataclass
class Run:
    """Where one Stage B1 run happens: device, accelerate's processes (or None), who prints, its start."""

    device: torch.device
    acc: Any
    rank: int
    world: int
    say: Any
    ckpt_dir: Path
    t0: float


def start_run(s: EditorSettings, say) -> Run:
    torch.manual_seed(s.seed)
    acc = _accelerator(s.accelerate)
    device = acc.device if acc is not None else _pick_device(s.device)
    rank, world = (acc.process_index, acc.num_processes) if acc is not None else (0, 1)
    out = Path(s.out)
    ckpt_dir = Path(s.checkpoint_dir) if s.checkpoint_dir else out.with_name(out.stem + ".ckpt")
    quiet = lambda *a, **k: None  # noqa: E731 - only the first process prints
    return Run(device, acc, rank, world, say if rank == 0 else quiet, ckpt_dir, time.time())


def prepare(s: EditorSettings, run: Run, gen: torch.Generator):
    """(auditor, train, val, skipped train rows, skipped val rows): the frozen auditor and the mined pairs."""
    from ..auditor.auditor import Auditor

    train_set = PreferencePairs(s.data)
    held = PreferencePairs(s.val_data) if s.val_data else None
    train_idx, val_idx = split_pairs(s, train_set, held, gen)
    kwargs: dict[str, Any] = {"device": run.device}
    if s.arch:
        kwargs.update(arch=s.arch, config_dir=s.config_dir, tokenizer_dir=s.tokenizer_dir)
    auditor = Auditor.from_files(s.backbone, heads=s.heads, lpips_backbone=s.lpips_backbone, **kwargs).eval()
    auditor.requires_grad_(False)
    size = s.image_size or auditor.backbone.image_size
    for ps in (train_set, held):
        if ps is not None:
            ps.image_size = size
    skipped_train: list[SkippedRow] = []
    skipped_val: list[SkippedRow] = []
    train = load_pairs(train_set, train_idx, auditor, s.patches_k, s.strict, skipped_train)
    val = load_pairs(held if held is not None else train_set, val_idx, auditor, s.patches_k, s.strict, skipped_val)
    run.say(
        f"[editor] auditor {auditor.backbone.identity()}  data={summary(train_set)}  train pairs={len(train.view)}  "
        f"val pairs={len(val.view)}  size={size}  read in {time.time() - run.t0:.1f}s"
    )
    return auditor, train, val, skipped_train, skipped_val


def resume(s: EditorSettings, run: Run, net, opt, sched, gen) -> tuple[int, int]:
    """(first epoch, optimizer steps done): from the newest complete checkpoint with --resume, else (1, 0)."""
    if not s.resume:
        return 1, 0
    stems = complete_checkpoints(run.ckpt_dir)
    if not stems:
        run.say(f"[editor] --resume: no checkpoint in {run.ckpt_dir}, starting from epoch 1")
        return 1, 0
    done, step, _ = checkpoint.load_checkpoint(
        stems[-1], net, opt, sched, gen, s.fingerprint(), fmt=CHECKPOINT_FORMAT, key="editor", what="Stage B1"
    )
    run.say(f"[editor] resumed from {stems[-1]} (epoch {done}, step {step})")
    return done + 1, step


def train_epoch(s: EditorSettings, run: Run, model, net, auditor, opt, sched, d: EditorData, pool, gen) -> dict:
    """One pass over ``pool``: (the loss terms averaged over it)."""
    totals: dict[str, float] = {}
    weights = s.weights()
    for start in range(0, len(pool), s.batch_size):
        batch = pool[start : start + s.batch_size]
        x, t, drop = draw_inputs(s, net, d, batch.to(d.view.device), gen)
        mine = slice(run.rank, None, run.world)  # every process draws the whole batch, then trains on its share
        idx = batch[mine].to(d.view.device)
        if len(idx) == 0:
            continue
        hard = d.hard[idx]
        pred = model(x[mine], hard, d.text[idx], t[mine], drop[mine])
        loss, parts = editor_loss(
            auditor,
            weights,
            pred,
            composite(x[mine], pred, hard),
            d.target[idx],
            hard,
            d.text[idx],
            d.f_chosen[idx],
            d.f_rejected[idx],
        )
        opt.zero_grad(set_to_none=True)
        if run.acc is not None:
            run.acc.backward(loss)
        else:
            loss.backward()
        opt.step()
        sched.step()
        for k, v in parts.items():
            totals[k] = totals.get(k, 0.0) + v * len(batch) / len(pool)
    return totals


def fit(s: EditorSettings, run: Run, net: EditorNet, auditor, train: EditorData, gen) -> int | None:
    """AdamW with a cosine schedule over the curriculum, checkpointed and resumable; the epoch it stopped at
    (--stop-after-epoch), or None when it ran to the end."""
    opt = torch.optim.AdamW(net.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    order = train.hard.flatten(1).sum(1).argsort().cpu()  # curriculum: small regions first
    steps_per_epoch = max(1, math.ceil(len(order) / s.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=s.epochs * steps_per_epoch)
    first, step = resume(s, run, net, opt, sched, gen)
    model = net
    if run.acc is not None:
        model, opt = run.acc.prepare(net, opt)
    for epoch in range(first, s.epochs + 1):
        pool = curriculum_pool(s, order, epoch, gen)
        totals = train_epoch(s, run, model, net, auditor, opt, sched, train, pool, gen)
        step += math.ceil(len(pool) / s.batch_size)
        finite = all(math.isfinite(v) for v in totals.values()) and all(
            torch.isfinite(p).all() for p in net.parameters()
        )
        if not finite:
            raise ValueError(f"the editor's loss or weights became non-finite in epoch {epoch}; lower --lr")
        terms = "  ".join(f"L_{k}={v:.4f}" for k, v in totals.items())
        run.say(f"[editor] epoch {epoch}/{s.epochs}  pool={len(pool)}  {terms}")
        stop = s.stop_after_epoch is not None and s.stop_after_epoch <= epoch < s.epochs
        due = s.checkpoint_every > 0 and epoch % s.checkpoint_every == 0 and epoch < s.epochs
        if run.rank == 0 and (due or stop):
            checkpoint.save_checkpoint(
                run.ckpt_dir,
                epoch,
                step,
                net,
                opt,
                sched,
                gen,
                s.fingerprint(),
                s.keep_checkpoints,
                fmt=CHECKPOINT_FORMAT,
                key="editor",
            )
        if stop:
            run.say(
                f"[editor] stopped after epoch {epoch} (--stop-after-epoch); continue with --resume ({run.ckpt_dir})"
            )
            return epoch
    return None


def train_editor(s: EditorSettings, say=print) -> EditorResult:
    """Stage B1 (the module docstring)."""
    check_settings(s)
    run = start_run(s, say)
    gen = torch.Generator().manual_seed(s.seed)
    auditor, train, val, skipped_train, skipped_val = prepare(s, run, gen)
    torch.manual_seed(s.seed)  # the net's initial weights depend on the seed only
    net = EditorNet(EditorArch(channels=3, text_dim=int(train.text.shape[1]), width=s.width)).to(run.device)
    fit_text_norm(net, train.text)
    before = validate(s, net, auditor, val)
    ceiling = validate(s, net, auditor, val, ceiling=True)
    run.say(format_metrics("before (untrained)", before))
    run.say(format_metrics("target (the ceiling)", ceiling))
    stopped = fit(s, run, net, auditor, train, gen)
    if stopped is not None:
        return EditorResult(stopped_at=stopped, before=before, ceiling=ceiling)
    net.eval()
    after = validate(s, net, auditor, val)
    run.say(format_metrics("after (trained)", after))
    reports = (skipped_report(skipped_train, s.data), skipped_report(skipped_val, s.val_data or s.data))
    report = "\n".join(r for r in reports if r)
    if report:
        run.say("[editor] " + report)
    n_skipped = len(skipped_train) + len(skipped_val)
    if run.rank != 0:
        return EditorResult(before=before, after=after, ceiling=ceiling, skipped=n_skipped)
    out = Path(s.out)
    identity = EditorIdentity(
        arch=net.arch,
        space="rgb",
        family=s.family.strip(),
        text_encoder=auditor.backbone.identity(),
        t_band=(s.t_lo, s.t_hi),
        trained={"pairs": len(train.view), "epochs": s.epochs, "seed": s.seed},
    )
    save_editor(out, net, identity)
    args = {k: (str(v) if isinstance(v, Path) else v) for k, v in s.as_dict().items()}
    metrics = {"before": before, "after": after, "ceiling": ceiling, "skipped": n_skipped, "args": args}
    atomic_write(out.with_suffix(".metrics.json"), json.dumps(metrics, indent=1))
    remove_checkpoints(run.ckpt_dir)
    run.say(f"[editor] wrote {out} and {out.with_suffix('.json').name} in {time.time() - run.t0:.1f}s")
    return EditorResult(out, before, after, ceiling, n_skipped)


def run(args: argparse.Namespace) -> EditorResult:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return train_editor(EditorSettings.from_args(args))


def main(argv: list[str] | None = None) -> int:
    """``python -m tipai_core.train editor``: a bad option or input is one ``[editor] error: ...`` line, status 2."""
    return run_command("editor", build_parser(), run, argv)
