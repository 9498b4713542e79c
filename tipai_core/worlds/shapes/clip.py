"""The auditor's backbone for ShapesWorld: a tiny open_clip model trained contrastively here.

Architecture ``shapes-tiny-clip`` (``configs/shapes-tiny-clip.json``): a 3-layer ViT on 32×32
inputs with 4×4 patches (an 8×8 grid of patch tokens for S_R and saliency) and a 2-layer text
transformer with open_clip's own BPE tokenizer (shipped inside open_clip, nothing downloaded).

Objective: symmetric InfoNCE over a batch of (image, prompt) pairs, with hard negatives (as in
NegCLIP): every image also faces the text of ``grammar.corrupt`` of its own prompt, so the
contrast includes swapped bindings, reversed relations and wrong counts:

    L = ½·CE(s·E_iᵀ[E_t; E_t⁻], diag) + ½·CE(s·E_tᵀE_i, diag)

The weights are saved as one ``.safetensors`` file that ``auditor.backbones.load_open_clip``
(``arch="shapes-tiny-clip"``, ``config_dir=CONFIG_DIR``) loads, so Stage A (``python -m
tipai_core.train scorer``) and the Auditor use it like any other local open_clip model.
"""

from __future__ import annotations

import functools
import json
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ...auditor.backbones import OPENAI_MEAN, OPENAI_STD, OpenClipBackbone, register_config_dir
from ...records.files import atomic_write
from .dataset import _rng, scene_for
from .grammar import corrupt, describe, sample_spec
from .prefetch import prefetched
from .render import render

ARCH = "shapes-tiny-clip"
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
CLIP_STREAM = 3  # the contrastive pairs never reuse the base model's or the evaluation's draws


def build(seed: int = 0) -> OpenClipBackbone:
    """A fresh (random) backbone of the tiny architecture, trainable."""
    import open_clip

    register_config_dir(CONFIG_DIR)
    torch.manual_seed(seed)
    model = open_clip.create_model(ARCH, pretrained=None, device="cpu")
    cfg = open_clip.get_model_config(ARCH)
    tok = open_clip.tokenizer.SimpleTokenizer(context_length=cfg["text_cfg"]["context_length"])
    return OpenClipBackbone(model, tok, ARCH, cfg["embed_dim"], OPENAI_MEAN, OPENAI_STD)


def clip_batch(step: int, batch: int, size: int, seed: int = 0) -> tuple[torch.Tensor, list[str], list[str]]:
    """(images, prompts, corrupted prompts) of one step, a pure function of (seed, step)."""
    imgs, pos, neg = [], [], []
    for i in range(batch):
        rng = _rng((seed * 1_000_003 + step) * batch + i, CLIP_STREAM)
        spec = sample_spec(rng)
        imgs.append(render(scene_for(spec, rng), size))
        pos.append(describe(spec))
        neg.append(describe(corrupt(spec, random.Random(rng.random()))))
    return torch.stack(imgs), pos, neg


def contrastive_loss(bb: OpenClipBackbone, images, prompts, negatives) -> tuple[torch.Tensor, float]:
    """(L, image→text top-1 accuracy against prompts + hard negatives)."""
    e_i, _ = bb.encode_image(images)
    e_t = bb.encode_text(prompts + negatives)
    s = bb.model.logit_scale.exp().clamp(max=100.0)
    logits = s * e_i @ e_t.T  # [B, 2B]
    target = torch.arange(images.shape[0], device=logits.device)
    loss = 0.5 * F.cross_entropy(logits, target) + 0.5 * F.cross_entropy(logits[:, : len(prompts)].T, target)
    return loss, float((logits.argmax(1) == target).float().mean())


def train_clip(
    out: Path,
    steps: int = 1500,
    batch: int = 128,
    size: int = 24,
    lr: float = 1e-3,
    seed: int = 0,
    log=print,
    device: str = "cpu",
    workers: int = 0,
) -> Path:
    """Train and write ``out`` (weights) + ``out.json`` (settings, loss curve). ``device`` and
    ``workers`` (batches rendered ahead in processes) change the speed, not the recipe."""
    from safetensors.torch import save_file

    bb = build(seed).to(device)
    bb.model.train()
    opt = torch.optim.AdamW([p for p in bb.model.parameters() if p.requires_grad], lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / 100) * 0.5 * (1 + torch.cos(torch.tensor(min(s, steps) / steps * 3.14159265)).item())
        ),
    )
    curve, t0, win = [], time.time(), []
    for step, (images, prompts, negatives) in enumerate(
        prefetched(functools.partial(clip_batch, batch=batch, size=size, seed=seed), 0, steps, workers)
    ):
        loss, acc = contrastive_loss(bb, images.to(device), prompts, negatives)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        win.append((loss.item(), acc))
        if (step + 1) % 50 == 0 or step + 1 == steps:
            l, a = (sum(v) / len(win) for v in zip(*win))
            curve.append([step + 1, l, a])
            log(f"clip step {step + 1} loss {l:.3f} i2t-acc(vs hard negatives) {a:.3f} ({time.time() - t0:.0f}s)")
            win = []
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in bb.model.state_dict().items()}
    atomic_write(out, lambda t: save_file(tensors, str(t)))
    meta = {
        "arch": ARCH,
        "steps": steps,
        "batch": batch,
        "size": size,
        "lr": lr,
        "seed": seed,
        "curve": curve,
        "device": str(device),
    }
    atomic_write(out.with_suffix(".json"), lambda t: t.write_text(json.dumps(meta, indent=1)))
    return out
