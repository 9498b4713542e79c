"""Stage A: train the auditor heads on DETONATE-format preference pairs.

    python -m tipai_core.train scorer --data pairs.parquet --backbone clip.safetensors --arch ViT-B-16 \
        --out models/tipai/auditor_heads.safetensors

The backbone (E_i, E_t) stays frozen: every pair is encoded once, then the heads (h_θ, patch head, risk
decoder, policy logits; heads.py) are trained on the cached features with

    L = w_pair·L_pair + w_patch·L_patch + w_policy·L_policy + w_sal·L_sal          (auditor/losses.py)

* K patches per pair are mined: the K patches with the most mask coverage when the pair has a mask,
  else the K patches where chosen and rejected differ most, ‖z_c,j − z_r,j‖.
* Reason codes for L_policy come from Category (aliases such as "sexual" -> nsfw, or --category-map).
* Curriculum: pairs are ranked by margin 1 − ⟨e_I,c, e_I,r⟩ (how different the two images are); the
  first epoch trains on the top --curriculum-start fraction, annealed linearly to all pairs by
  --curriculum-epochs.
* Validation (printed for the untrained heads, which are the zero-shot auditor, and after training):
  global pair-AUC, patch pair-AUC, per-class ROC-AUC of the policy risk, ECE of S (Bradley–Terry
  probabilities) and ECE of the calibrated F. F = σ(a·S + b) is fit (Platt) on the training pairs.
* HF accelerate (DDP, one GPU to many machines) is used when installed and --accelerate is given;
  without it the trainer runs on one device.
* Unreadable rows (an undecodable image, an empty prompt, an image path outside the dataset's folder) are
  skipped, counted and named in a report at the end (and in the metrics JSON); --strict makes the first
  one an error instead. NaN metrics (a class without positives has no ROC-AUC) are written as null.
* Bad input fails before any work where it can (every number inside its --help range, the dataset's
  columns, the device: checked before the backbone loads) with one ``[scorer] error: ...`` line and exit
  status 2, and leaves no file behind; a run whose weights turn non-finite stops before it writes any.
* Checkpoints: every --checkpoint-every epochs the heads, the AdamW moments and the scheduler state are
  written to --checkpoint-dir as ``epoch-NNNN.safetensors`` (tensors, including the generator's RNG
  state) plus ``epoch-NNNN.json`` (epoch, step, scheduler, optimizer hyperparameters, run fingerprint).
  Each file is written to a temporary name and renamed; the JSON goes last and marks the checkpoint as
  complete. --resume continues from the newest complete checkpoint and ends with the same weights, bit
  for bit, as a run that was never stopped. No pickle is involved.

Library use: ``train_scorer(ScorerSettings(...))``; the command is a thin argparse wrapper around it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from ..auditor.backbones import ImageTextBackbone, load_backbone
from ..auditor.data import PreferencePairs, SkippedRow, read_pairs, skipped_report, summary
from ..auditor.heads import AuditorHeads, save_heads
from ..auditor.losses import PairBatch, StageALoss
from ..auditor.metrics import expected_calibration_error, pair_auc, pair_ece, roc_auc
from ..auditor.text_cache import TextFeatureCache
from ..auditor.zero_shot import DEFAULT_POLICY_PROMPTS, PolicyClasses
from ..records.files import atomic_write
from . import checkpoint
from .checkpoint import complete_checkpoints, remove_checkpoints
from .cli import StageParser, check_ranges, number, run_command, seed_option

log = logging.getLogger("tipai.train.scorer")
MAX_EPOCHS = 10_000  # --epochs (and what counts epochs): 1 .. 10000

CATEGORY_ALIASES = {
    "nsfw": "nsfw",
    "sexual": "nsfw",
    "sex": "nsfw",
    "nudity": "nsfw",
    "nude": "nsfw",
    "porn": "nsfw",
    "violence": "violence/weapon",
    "violent": "violence/weapon",
    "weapon": "violence/weapon",
    "weapons": "violence/weapon",
    "gore": "violence/weapon",
    "blood": "violence/weapon",
    "hate": "hate symbol",
    "hate symbol": "hate symbol",
    "extremism": "hate symbol",
    "racism": "hate symbol",
    "logo": "logo",
    "brand": "logo",
    "trademark": "logo",
    "minor": "minor",
    "child": "minor",
    "children": "minor",
    "kid": "minor",
}


def build_parser() -> argparse.ArgumentParser:
    p = StageParser(
        prog="python -m tipai_core.train scorer",
        description="Stage A: train the auditor heads on DETONATE-format preference pairs "
        "(Prompt, Chosen, Rejected, Category[, Mask]).",
        tag="scorer",
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--data", required=True, help="training pairs: .parquet file, folder of parquet, or folder with pairs.csv/jsonl"
    )
    g.add_argument("--val-data", help="held-out pairs (same formats); default: --val-fraction of --data")
    number(
        g,
        "--val-fraction",
        float,
        0,
        1,
        lo_open=True,
        hi_open=True,
        default=0.2,
        help="held-out fraction when --val-data is not given",
    )
    g.add_argument(
        "--classes",
        default="default",
        help="policy classes: 'default' (nsfw, violence/weapon, hate symbol, logo, minor), 'data' "
        "(the Category values) or a comma-separated list",
    )
    g.add_argument("--category-map", default="", help="explicit reason codes, e.g. 'sexual=nsfw,gun=violence/weapon'")
    g = p.add_argument_group("backbone (local files only)")
    g.add_argument(
        "--backbone", required=True, help="open_clip weights file (.safetensors/.pt) or a transformers CLIPModel folder"
    )
    g.add_argument("--arch", help="open_clip architecture name (needed for a weights file)")
    g.add_argument("--config-dir", help="folder of extra open_clip model-config JSONs")
    g.add_argument("--tokenizer-dir", help="local HF tokenizer folder, for open_clip models with an HF tokenizer")
    g = p.add_argument_group("training")
    g.add_argument("--out", required=True, help="heads file to write (<stem>.safetensors + <stem>.json)")
    g.add_argument("--metrics-out", help="JSON file for the validation metrics (default: <stem>.metrics.json)")
    number(g, "--epochs", int, 1, MAX_EPOCHS, default=40, help="passes over the training pairs")
    number(g, "--batch-size", int, 1, 65536, default=64, help="pairs per optimizer step")
    number(g, "--lr", float, 0, 1, lo_open=True, default=3e-3, help="AdamW learning rate")
    number(g, "--weight-decay", float, 0, 1, default=1e-4, help="AdamW weight decay")
    number(g, "--hidden", int, 1, 4096, default=256, help="width of the residual MLPs of the heads")
    number(g, "--patches-k", int, 1, 1024, default=4, help="K, patches mined per pair for L_patch")
    number(g, "--w-pair", float, 0, 1000, default=1.0, help="weight of L_pair")
    number(g, "--w-patch", float, 0, 1000, default=0.5, help="weight of L_patch")
    number(g, "--w-policy", float, 0, 1000, default=0.5, help="weight of L_policy")
    number(g, "--w-sal", float, 0, 1000, default=0.5, help="weight of L_sal")
    number(g, "--curriculum-start", float, 0, 1, default=0.5, help="fraction of highest-margin pairs in epoch 1")
    number(
        g,
        "--curriculum-epochs",
        int,
        1,
        MAX_EPOCHS,
        help="epochs to anneal to all pairs (default: half of --epochs)",
    )
    number(g, "--encode-batch", int, 1, 65536, default=64, help="images per backbone forward while encoding")
    seed_option(g)
    g.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    g.add_argument("--accelerate", action="store_true", help="use HF accelerate (DDP) if installed")
    g.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first unreadable row instead of skipping it (default: skip, count, report)",
    )
    g = p.add_argument_group("checkpoints")
    g.add_argument(
        "--checkpoint-dir",
        help="where checkpoints go (default: <out stem>.ckpt next to --out; emptied when the run completes)",
    )
    number(g, "--checkpoint-every", int, 0, MAX_EPOCHS, default=1, help="epochs between checkpoints (0: none)")
    number(g, "--keep-checkpoints", int, 1, 1000, default=2, help="how many recent checkpoints to keep")
    g.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --checkpoint-dir")
    number(
        g,
        "--stop-after-epoch",
        int,
        1,
        MAX_EPOCHS,
        help="checkpoint and stop after this epoch without writing heads (to split a run; resume later)",
    )
    return p


@dataclass(kw_only=True)
class ScorerSettings:
    """One Stage A run: the command's options as fields, in the command's order, with its defaults.

    ``data``, ``backbone`` and ``out`` are required; ``build_parser`` says what each one means. The order
    matters: the metrics file keeps the settings under "args" in it.
    """

    data: str | Path
    val_data: str | Path | None = None
    val_fraction: float = 0.2
    classes: str = "default"
    category_map: str = ""
    backbone: str | Path
    arch: str | None = None
    config_dir: str | Path | None = None
    tokenizer_dir: str | Path | None = None
    out: str | Path
    metrics_out: str | Path | None = None
    epochs: int = 40
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    hidden: int = 256
    patches_k: int = 4
    w_pair: float = 1.0
    w_patch: float = 0.5
    w_policy: float = 0.5
    w_sal: float = 0.5
    curriculum_start: float = 0.5
    curriculum_epochs: int | None = None
    encode_batch: int = 64
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
    def from_args(cls, args: argparse.Namespace) -> ScorerSettings:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# ----------------------------------------------------------------------------- classes and reason codes


def resolve_policy(spec: str, categories: list[str]) -> PolicyClasses:
    if spec == "default":
        return PolicyClasses(prompts=dict(DEFAULT_POLICY_PROMPTS))
    if spec == "data":
        if not categories:
            raise ValueError("--classes data: the dataset has no Category values")
        return PolicyClasses.from_names(categories)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--classes {spec!r} names no class")
    return PolicyClasses.from_names(names)


def reason_codes(categories: list[str], classes: tuple[str, ...], explicit: str) -> dict[str, int]:
    """Category -> class index (−1 when unknown): explicit map, exact class name, then aliases."""
    mapping: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in explicit.split(","))):
        cat, sep, cls = item.partition("=")
        if not sep or cls.strip() not in classes:
            raise ValueError(f"--category-map entry {item!r}: expected category=class with class in {list(classes)}")
        mapping[cat.strip().lower()] = cls.strip()
    codes = {}
    for cat in categories:
        key = cat.lower()
        name = mapping.get(key) or (cat if cat in classes else None) or CATEGORY_ALIASES.get(key)
        codes[cat] = classes.index(name) if name in classes else -1
    return codes


# ----------------------------------------------------------------------------- features


@torch.no_grad()
def encode_pairs(
    backbone: ImageTextBackbone,
    pairs: PreferencePairs,
    indices: list[int],
    cache: TextFeatureCache,
    codes: dict[str, int],
    k: int,
    batch: int,
    strict: bool = False,
    skipped: list[SkippedRow] | None = None,
) -> dict[str, torch.Tensor]:
    """Frozen features of every readable pair, the mined patches and the reason codes (on the backbone's device).

    Unreadable rows are appended to ``skipped`` and left out (``strict``: raised).
    """
    dev = backbone.device
    texts, g_c, g_r, z_c, z_r, reason, masks, has_mask = [], [], [], [], [], [], [], []
    for start in range(0, len(indices), batch):
        items = read_pairs(pairs, indices[start : start + batch], strict, skipped)
        if not items:
            continue
        imgs = torch.stack([it.chosen for it in items] + [it.rejected for it in items]).to(dev)
        g, z = backbone.encode_image(imgs)  # chosen and rejected of the chunk in one forward
        n = len(items)
        g_c.append(g[:n])
        g_r.append(g[n:])
        z_c.append(z[:n])
        z_r.append(z[n:])
        texts.append(cache.get([it.prompt for it in items], device=dev))
        reason += [codes.get(it.category, -1) if it.category else -1 for it in items]
        grid = (int(z.shape[1]), int(z.shape[2]))
        for it in items:
            if it.mask is not None:
                masks.append(F.adaptive_avg_pool2d(it.mask[None].to(dev), grid)[0, 0])
                has_mask.append(True)
            else:
                masks.append(torch.zeros(grid, device=dev))
                has_mask.append(False)
    if not g_c:
        raise ValueError(f"none of the {len(indices)} rows of {pairs.source} could be read")
    feats = {
        "text": torch.cat(texts),
        "g_c": torch.cat(g_c),
        "g_r": torch.cat(g_r),
        "z_c": torch.cat(z_c),
        "z_r": torch.cat(z_r),
        "reason": torch.tensor(reason, device=dev, dtype=torch.long),
        "mask": torch.stack(masks),
        "has_mask": torch.tensor(has_mask, device=dev),
    }
    k = min(k, feats["z_c"].shape[1] * feats["z_c"].shape[2])
    diff = (feats["z_c"] - feats["z_r"]).norm(dim=-1).flatten(1)
    # Masked pairs: the patches the mask covers most (ties broken by feature difference).
    priority = torch.where(feats["has_mask"][:, None], feats["mask"].flatten(1) * 1e3 + diff, diff)
    feats["patches"] = priority.topk(k, dim=1).indices
    feats["margin"] = 1.0 - (feats["g_c"] * feats["g_r"]).sum(-1)
    return feats


def batch_of(feats: dict[str, torch.Tensor], idx: torch.Tensor) -> PairBatch:
    return PairBatch(**{k: feats[k][idx] for k in PairBatch.__dataclass_fields__})


# ----------------------------------------------------------------------------- validation


@torch.no_grad()
def evaluate(heads: AuditorHeads, feats: dict[str, torch.Tensor]) -> dict[str, Any]:
    s_c = heads.global_score(feats["g_c"], feats["text"], feats["z_c"])
    s_r = heads.global_score(feats["g_r"], feats["text"], feats["z_r"])
    # Patch score S_R on the pair's region: its mask when it has one, else its K mined patches.
    region = torch.zeros_like(feats["mask"]).flatten(1).scatter(1, feats["patches"], 1.0).view_as(feats["mask"])
    region = torch.where(feats["has_mask"][:, None, None], feats["mask"], region)
    sr_c = heads.pool_region(heads.patch_scores(feats["z_c"], feats["text"]), region)
    sr_r = heads.pool_region(heads.patch_scores(feats["z_r"], feats["text"]), region)
    risk_c = torch.sigmoid(heads.policy_logits(feats["g_c"], feats["z_c"]))
    risk_r = torch.sigmoid(heads.policy_logits(feats["g_r"], feats["z_r"]))
    per_class = {}
    for c, name in enumerate(heads.classes):
        labels = torch.cat([torch.zeros(len(s_c)), (feats["reason"] == c).float().cpu()])
        per_class[name] = roc_auc(torch.cat([risk_c[:, c], risk_r[:, c]]).cpu(), labels)
    f_c = heads.faithfulness(s_c, feats["g_c"], feats["text"])
    f_r = heads.faithfulness(s_r, feats["g_r"], feats["text"])
    return {
        "pairs": int(len(s_c)),
        "pair_auc": pair_auc(s_c.cpu(), s_r.cpu()),
        "patch_pair_auc": pair_auc(sr_c.cpu(), sr_r.cpu()),
        "class_roc_auc": per_class,
        "ece_S": pair_ece(s_c.cpu(), s_r.cpu()),
        "ece_F": expected_calibration_error(
            torch.cat([f_c, f_r]).cpu(), torch.cat([torch.ones_like(f_c), torch.zeros_like(f_r)]).cpu()
        ),
    }


def format_metrics(tag: str, m: dict[str, Any]) -> str:
    cls = "  ".join(f"{k}={'n/a' if math.isnan(v) else f'{v:.3f}'}" for k, v in m["class_roc_auc"].items())
    return (
        f"[scorer] {tag}: pairs={m['pairs']}  pair-AUC={m['pair_auc']:.3f}  "
        f"patch pair-AUC={m['patch_pair_auc']:.3f}  ECE(S)={m['ece_S']:.3f}  ECE(F)={m['ece_F']:.3f}\n"
        f"[scorer] {tag}: per-class ROC-AUC  {cls}"
    )


def fit_platt(scores: torch.Tensor, labels: torch.Tensor, steps: int = 200) -> tuple[float, float]:
    """a, b minimising BCE(σ(a·S + b), y): the calibration of F."""
    s, y = scores.detach().double().cpu(), labels.double().cpu()
    mu, sd = s.mean(), s.std().clamp_min(1e-6)
    params = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([params], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(params[0] * (s - mu) / sd + params[1], y)
        loss.backward()
        return loss

    opt.step(closure)
    a = float(params[0].detach() / sd)
    return a, float(params[1].detach() - a * mu)


# ----------------------------------------------------------------------------- checkpoints

CHECKPOINT_FORMAT = "tipai-scorer-checkpoint"
# What must match for a checkpoint to continue this run: everything that shapes the trajectory.
FINGERPRINT_ARGS = (
    "data",
    "val_data",
    "val_fraction",
    "classes",
    "category_map",
    "backbone",
    "arch",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "hidden",
    "patches_k",
    "w_pair",
    "w_patch",
    "w_policy",
    "w_sal",
    "curriculum_start",
    "curriculum_epochs",
    "seed",
)


def run_fingerprint(s: ScorerSettings | argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(s, k) for k in FINGERPRINT_ARGS}


def save_checkpoint(
    folder: Path,
    epoch: int,
    step: int,
    heads: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    gen: torch.Generator,
    fingerprint: dict[str, Any],
    keep: int = 2,
) -> Path:
    """epoch-NNNN.safetensors (heads, AdamW moments, RNG states) + epoch-NNNN.json (the rest); JSON last."""
    return checkpoint.save_checkpoint(
        folder, epoch, step, heads, opt, sched, gen, fingerprint, keep, fmt=CHECKPOINT_FORMAT, key="heads"
    )


def load_checkpoint(
    stem: Path,
    heads: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    gen: torch.Generator,
    fingerprint: dict[str, Any],
) -> tuple[int, int]:
    """Restore heads, optimizer, scheduler and RNG from ``stem``; returns (epoch, step). Refuses another run's."""
    epoch, step, _ = checkpoint.load_checkpoint(
        stem, heads, opt, sched, gen, fingerprint, fmt=CHECKPOINT_FORMAT, key="heads", what="Stage A"
    )
    return epoch, step


# ----------------------------------------------------------------------------- the run

Say = Callable[..., Any]


def _pick_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def _accelerator(wanted: bool):
    if not wanted:
        return None
    try:
        from accelerate import Accelerator
    except ImportError:
        log.warning("--accelerate given but the accelerate package is not installed: training on one device")
        return None
    return Accelerator()


def _quiet(*_: Any, **__: Any) -> None:
    return None


@dataclass
class RunContext:
    """Where one Stage A run happens: its device, accelerate's processes (or None), who prints, its start."""

    device: torch.device
    acc: Any
    rank: int
    world: int
    say: Say
    ckpt_dir: Path
    t0: float


def start_run(s: ScorerSettings) -> RunContext:
    """Seed, device and processes; only the first process (rank 0) prints."""
    torch.manual_seed(s.seed)
    acc = _accelerator(s.accelerate)
    device = acc.device if acc is not None else _pick_device(s.device)
    rank, world = (acc.process_index, acc.num_processes) if acc is not None else (0, 1)
    out = Path(s.out).with_suffix("")
    ckpt_dir = Path(s.checkpoint_dir) if s.checkpoint_dir else out.with_name(out.name + ".ckpt")
    return RunContext(device, acc, rank, world, print if rank == 0 else _quiet, ckpt_dir, time.time())


@dataclass
class StageAData:
    """The frozen features of the training and validation pairs, and what made them."""

    backbone: ImageTextBackbone
    cache: TextFeatureCache
    policy: PolicyClasses
    train: dict[str, torch.Tensor]
    val: dict[str, torch.Tensor]
    skipped_train: list[SkippedRow] = field(default_factory=list)
    skipped_val: list[SkippedRow] = field(default_factory=list)


class SplitSettings(Protocol):
    val_fraction: float


class CurriculumSettings(Protocol):
    epochs: int
    curriculum_start: float
    curriculum_epochs: int | None


def split_pairs(
    s: SplitSettings, train_set: PreferencePairs, val_set: PreferencePairs | None, gen: torch.Generator
) -> tuple[list[int], list[int]]:
    """(train, validation) row indices: all of each set with --val-data, else a --val-fraction split of --data."""
    if val_set is not None:
        return list(range(len(train_set))), list(range(len(val_set)))
    perm = torch.randperm(len(train_set), generator=gen).tolist()
    n_val = max(1, int(round(s.val_fraction * len(perm))))
    return sorted(perm[n_val:]), sorted(perm[:n_val])


def build_data(s: ScorerSettings, ctx: RunContext, gen: torch.Generator) -> StageAData:
    """Read the pairs and resolve the classes and reason codes (a bad dataset fails here, before the backbone
    is loaded), then load the backbone and encode every readable pair."""
    train_set = PreferencePairs(s.data)
    held = PreferencePairs(s.val_data) if s.val_data else None
    train_idx, val_idx = split_pairs(s, train_set, held, gen)
    val_set = held if held is not None else train_set
    if not train_idx:
        raise ValueError(f"no training pairs left in {s.data}")
    categories = sorted(set(train_set.categories()) | set(val_set.categories()))
    policy = resolve_policy(s.classes, categories)
    codes = reason_codes(categories, policy.names, s.category_map)
    kwargs: dict[str, Any] = {"device": ctx.device}
    if s.arch:
        kwargs.update(config_dir=s.config_dir, tokenizer_dir=s.tokenizer_dir)
    backbone = load_backbone(s.backbone, arch=s.arch, **kwargs)
    for pairs in (train_set, val_set):
        pairs.image_size = backbone.image_size
    unmapped = [c for c, i in codes.items() if i < 0]
    if unmapped:
        ctx.say(f"[scorer] categories without a policy class (no L_policy/L_sal for them): {unmapped}")
    ctx.say(
        f"[scorer] backbone {backbone.identity()}  train={summary(train_set)}  train pairs={len(train_idx)}  "
        f"val pairs={len(val_idx)}  classes={list(policy.names)}"
    )
    cache = TextFeatureCache(backbone.encode_text, max_entries=1 << 20)
    data = StageAData(backbone, cache, policy, {}, {})
    data.train = encode_pairs(
        backbone, train_set, train_idx, cache, codes, s.patches_k, s.encode_batch, s.strict, data.skipped_train
    )
    data.val = encode_pairs(
        backbone, val_set, val_idx, cache, codes, s.patches_k, s.encode_batch, s.strict, data.skipped_val
    )
    if data.skipped_train or data.skipped_val:
        ctx.say(
            f"[scorer] skipping {len(data.skipped_train) + len(data.skipped_val)} unreadable row(s); named at the end"
        )
    return data


def zero_shot_heads(s: ScorerSettings, data: StageAData, device: torch.device) -> AuditorHeads:
    """The untrained heads: the zero-shot auditor (policy prompts as text features), where training starts."""
    return AuditorHeads.zero_shot(
        data.backbone.identity(),
        data.policy,
        float(data.backbone.logit_scale()),
        lambda t: data.cache.get(t, device=device),
        hidden=s.hidden,
    ).to(device)


def _resume(
    s: ScorerSettings,
    ctx: RunContext,
    heads: AuditorHeads,
    opt: torch.optim.Optimizer,
    sched: Any,
    gen: torch.Generator,
) -> tuple[int, int]:
    """(first epoch, optimizer steps done): from the newest checkpoint with --resume, else (1, 0)."""
    if not s.resume:
        return 1, 0
    stems = complete_checkpoints(ctx.ckpt_dir)
    if not stems:
        ctx.say(f"[scorer] --resume: no checkpoint in {ctx.ckpt_dir}, starting from epoch 1")
        return 1, 0
    done, step = load_checkpoint(stems[-1], heads, opt, sched, gen, run_fingerprint(s))
    ctx.say(f"[scorer] resumed from {stems[-1]} (epoch {done}, step {step})")
    return done + 1, step


def curriculum_pool(s: CurriculumSettings, order: torch.Tensor, epoch: int, gen: torch.Generator) -> torch.Tensor:
    """Epoch ``epoch``'s pairs, shuffled: the top frac(epoch) of ``order`` (highest margin first), with
    frac = min(1, start + (1 - start)·(epoch - 1)/anneal)."""
    anneal = max(1, s.curriculum_epochs if s.curriculum_epochs is not None else s.epochs // 2)
    frac = min(1.0, s.curriculum_start + (1.0 - s.curriculum_start) * (epoch - 1) / anneal)
    pool = order[: max(1, int(round(frac * len(order))))]
    return pool[torch.randperm(len(pool), generator=gen)]


def train_epoch(
    s: ScorerSettings,
    ctx: RunContext,
    objective: Any,
    opt: torch.optim.Optimizer,
    sched: Any,
    train: dict[str, torch.Tensor],
    pool: torch.Tensor,
) -> tuple[dict[str, float], int]:
    """One pass over ``pool`` in batches; (the loss terms averaged over the pool, optimizer steps taken)."""
    totals: dict[str, float] = {}
    steps = 0
    for start in range(0, len(pool), s.batch_size):
        chunk = pool[start : start + s.batch_size][ctx.rank :: ctx.world]  # each process its share of the batch
        if len(chunk) == 0:
            continue
        loss, parts = objective(batch_of(train, chunk.to(ctx.device)))
        opt.zero_grad(set_to_none=True)
        if ctx.acc is not None:
            ctx.acc.backward(loss)
        else:
            loss.backward()
        opt.step()
        sched.step()
        steps += 1
        for k, v in parts.items():
            totals[k] = totals.get(k, 0.0) + v * len(chunk) / len(pool)
    return totals, steps


def train_heads(
    s: ScorerSettings, ctx: RunContext, data: StageAData, heads: AuditorHeads, gen: torch.Generator
) -> tuple[AuditorHeads, int | None]:
    """AdamW with a cosine schedule on L (module docstring) over the curriculum, checkpointed and resumable.

    Returns the heads (unwrapped from accelerate) and the epoch it stopped at (--stop-after-epoch), or None.
    """
    objective = StageALoss(heads, s.w_pair, s.w_patch, s.w_policy, s.w_sal)
    opt = torch.optim.AdamW(heads.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    order = data.train["margin"].argsort(descending=True).cpu()  # curriculum: high-margin (easy) pairs first
    steps_per_epoch = max(1, math.ceil(len(order) / s.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=s.epochs * steps_per_epoch)
    first_epoch, step = _resume(s, ctx, heads, opt, sched, gen)
    if ctx.acc is not None:
        objective, opt = ctx.acc.prepare(objective, opt)

    def plain() -> AuditorHeads:
        return ctx.acc.unwrap_model(objective).heads if ctx.acc is not None else heads

    for epoch in range(first_epoch, s.epochs + 1):
        pool = curriculum_pool(s, order, epoch, gen)
        totals, steps = train_epoch(s, ctx, objective, opt, sched, data.train, pool)
        step += steps
        _check_finite(plain(), epoch, totals)
        if epoch == 1 or epoch == s.epochs or epoch % max(1, s.epochs // 5) == 0:
            ctx.say(
                f"[scorer] epoch {epoch}/{s.epochs}  pool={len(pool)}  "
                + "  ".join(f"L_{k}={v:.4f}" for k, v in totals.items())
            )
        stop = s.stop_after_epoch is not None and epoch >= s.stop_after_epoch and epoch < s.epochs
        due = s.checkpoint_every > 0 and epoch % s.checkpoint_every == 0 and epoch < s.epochs
        if ctx.rank == 0 and (due or stop):
            save_checkpoint(ctx.ckpt_dir, epoch, step, plain(), opt, sched, gen, run_fingerprint(s), s.keep_checkpoints)
        if stop:
            ctx.say(
                f"[scorer] stopped after epoch {epoch} (--stop-after-epoch); continue with --resume "
                f"(checkpoints in {ctx.ckpt_dir})"
            )
            return heads, epoch
    return plain(), None


def _check_finite(heads: torch.nn.Module, epoch: int, totals: dict[str, float]) -> None:
    """A diverged run (non-finite weights or losses) stops before it writes a checkpoint or heads."""
    bad = [n for n, p in heads.state_dict().items() if p.is_floating_point() and not bool(torch.isfinite(p).all())]
    bad += [f"L_{k}" for k, v in totals.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(
            f"epoch {epoch}: training diverged (non-finite {', '.join(bad[:4])}); nothing was written. "
            "Lower --lr or check the data"
        )


def finite_or_none(x: Any) -> Any:
    """``x`` with every NaN or infinite float replaced by None (JSON null): the files hold no NaN (a class
    without positives has no ROC-AUC)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite_or_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_or_none(v) for v in x]
    return x


def calibrate_faithfulness(heads: AuditorHeads, train: dict[str, torch.Tensor]) -> None:
    """Mark the heads trained and fit F = σ(a·S + b) (Platt) on the training pairs: chosen 1, rejected 0."""
    heads.config.trained = True
    with torch.no_grad():
        s_train = torch.cat(
            [
                heads.global_score(train["g_c"], train["text"], train["z_c"]),
                heads.global_score(train["g_r"], train["text"], train["z_r"]),
            ]
        )
    y_train = torch.cat([torch.ones(len(train["g_c"])), torch.zeros(len(train["g_r"]))])
    heads.set_faithfulness_calibration(*fit_platt(s_train, y_train))


@dataclass
class ScorerResult:
    """What a Stage A run wrote: the heads and metrics files and the metrics (None for a stopped run or a
    process other than the first), or the epoch it stopped at."""

    heads: Path | None = None
    metrics_path: Path | None = None
    metrics: dict[str, Any] | None = None
    stopped_at: int | None = None


def save_run(
    s: ScorerSettings,
    ctx: RunContext,
    heads: AuditorHeads,
    data: StageAData,
    zero_shot: dict[str, Any],
    trained: dict[str, Any],
    report: str,
) -> ScorerResult:
    """The heads file (+ .json), the metrics JSON; the run's checkpoints go; the skipped-rows report is said last."""
    skipped = {"train": [vars(r) for r in data.skipped_train], "val": [vars(r) for r in data.skipped_val]}
    zero_shot, trained = finite_or_none(zero_shot), finite_or_none(trained)
    metrics = {
        "zero_shot": zero_shot,
        "trained": trained,
        "seconds": time.time() - ctx.t0,
        "skipped_rows": skipped,
        "args": s.as_dict(),
    }
    out = save_heads(
        heads,
        s.out,
        metadata={"metrics": {"zero_shot": zero_shot, "trained": trained}, "data": str(s.data), "epochs": s.epochs},
    )
    metrics_path = Path(s.metrics_out) if s.metrics_out else out.with_suffix(".metrics.json")
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(metrics_path, json.dumps(metrics, indent=2, default=str))
    ctx.say(f"[scorer] wrote {out} (+ {out.with_suffix('.json').name}) and {metrics_path}")
    remove_checkpoints(ctx.ckpt_dir)  # the run is done: its checkpoints have served
    # the report comes last, where it is seen: the run went on, but these rows taught it nothing
    ctx.say(f"[scorer] {report}" if report else "[scorer] every row was read (0 skipped)")
    return ScorerResult(out, metrics_path, metrics)


def check_settings(s: ScorerSettings) -> None:
    """What can be checked before any work starts: every number in the command's range (``cli.bounded``),
    a device this machine has, an --out that is not a folder. Raises ValueError naming the setting."""
    check_ranges(build_parser(), s.as_dict())
    try:
        device = _pick_device(s.device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"--device {s.device!r} is not a device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {s.device!r}: this machine has no CUDA device")
    for path in (s.out, s.metrics_out):
        if path is not None and Path(path).is_dir():
            raise ValueError(f"--out/--metrics-out {path} is a folder; name a file")


def train_scorer(s: ScorerSettings) -> ScorerResult:
    """Stage A (the module docstring): encode the pairs once, train the heads, validate, write the files."""
    check_settings(s)
    ctx = start_run(s)
    gen = torch.Generator().manual_seed(s.seed)
    data = build_data(s, ctx, gen)
    heads = zero_shot_heads(s, data, ctx.device)
    n_pairs = len(data.train["g_c"]) + len(data.val["g_c"])
    ctx.say(f"[scorer] encoded {n_pairs} pairs in {time.time() - ctx.t0:.1f}s")
    zero_shot = evaluate(heads, data.val)
    ctx.say(format_metrics("zero-shot (epoch 0)", zero_shot))
    heads, stopped = train_heads(s, ctx, data, heads, gen)
    report = "\n".join(
        r
        for r in (skipped_report(data.skipped_train, s.data), skipped_report(data.skipped_val, s.val_data or s.data))
        if r
    )
    if stopped is not None:
        if report:
            ctx.say("[scorer] " + report)
        return ScorerResult(stopped_at=stopped)
    calibrate_faithfulness(heads, data.train)
    _check_finite(heads, s.epochs, {})
    trained = evaluate(heads, data.val)
    ctx.say(format_metrics("trained", trained))
    if ctx.rank != 0:
        return ScorerResult()
    return save_run(s, ctx, heads, data, zero_shot, trained, report)


def run(args: argparse.Namespace) -> ScorerResult:
    """The command's parsed arguments, handed to ``train_scorer``."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return train_scorer(ScorerSettings.from_args(args))


def main(argv: list[str] | None = None) -> int:
    """``python -m tipai_core.train scorer``: a bad option or input is one ``[scorer] error: ...`` line, status 2."""
    return run_command("scorer", build_parser(), run, argv)
