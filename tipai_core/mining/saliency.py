"""The auditor's saliency maps for the region miner (step 3 of an audited step), built on A_s.

``norm`` is a per-image min-max over the patch grid, ``(x − min)/(max − min)``; a map with no
contrast gets s = 0. Patch maps are upsampled bilinearly to the view's H×W.

Auditor Grad-CAM. With a_j ∈ R^D the tokens that enter the image tower's last
block (patch j of an h×w grid; any class token dropped) and S the auditor's text–image score:

    α      = (1/hw) Σ_j ∂S/∂a_j                 channel weights, pooled over the patches
    cam(j) = ⟨α, a_j⟩                            how much patch j pushes S up
    gradcam_map       s = 1 − norm(cam)          faithfulness map: where the image contributes least
    drift             δ(j) = |s_t(j) − s_{t−1}(j)|                   s of consecutive audits of a run
    feature_change    Δ(j) = (1 − cos(z_t(j), z_{t−1}(j))) / 2         output patch tokens z

Drift and feature change are exactly 0 for identical views (the forward is deterministic) and 0 at
the first audit of a run. A constant image has no "where": every auditor map of it is 0, so the
model's position embeddings cannot raise regions on a blank view.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import interrupt


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


# ----------------------------------------------------------------------------- Grad-CAM and drift

_WARNED: set[str] = set()


def _warn_once(msg: str) -> None:
    if msg not in _WARNED:
        _WARNED.add(msg)
        import logging

        logging.getLogger(__name__).warning(msg)


BLANK_STD = 1e-3  # a view whose pixels vary less than this is blank: no auditor map is spatial there


def is_blank(image: torch.Tensor) -> torch.Tensor:
    """[B] bool: the image is constant (up to BLANK_STD), so no saliency map can say "where"."""
    return image.float().flatten(1).std(dim=1, unbiased=False) < BLANK_STD


def gradcam_layer(auditor) -> torch.nn.Module:
    """The module whose *input* are the patch tokens a_j: the last block of the image tower.

    A backbone may name it (attribute ``gradcam_layer``); otherwise open_clip ViTs
    (``visual.transformer.resblocks[-1]``) and transformers CLIP (``vision_model.encoder.layers[-1]``).
    """
    bb = getattr(auditor, "backbone", auditor)
    named = getattr(bb, "gradcam_layer", None)
    if isinstance(named, torch.nn.Module):
        return named
    model = getattr(bb, "model", None)
    for path in (("visual", "transformer", "resblocks"), ("vision_model", "encoder", "layers")):
        m = model
        for name in path:
            m = getattr(m, name, None)
        if isinstance(m, (torch.nn.ModuleList, torch.nn.Sequential)) and len(m):
            return m[-1]
    raise ValueError(
        f"Grad-CAM needs a ViT image tower; {type(bb).__name__} exposes no transformer blocks "
        f"(give the backbone a 'gradcam_layer' module)"
    )


def _as_grid(a: torch.Tensor, batch: int) -> torch.Tensor:
    """Block input [B,L,D] (or [L,B,D]) with L = hw or 1 + hw -> [B,h,w,D]."""
    if a.dim() == 4:
        return a
    if a.shape[0] != batch and a.shape[1] == batch:
        a = a.transpose(0, 1)
    n = a.shape[1]
    for drop in (0, 1):
        side = math.isqrt(n - drop)
        if side * side == n - drop:
            return a[:, drop:].reshape(batch, side, side, a.shape[-1])
    raise ValueError(f"Grad-CAM: {n} tokens do not form a square patch grid (with or without a class token)")


@dataclass
class AuditorFeatures:
    """One differentiable auditor pass over a view: cam [B,h,w] (⟨α, a_j⟩), the output patch tokens
    z [B,h,w,D] (unit norm), S [B], and per extra text (e.g. the prompt's words) its cam [B,T,h,w]."""

    cam: torch.Tensor
    tokens: torch.Tensor
    score: torch.Tensor
    text_cams: torch.Tensor | None = None


def _grab_into(held: list):
    """A forward pre-hook that swaps the block's input for a fresh leaf (kept in ``held``), so the
    gradient w.r.t. the tokens exists whatever requires_grad the weights have."""

    def grab(module, args):
        a = args[0].detach().requires_grad_(True)
        held.append(a)
        return (a, *args[1:])

    return grab


def auditor_features(auditor, image: torch.Tensor, prompt: str, texts: Sequence[str] = ()) -> AuditorFeatures:
    """Grad-CAM of S(prompt, image) at the last block's input tokens, in one forward of the tower and
    one backward per text (the prompt, then each of ``texts``); see the module docstring."""
    _check_image(image)
    prompt = _check_prompt(prompt)
    layer = gradcam_layer(auditor)
    held: list[torch.Tensor] = []
    b = image.shape[0]
    texts = list(texts)
    handle = layer.register_forward_pre_hook(_grab_into(held))
    try:
        # ComfyUI runs nodes under inference_mode; autograd needs it off here
        with torch.inference_mode(False), torch.enable_grad():
            e_img, z = auditor.encode(image.clamp(0.0, 1.0).clone())
            if len(held) != 1:
                raise RuntimeError(f"Grad-CAM: the hooked block ran {len(held)} times in one forward")
            a = held[0]
            heads = auditor.heads
            # cached text features may be inference tensors (made under ComfyUI's inference_mode):
            # a clone made here is a normal tensor that autograd may save
            feats = auditor.text_features([prompt, *texts]).clone()

            def cam_of(e_t: torch.Tensor, last: bool) -> tuple[torch.Tensor, torch.Tensor]:
                interrupt.check()  # one backward per text: a Cancel takes effect between them
                s = heads.global_score(e_img, e_t, z)
                (g,) = torch.autograd.grad(s.sum(), a, retain_graph=not last, allow_unused=True)
                g = torch.zeros_like(a) if g is None else g
                ag, gg = _as_grid(a.detach(), b).float(), _as_grid(g, b).float()
                alpha = gg.mean(dim=(1, 2), keepdim=True)  # [B,1,1,D]
                return (alpha * ag).sum(-1), s.detach()

            cam, score = cam_of(feats[0], last=not texts)
            extra = [cam_of(feats[1 + i], last=i == len(texts) - 1)[0] for i in range(len(texts))]
    except RuntimeError as err:
        if "nference tensor" not in str(err):
            raise
        handle.remove()
        # weights loaded under inference_mode cannot enter autograd: fall back to the gradient-free
        # patch–text match ⟨z_j, e_t⟩ (what the cam approximates), and say so once
        _warn_once(
            "Grad-CAM: the auditor's weights are inference tensors (loaded under torch.inference_mode), "
            "so the faithfulness map falls back to the patch-text match <z_j, e_t>"
        )
        with torch.no_grad():
            _, z = auditor.encode(image.clamp(0.0, 1.0))
            feats = auditor.text_features([prompt, *texts]).float()
            zz = z.float()
            cam = torch.einsum("bhwd,d->bhw", zz, feats[0].to(zz.device))
            score = torch.zeros(b)
            extra = [torch.einsum("bhwd,d->bhw", zz, feats[1 + i].to(zz.device)) for i in range(len(texts))]
    finally:
        handle.remove()
    blank = is_blank(image).to(cam.device)
    cam = torch.where(blank[:, None, None], torch.zeros_like(cam), cam)
    text_cams = torch.stack(extra, dim=1) if extra else None
    return AuditorFeatures(cam.detach(), z.detach().float(), score.float(), text_cams)


def word_cams(auditor, image: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
    """Grad-CAM of S(text_t, image) for every text at once: ``[T, h, w]`` for one image ``[1, C, H, W]``.

    One forward of the tower over the image repeated T times, row t scored against text t, and one
    backward of Σ_t S_t: rows of a batch do not interact, so row t of the gradient is ∂S_t/∂a, the
    same cam ``auditor_features`` computes with one backward per text.
    """
    _check_image(image)
    if image.shape[0] != 1:
        raise ValueError(f"word_cams takes one image, got a batch of {image.shape[0]}")
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise ValueError("word_cams needs at least one non-empty text")
    layer = gradcam_layer(auditor)
    held: list[torch.Tensor] = []
    n = len(texts)
    handle = layer.register_forward_pre_hook(_grab_into(held))
    try:
        with torch.inference_mode(False), torch.enable_grad():
            e_img, z = auditor.encode(image.clamp(0.0, 1.0).expand(n, *image.shape[1:]).clone())
            if len(held) != 1:
                raise RuntimeError(f"Grad-CAM: the hooked block ran {len(held)} times in one forward")
            a = held[0]
            feats = auditor.text_features(texts).clone()
            interrupt.check()
            s = auditor.heads.global_score(e_img, feats, z)
            (g,) = torch.autograd.grad(s.sum(), a, allow_unused=True)
            g = torch.zeros_like(a) if g is None else g
            ag, gg = _as_grid(a.detach(), n).float(), _as_grid(g, n).float()
            cams = (gg.mean(dim=(1, 2), keepdim=True) * ag).sum(-1)
    except RuntimeError as err:
        if "nference tensor" not in str(err):
            raise
        handle.remove()
        with torch.no_grad():  # the same fallback as auditor_features: the patch-text match
            _, z = auditor.encode(image.clamp(0.0, 1.0))
            feats = auditor.text_features(texts).float()
            cams = torch.einsum("hwd,td->thw", z[0].float(), feats.to(z.device))
    finally:
        handle.remove()
    return cams.detach()


def upsample_grid(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A patch map [B,h,w] -> [B,1,H,W] (bilinear), clamped to [0,1]."""
    return F.interpolate(grid[:, None].float(), size=size, mode="bilinear", align_corners=False).clamp(0.0, 1.0)


def gradcam_map(cam: torch.Tensor) -> torch.Tensor:
    """The faithfulness patch map ``1 − norm(cam)`` [B,h,w]; 0 on a flat cam (blank view)."""
    return minmax_normalise(-cam[:, None])[:, 0]


def drift_map(cam: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
    """``δ = |f_t − f_{t−1}|`` [B,h,w] in [0,1], f = ``gradcam_map`` (the faithfulness map, 0 when
    flat); 0 without a previous audit or when the grids differ (a new run or another auditor)."""
    if previous is None or previous.shape != cam.shape:
        return torch.zeros_like(cam)
    return (gradcam_map(cam) - gradcam_map(previous.to(cam))).abs().clamp(0.0, 1.0)


def feature_change_map(tokens: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
    """``Δ = (1 − cos(z_t, z_{t−1}))/2`` [B,h,w] in [0,1] from patch tokens [B,h,w,D]; 0 without a
    previous audit or when the grids differ."""
    if previous is None or previous.shape != tokens.shape:
        return tokens.new_zeros(tokens.shape[:3])
    cos = F.cosine_similarity(tokens.float(), previous.to(tokens).float(), dim=-1)
    return ((1.0 - cos) / 2.0).clamp(0.0, 1.0)


def prompt_mismatch_map(tokens: torch.Tensor, e_t: torch.Tensor) -> torch.Tensor:
    """``1 − norm(⟨z(p), e_t⟩)`` [B,h,w]: the feature-difference map between patches and the prompt
    (the same map as ``faithfulness_saliency``, from tokens already computed)."""
    cos = torch.einsum("bhwd,d->bhw", tokens.float(), e_t.float().to(tokens.device))[:, None]
    return minmax_normalise(-cos)[:, 0]


__all__ = [
    "AuditorFeatures",
    "auditor_features",
    "drift_map",
    "feature_change_map",
    "gradcam_layer",
    "gradcam_map",
    "is_blank",
    "minmax_normalise",
    "prompt_mismatch_map",
    "upsample_grid",
]
