"""Regions: connected components, top-K with area limits, merging of overlaps, crops and composition.

A ``Region`` lives in the pixel space of one audit view ``[1, 3, H, W]``: a binary mask
``[1, 1, H, W]``, its bounding box ``(y0, x0, y1, x1)`` (end exclusive), its area in pixels and
its score (the saliency mass ``Σ_p s(p)`` over the region). ``SaliencyMiner`` fuses a saliency map
with any user mask and keeps the top K regions: step 3 of the audited step (docs/architecture.md).

A region may also carry its provenance and its own text, filled in by ``miner.RegionMiner``:
``signals`` (the saliency signals that raised it, strongest first, e.g. ``("text", "gradcam")``),
``prompt`` (the region prompt: the prompt's words that the Grad-CAM ties to it, or a user/LLM text)
and ``info`` (what the detectors saw: text, age).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kornia
import torch

from .masks import check_mask

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Region:
    mask: torch.Tensor
    bbox: Box
    area: int
    score: float
    signals: tuple[str, ...] = ()
    prompt: str | None = None
    info: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_mask(cls, mask: torch.Tensor, score: float | None = None) -> "Region":
        """A region from a binary mask ``[1, 1, H, W]``; raises ValueError when it is all zero."""
        check_mask(mask)
        if mask.shape[0] != 1:
            raise ValueError(f"mask must hold one region [1, 1, H, W], got {tuple(mask.shape)}")
        on = mask[0, 0] > 0
        if not on.any():
            raise ValueError("mask is all zero: a region needs at least one pixel")
        ys, xs = torch.nonzero(on, as_tuple=True)
        box = (int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1)
        area = int(on.sum())
        binary = on.to(mask.dtype)[None, None]
        return cls(binary, box, area, float(area if score is None else score))


def connected_components(mask: torch.Tensor) -> torch.Tensor:
    """8-connected labels ``[B, 1, H, W]`` (int64, 0 = background) of a binary mask, exact (kornia union-find)."""
    check_mask(mask)
    return kornia.contrib.connected_components_union_find((mask > 0).to(mask.dtype))


def boxes_overlap(a: Box, b: Box, margin: int = 0) -> bool:
    """Whether two boxes, each grown by ``margin`` pixels, intersect."""
    return not (
        a[2] + margin <= b[0] - margin
        or b[2] + margin <= a[0] - margin
        or a[3] + margin <= b[1] - margin
        or b[3] + margin <= a[1] - margin
    )


def merge_overlapping(regions: Sequence[Region], margin: int = 0) -> list[Region]:
    """Union every group of regions whose boxes (grown by ``margin``) overlap; scores add up."""
    merged = list(regions)
    changed = True
    while changed:
        changed = False
        for i in range(len(merged)):
            for j in range(i + 1, len(merged)):
                a, b = merged[i], merged[j]
                if boxes_overlap(a.bbox, b.bbox, margin):
                    union = torch.maximum(a.mask, b.mask)
                    merged[i] = Region.from_mask(union, score=a.score + b.score)
                    del merged[j]
                    changed = True
                    break
            if changed:
                break
    return merged


def top_k_regions(
    saliency: torch.Tensor,
    k: int,
    threshold: float = 0.5,
    min_area: int = 1,
    max_area: int | None = None,
    merge_margin: int = 0,
) -> list[Region]:
    """The K connected regions of ``saliency >= threshold`` with the largest saliency mass.

    Components with ``area < min_area`` or ``area > max_area`` are dropped before merging and
    ranking; overlapping boxes (within ``merge_margin``) are merged. Returns at most k regions,
    best first, possibly none.
    """
    check_mask(saliency, "saliency")
    if saliency.shape[0] != 1:
        raise ValueError(f"saliency must be one map [1, 1, H, W], got {tuple(saliency.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if min_area < 1 or (max_area is not None and max_area < min_area):
        raise ValueError(f"need 1 <= min_area <= max_area, got min_area={min_area}, max_area={max_area}")
    labels = connected_components((saliency >= threshold).to(saliency.dtype))[0, 0]
    # areas and masses of all components at once; only the survivors become Region objects
    ids, inverse = torch.unique(labels, return_inverse=True)
    areas = torch.bincount(inverse.reshape(-1), minlength=ids.numel())
    masses = torch.bincount(inverse.reshape(-1), weights=saliency[0, 0].reshape(-1).double(), minlength=ids.numel())
    keep = (ids != 0) & (areas >= min_area)
    if max_area is not None:
        keep &= areas <= max_area
    found = [
        Region.from_mask((inverse == j).to(saliency.dtype)[None, None], score=float(masses[j]))
        for j in torch.nonzero(keep).reshape(-1).tolist()
    ]
    found = merge_overlapping(found, merge_margin)
    found.sort(key=lambda r: (-r.score, r.bbox))
    return found[:k]


def context_box(bbox: Box, margin: int, size: tuple[int, int], align: int = 1) -> Box:
    """The bbox grown by a context margin, snapped outward to multiples of ``align``, inside ``size``."""
    if margin < 0 or align < 1:
        raise ValueError(f"need margin >= 0 and align >= 1, got margin={margin}, align={align}")
    h, w = size
    y0, x0, y1, x1 = bbox
    y0, x0 = max(0, y0 - margin) // align * align, max(0, x0 - margin) // align * align
    y1 = min(h, -(-(y1 + margin) // align) * align)
    x1 = min(w, -(-(x1 + margin) // align) * align)
    return (y0, x0, y1, x1)


def scale_box(box: Box, factor: int) -> Box:
    """A latent box in pixel units of a view with ``factor`` pixels per latent pixel."""
    return tuple(v * factor for v in box)  # type: ignore[return-value]


def crop(t: torch.Tensor, box: Box) -> torch.Tensor:
    """The ``box`` window of ``t[..., H, W]`` (a view; callers must not write to it)."""
    y0, x0, y1, x1 = box
    return t[..., y0:y1, x0:x1]


def compose(base: torch.Tensor, patch: torch.Tensor, box: Box, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Paste ``patch`` (batch N) into a copy of ``base`` (batch 1 or N) at ``box``.

    With a soft ``mask`` (the patch's size, batch 1 or N) the window becomes
    ``(1 - m)·base + m·patch``; where m == 0 the base is kept bit for bit. ``base`` is not modified.
    """
    y0, x0, y1, x1 = box
    if patch.shape[-2:] != (y1 - y0, x1 - x0):
        raise ValueError(f"patch of size {tuple(patch.shape[-2:])} does not fit the box {box}")
    n = patch.shape[0]
    out = base.expand(n, *base.shape[1:]).clone()
    window = out[..., y0:y1, x0:x1]
    if mask is None:
        window.copy_(patch)
    else:
        if mask.shape[-2:] != patch.shape[-2:]:
            raise ValueError(f"mask of size {tuple(mask.shape[-2:])} does not match the patch")
        window.copy_(torch.where(mask == 0, window, (1 - mask) * window + mask * patch))
    return out


class SaliencyMiner:
    """Top-K regions of a fused saliency map: ``s(p) = max(saliency_fn(image)(p), user_mask(p))``.

    ``saliency_fn(image [1,3,H,W], prompt) -> [1,1,H,W]`` in [0, 1] (Grad-CAM, detector priors,
    feature differences); ``user_mask`` is a pixel mask at the view's size (resized if not).
    Area limits are fractions of the view, so they mean the same at every audit resolution;
    ``merge_margin`` is in view pixels.
    """

    def __init__(
        self,
        saliency_fn: Callable[[torch.Tensor, str], torch.Tensor] | None,
        k: int = 3,
        threshold: float = 0.5,
        min_area_frac: float = 0.0,
        max_area_frac: float = 1.0,
        merge_margin: int = 0,
    ):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not 0.0 <= min_area_frac <= max_area_frac <= 1.0:
            raise ValueError(f"need 0 <= min_area_frac <= max_area_frac <= 1, got {min_area_frac}, {max_area_frac}")
        self.saliency_fn = saliency_fn
        self.k, self.threshold = k, threshold
        self.min_area_frac, self.max_area_frac, self.merge_margin = min_area_frac, max_area_frac, merge_margin

    def saliency(self, image: torch.Tensor, prompt: str, user_mask: torch.Tensor | None = None) -> torch.Tensor:
        h, w = image.shape[-2:]
        sal = image.new_zeros(1, 1, h, w) if self.saliency_fn is None else self.saliency_fn(image, prompt)
        if user_mask is not None:
            check_mask(user_mask, "user_mask")
            if user_mask.shape[-2:] != (h, w):
                user_mask = torch.nn.functional.interpolate(user_mask.to(sal), size=(h, w), mode="nearest")
            sal = torch.maximum(sal, user_mask[:1].to(sal))
        return sal

    def __call__(self, image: torch.Tensor, prompt: str, user_mask: torch.Tensor | None = None) -> list[Region]:
        total = image.shape[-2] * image.shape[-1]
        min_area = max(1, math.ceil(self.min_area_frac * total - 1e-9))
        max_area = max(min_area, math.floor(self.max_area_frac * total + 1e-9))
        sal = self.saliency(image, prompt, user_mask)
        threshold = self.threshold
        if self.max_area_frac < 1.0:
            # A flat map (e.g. an early, noisy view) would put most pixels above a fixed threshold
            # in one component larger than max_area, which is then dropped and nothing is mined.
            # Raising the threshold to the (1 - max_area) quantile keeps the most salient part.
            flat = sal.flatten().float()
            q = torch.quantile(flat, 1.0 - self.max_area_frac)
            if float((flat >= q).float().mean()) > self.max_area_frac:
                above = flat[flat > q]  # ties at the quantile: step to the next distinct value
                q = above.min() if above.numel() else q
            threshold = max(threshold, float(q))
        return top_k_regions(sal, self.k, threshold, min_area, max_area, self.merge_margin)
