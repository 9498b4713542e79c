"""Training the ShapesWorld base model, cached by recipe outside the checkout, with resume.

Objective (eps parametrisation in sigma space): ``x0 = 2·image - 1``, ``ln σ ~ U[ln σ_min, ln σ_max]``,
``x = x0 + σ·ε`` and ``L = ‖ε̂(x, σ, c) - ε‖²``, with the prompt replaced by the empty prompt with
probability p_drop (so the same network gives the unconditional branch of CFG). AdamW with a
linear warm-up, then a constant rate; EMA weights ``θ_ema ← β·θ_ema + (1 - β)·θ`` are what sampling
uses.

Everything a step draws comes from ``(seed, step)`` (its scene seeds, σ, ε, dropout), so a run
resumed from a checkpoint is the run that never stopped, and the batch of step k is the same on
any machine. The recipe (all settings except the number of steps) is hashed; its folder is
``$TIPAI_CACHE/shapes/<hash>/`` (default ``~/.cache/tipai/shapes/<hash>/``), holding the rolling
training checkpoints (``ckpt/``, ``train.checkpoint``: safetensors + JSON, no pickle) and the
exported EMA weights ``model.safetensors`` + ``model.json``. Asking for more steps of a cached
recipe continues it.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ...records.files import atomic_write
from ...train.checkpoint import complete_checkpoints, load_checkpoint, save_checkpoint
from .dataset import batch as render_batch
from .grammar import tokenize
from .model import ModelConfig, ShapesUNet, ema_update, to_model_space
from .prefetch import prefetched

FORMAT = "tipai-shapes-base"


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    batch: int = 64
    lr: float = 2e-3
    warmup: int = 200
    weight_decay: float = 0.01
    p_drop: float = 0.1
    ema_beta: float = 0.999
    seed: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        d["model"] = ModelConfig.from_dict(d["model"])
        return cls(**d)

    def recipe_hash(self) -> str:
        blob = json.dumps({"format": FORMAT, **self.to_dict()}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def cache_root() -> Path:
    """``$TIPAI_CACHE`` or ``~/.cache/tipai``: outside the checkout, never in git."""
    return Path(os.environ.get("TIPAI_CACHE") or Path.home() / ".cache" / "tipai")


def recipe_dir(cfg: TrainConfig, root: Path | None = None) -> Path:
    return Path(root or cache_root()) / "shapes" / cfg.recipe_hash()


class _Pair(torch.nn.Module):
    """The trained network and its EMA twin, checkpointed together."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.model = ShapesUNet(config)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)


def training_batch(cfg: TrainConfig, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x0, tokens, σ, ε) of one step, a pure function of (seed, step)."""
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    base = (cfg.seed * 1_000_003 + step) * cfg.batch
    images, prompts = render_batch(range(base, base + cfg.batch), size=cfg.model.size, stream=0)
    drop = torch.rand(cfg.batch, generator=g) < cfg.p_drop
    tokens = torch.tensor([tokenize("" if d else p) for p, d in zip(prompts, drop.tolist())])
    lo, hi = math.log(cfg.model.sigma_min), math.log(cfg.model.sigma_max)
    sigma = torch.exp(lo + (hi - lo) * torch.rand(cfg.batch, generator=g))
    eps = torch.randn(images.shape, generator=g)
    return to_model_space(images), tokens, sigma, eps


def loss_at(model: ShapesUNet, x0, tokens, sigma, eps) -> torch.Tensor:
    """``‖ε̂(x0 + σε, σ, c) - ε‖²``."""
    x = x0 + sigma[:, None, None, None] * eps
    return ((model.eps(x, sigma, tokens) - eps) ** 2).mean()


def train(
    cfg: TrainConfig,
    steps: int,
    root: Path | None = None,
    ckpt_every: int = 200,
    log=print,
    time_limit: float | None = None,
    device: str = "cpu",
    workers: int = 0,
) -> Path:
    """Train (or continue) the recipe up to ``steps``; export the EMA weights; return the recipe folder.

    ``device`` moves the networks and batches (a GPU trains the same recipe in minutes; its float
    rounding differs from the CPU's, so the weights are close, not equal); ``workers`` render the
    batches ahead in that many processes.
    """
    folder = recipe_dir(cfg, root)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    torch.manual_seed(cfg.seed)
    pair = _Pair(cfg.model).to(device)
    opt = torch.optim.AdamW(pair.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup))
    gen = torch.Generator().manual_seed(cfg.seed)  # unused by the steps; kept for the checkpoint format
    fingerprint = {"recipe": cfg.recipe_hash()}
    step, losses = 0, []
    ckpts = complete_checkpoints(folder / "ckpt")
    if ckpts:
        _, step, extra = load_checkpoint(ckpts[-1], pair, opt, sched, gen, fingerprint, fmt=FORMAT, key="net")
        losses = extra.get("losses", [])
        log(f"resumed {folder.name} at step {step}")

    def checkpoint(step: int) -> None:
        save_checkpoint(
            folder / "ckpt",
            step,
            step,
            pair,
            opt,
            sched,
            gen,
            fingerprint,
            keep=1,
            fmt=FORMAT,
            key="net",
            extra={"losses": losses},
        )

    t0, window = time.time(), []
    batches = prefetched(functools.partial(training_batch, cfg), step, steps, workers)
    while step < steps:
        if time_limit is not None and time.time() - t0 > time_limit:
            log(f"time limit {time_limit:.0f}s reached at step {step}")
            break
        pair.model.train()
        loss = loss_at(pair.model, *(t.to(device) for t in next(batches)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(pair.model.parameters(), 1.0)
        opt.step()
        sched.step()
        ema_update(pair.ema, pair.model, cfg.ema_beta if step >= cfg.warmup else 0.0)
        step += 1
        window.append(loss.item())
        if step % 50 == 0 or step == steps:
            losses.append([step, sum(window) / len(window)])
            log(f"step {step} loss {losses[-1][1]:.4f} ({(time.time() - t0):.0f}s)")
            window = []
        if step % ckpt_every == 0 or step == steps:
            checkpoint(step)
    if step % ckpt_every and step != steps:  # stopped by the time limit between checkpoints
        checkpoint(step)
    batches.close()
    export(pair.ema, cfg, step, folder, losses, device=str(device))
    return folder


def export(model: ShapesUNet, cfg: TrainConfig, step: int, folder: Path, losses, device: str = "cpu") -> None:
    """``model.safetensors`` (EMA weights) + ``model.json`` (config, step, recipe, loss curve, device)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(folder / "model.safetensors", lambda t: save_file(tensors, str(t), metadata={"format": FORMAT}))
    meta = {
        "format": FORMAT,
        "step": step,
        "recipe": cfg.recipe_hash(),
        "train": cfg.to_dict(),
        "losses": losses,
        "device": device,
    }
    atomic_write(folder / "model.json", lambda t: t.write_text(json.dumps(meta, indent=1)))


def load_model(folder: Path) -> tuple[ShapesUNet, dict]:
    """The exported EMA model of a recipe folder, and its JSON metadata."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_path, weights = folder / "model.json", folder / "model.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        raise FileNotFoundError(f"no trained ShapesWorld model in {folder}: expected model.safetensors + model.json")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path} is not a {FORMAT} file")
    model = ShapesUNet(TrainConfig.from_dict(meta["train"]).model)
    model.load_state_dict(load_file(str(weights)), strict=True)
    return model.eval(), meta


def ensure_model(cfg: TrainConfig, steps: int, root: Path | None = None, log=print) -> tuple[ShapesUNet, dict]:
    """The cached model of the recipe if it has ``steps``; otherwise train (or continue) it first."""
    folder = recipe_dir(cfg, root)
    try:
        model, meta = load_model(folder)
        if meta["step"] >= steps:
            return model, meta
    except FileNotFoundError:
        pass
    train(cfg, steps, root, log=log)
    return load_model(folder)
