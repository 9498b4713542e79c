"""Stage B1's objective and validation metrics, on the frozen auditor.

For a batch of regions (view = the rejected image I, target Y = the chosen image I⁺, hard mask h) and the
editor's composite Ĩ = X ⊙ (1 − h) + Î ⊙ h:

    L_inpaint = β1·‖(Î − Y) ⊙ h‖₁ + β2·(1 − CLIP_R(p, Ĩ)) + β3·Risk_R(Ĩ) + β4·d_ring(Ĩ, Y)
    L_pref    = −log [ exp(⟨f(Ĩ), f(I⁺)⟩/τ) / (exp(⟨f(Ĩ), f(I⁻)⟩/τ) + exp(⟨f(Ĩ), f(I)⟩/τ)) ]
    L_G       = L_inpaint + β5·L_pref

* CLIP_R, the design's CLIP(p, Î_R), is the cosine of the auditor's patch tokens pooled over h with
  the prompt's features (bounded, unlike the heads' region score S_R, which validation reports);
  Risk_R is the auditor's risk map pooled over h (the largest class);
* d_ring is LPIPS (the auditor's seam measure, with a local LPIPS backbone) or its DSSIM fallback, on
  the ring dilate(h) − erode(h), which straddles the boundary so the inside half carries the gradient;
* f is the auditor's normalised image embedding. A pair holds one rejected image, which is also the
  unedited one, so I⁻ = I there and the denominator counts it twice.

The L1 term is a mean per masked value, the others means over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..auditor.seam import ring_mask


@dataclass(frozen=True)
class EditorLossWeights:
    l1: float = 1.0
    clip: float = 0.1
    risk: float = 0.1
    ring: float = 0.5
    pref: float = 0.1
    tau: float = 0.1
    ring_width: int = 2


def grid_weights(hard: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The region as weights on the auditor's token grid ``[B, h, w]``."""
    return F.adaptive_avg_pool2d(hard.float(), (tokens.shape[1], tokens.shape[2]))[:, 0].to(tokens.dtype)


def auditor_terms(auditor, images: torch.Tensor, text: torch.Tensor, hard: torch.Tensor):
    """(S_R [B], CLIP_R [B], Risk_R [B], f [B, D]) of ``images`` in [0, 1], differentiable in the images.

    CLIP_R is the cosine of the region's pooled patch tokens with the prompt, in [-1, 1]: the bounded
    similarity the loss uses (S_R, the heads' unbounded region score, is what the guard judges; a loss
    on it rewards pushing the score past any real image's, which is how an editor learns to fool it)."""
    e_img, tokens = auditor.encode(images.clamp(0.0, 1.0))
    heads = auditor.heads
    wts = grid_weights(hard, tokens)
    s_r = heads.pool_region(heads.patch_scores(tokens, text), wts)
    pooled = (tokens.float() * wts[..., None].float()).flatten(1, 2).sum(1)
    clip_r = (F.normalize(pooled, dim=-1) * F.normalize(text.float(), dim=-1)).sum(-1)
    risk = torch.sigmoid(heads.risk_logits(tokens)).amax(1)  # [B, h, w], the largest class
    risk_r = heads.pool_region(risk, wts)
    return s_r, clip_r, risk_r, F.normalize(e_img.float(), dim=-1)


def ring_distance(auditor, images: torch.Tensor, target: torch.Tensor, hard: torch.Tensor, width: int) -> torch.Tensor:
    """d_ring [B]: the seam measure's distance map averaged over the ring around h."""
    ring = ring_mask(hard.float(), width)
    d = auditor.seam.distance_map(images.clamp(0.0, 1.0), target).to(ring)
    return (d * ring).flatten(1).sum(1) / ring.flatten(1).sum(1).clamp_min(1.0)


def editor_loss(
    auditor,
    w: EditorLossWeights,
    pred: torch.Tensor,
    composite: torch.Tensor,
    target: torch.Tensor,
    hard: torch.Tensor,
    text: torch.Tensor,
    f_chosen: torch.Tensor,
    f_rejected: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, float]]:
    """(L_G, its terms as floats); ``text [B, D]`` the prompts' features, ``f_*`` the pairs' embeddings."""
    h = hard.to(pred)
    l1 = ((pred - target).abs() * h).sum() / (h.sum() * pred.shape[1]).clamp_min(1.0)
    _, clip_r, risk_r, f = auditor_terms(auditor, composite, text, hard)
    l_clip = (1.0 - clip_r).mean()
    l_risk = risk_r.mean()
    l_ring = ring_distance(auditor, composite, target, hard, w.ring_width).mean()
    pos = (f * f_chosen).sum(-1) / w.tau
    neg = (f * f_rejected).sum(-1) / w.tau
    l_pref = (torch.logsumexp(torch.stack([neg, neg]), 0) - pos).mean()  # I⁻ = I: the rejected, twice
    loss = w.l1 * l1 + w.clip * l_clip + w.risk * l_risk + w.ring * l_ring + w.pref * l_pref
    parts = {"l1": l1, "clip": l_clip, "risk": l_risk, "ring": l_ring, "pref": l_pref, "total": loss}
    return loss, {k: float(v.detach()) for k, v in parts.items()}


def crops(images: torch.Tensor, hard: torch.Tensor, size: int, margin: int = 2) -> torch.Tensor:
    """Each image's bounding box of its region (plus ``margin`` pixels), resized to ``size`` ``[B, 3, s, s]``."""
    out = []
    _, _, hh, ww = images.shape
    for img, m in zip(images, hard):
        ys, xs = torch.nonzero(m[0] > 0, as_tuple=True)
        y0, y1 = max(int(ys.min()) - margin, 0), min(int(ys.max()) + 1 + margin, hh)
        x0, x1 = max(int(xs.min()) - margin, 0), min(int(xs.max()) + 1 + margin, ww)
        out.append(F.interpolate(img[None, :, y0:y1, x0:x1], size=(size, size), mode="bilinear", align_corners=False))
    return torch.cat(out)


@torch.no_grad()
def region_metrics(
    auditor, edited: torch.Tensor, before: torch.Tensor, target: torch.Tensor, hard: torch.Tensor, text: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-pair validation values of ``edited`` against the unedited ``before``:

    * ``delta_r``: patch risk reduction, Risk_R(before) − Risk_R(edited);
    * ``delta_clip``: ⟨e(crop), e_t⟩ of the region's crop, edited minus before;
    * ``delta_s_r``: the auditor's region score S_R, edited minus before (``win``: it rose);
    * ``ring``: the boundary distance of the edited image to the target on the ring;
    * ``l1``: mean |edited − target| inside the region.
    """
    s_e, _, r_e, _ = auditor_terms(auditor, edited, text, hard)
    s_b, _, r_b, _ = auditor_terms(auditor, before, text, hard)
    size = int(getattr(auditor.backbone, "image_size", edited.shape[-1]))
    ce, _ = auditor.encode(crops(edited.clamp(0, 1), hard, size))
    cb, _ = auditor.encode(crops(before, hard, size))
    tn = F.normalize(text.float(), dim=-1)
    clip_e = (F.normalize(ce.float(), dim=-1) * tn).sum(-1)
    clip_b = (F.normalize(cb.float(), dim=-1) * tn).sum(-1)
    h = hard.to(edited)
    l1 = ((edited - target).abs() * h).flatten(1).sum(1) / (h.flatten(1).sum(1) * edited.shape[1]).clamp_min(1.0)
    return {
        "delta_r": (r_b - r_e).float(),
        "delta_clip": (clip_e - clip_b).float(),
        "delta_s_r": (s_e - s_b).float(),
        "win": (s_e > s_b).float(),
        "ring": ring_distance(auditor, edited, target, hard, 2).float(),
        "l1": l1.float(),
    }


__all__ = ["EditorLossWeights", "auditor_terms", "crops", "editor_loss", "region_metrics", "ring_distance"]
