"""Saliency functions for ``regions.SaliencyMiner(saliency_fn=...)``, built on the auditor A_s.

Each factory returns ``fn(image [1,3,H,W] in [0,1], prompt) -> s [1,1,H,W] in [0,1]`` (a batch of B
images gives ``[B,1,H,W]``), on the image's device and dtype:

    risk_saliency          s(p) = max_c w_c · r_c(p)                  r_c the auditor's risk maps
    faithfulness_saliency  s(p) = 1 − norm(⟨z(p), e_t⟩)               z patch tokens, e_t text features
    fused_saliency         s(p) = Σ_k w_k · s_k(p) / Σ_k w_k

``norm`` is a per-image min-max over the patch grid, ``(x − min)/(max − min)``; an image whose patches
all match the prompt equally has no contrast and gets s = 0. The patch map is upsampled bilinearly
to H×W. Faithfulness saliency is the cheap stand-in for DESIGN.md's Grad-CAM of the text–image
similarity (``Auditor.similarity`` is differentiable for that); the Grad-CAM and its drift since
the last audit are a later issue.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

SaliencyFn = Callable[[torch.Tensor, str], torch.Tensor]


def _check_image(image: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[1] != 3 or image.shape[0] < 1:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be [B,3,H,W], got {shape}")


def _check_prompt(prompt: str) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-empty string")
    return prompt.strip()


def minmax_normalise(x: torch.Tensor) -> torch.Tensor:
    """Per-image ``(x − min)/(max − min)`` over all but the batch dim; 0 where max == min."""
    flat = x.reshape(x.shape[0], -1)
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    span = (hi - lo).reshape(-1, *([1] * (x.dim() - 1)))
    lo = lo.reshape_as(span)
    # a flat map carries no "where": it must not light up everywhere
    return torch.where(span > 0, (x - lo) / span.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(x))


def risk_saliency(auditor, weights: Mapping[str, float] | None = None) -> SaliencyFn:
    """``s = max_c w_c · r_c`` clamped to [0,1]; r_c = ``auditor.risk_maps`` (prompt-independent).

    ``weights`` maps class names to w_c >= 0; None weighs every class 1, and classes a dict leaves
    out weigh 0. A name the auditor does not score raises ValueError (a typo must not drop a class).
    """
    classes = tuple(auditor.classes)
    if weights is None:
        w = [1.0] * len(classes)
    else:
        unknown = sorted(set(weights) - set(classes))
        if unknown:
            raise ValueError(f"risk weights name unknown classes {unknown}; the auditor scores {list(classes)}")
        w = [float(weights.get(c, 0.0)) for c in classes]
        if any(not v >= 0 for v in w):  # also refuses NaN
            raise ValueError(f"risk weights must be >= 0, got {dict(weights)}")
    w_t = torch.tensor(w, dtype=torch.float32)

    def fn(image: torch.Tensor, prompt: str) -> torch.Tensor:
        _check_image(image)
        r = auditor.risk_maps(image).float()  # [B,C,H,W] in [0,1]
        if r.shape[1] == 0:
            return image.new_zeros(image.shape[0], 1, *image.shape[-2:])
        s = (w_t.to(r.device).view(1, -1, 1, 1) * r).amax(dim=1, keepdim=True)
        return s.clamp(0.0, 1.0).to(device=image.device, dtype=image.dtype)

    return fn


def faithfulness_saliency(auditor) -> SaliencyFn:
    """``s = 1 − norm(cos(z(p), e_t))``: high where a patch contributes least to matching the prompt.

    z [B,h,w,D] are the auditor's unit-norm patch tokens (``auditor.encode``), e_t the prompt's
    cached text feature (``auditor.text_features``); one image forward per call.
    """

    def fn(image: torch.Tensor, prompt: str) -> torch.Tensor:
        _check_image(image)
        prompt = _check_prompt(prompt)
        with torch.no_grad():
            e_t = auditor.text_features([prompt])[0].float()
            _, z = auditor.encode(image.clamp(0.0, 1.0))
            cos = torch.einsum("bhwd,d->bhw", z.float(), e_t.to(z.device))[:, None]
        # norm(−cos) = (max − cos)/(max − min) = 1 − norm(cos), and 0 (not 1) on a flat map
        s = minmax_normalise(-cos)
        s = F.interpolate(s, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return s.clamp(0.0, 1.0).to(device=image.device, dtype=image.dtype)

    return fn


def fused_saliency(fns_and_weights: Sequence[tuple[SaliencyFn, float]]) -> SaliencyFn:
    """``s = Σ_k w_k · s_k / Σ_k w_k`` (w_k >= 0, Σ w_k > 0): a weighted mean stays in [0,1].

    Every s_k must have the same shape; a term of weight 0 is not evaluated (no wasted forward).
    """
    terms = [(fn, float(w)) for fn, w in fns_and_weights]
    if not terms:
        raise ValueError("fused_saliency needs at least one (fn, weight)")
    if any(not callable(fn) for fn, _ in terms):
        raise ValueError("every term of fused_saliency must be a callable fn(image, prompt)")
    if any(not w >= 0 for _, w in terms):
        raise ValueError(f"fusion weights must be >= 0, got {[w for _, w in terms]}")
    total = sum(w for _, w in terms)
    if not total > 0:
        raise ValueError("fusion weights must not all be 0")
    active = [(fn, w) for fn, w in terms if w > 0]

    def fn(image: torch.Tensor, prompt: str) -> torch.Tensor:
        _check_image(image)
        acc = None
        for k, (f_k, w) in enumerate(active):
            s = f_k(image, prompt)
            want = (image.shape[0], 1, *image.shape[-2:])
            if tuple(s.shape) != want:
                raise ValueError(f"saliency term {k} returned {tuple(s.shape)}, expected {want}")
            acc = w * s.float() if acc is None else acc + w * s.float()
        return (acc / total).clamp(0.0, 1.0).to(device=image.device, dtype=image.dtype)

    return fn


__all__ = ["fused_saliency", "faithfulness_saliency", "minmax_normalise", "risk_saliency"]
