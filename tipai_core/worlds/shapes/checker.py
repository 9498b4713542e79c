"""The ShapesWorld checker: per-clause verdicts from colour segmentation and geometry.

Per pixel p of an RGB image in [0, 1]:

* chroma ``χ(p) = max_c I_c(p) - min_c I_c(p)`` (zero on the white background; a pixel mixing a
  palette colour k with white at coverage a has ``χ = a·χ_k`` and the hue of k);
* colour label ``k(p)`` = palette colour of nearest hue; coverage ``c(p) = clip(χ(p)/χ_k, 0, 1)``.

Objects are the connected components (8-connectivity) of ``{c > 0.5, k = colour}`` per colour,
with soft area ``A = Σ c'`` over the component grown by one pixel (anti-aliased edges count;
``c' = clip((c - 0.15)/0.7, 0, 1)`` ignores noise of ±0.15);
components with ``A < min_area·H·W`` are noise. Shape: with soft extents
``W = Σ_x max_y c``, ``H = Σ_y max_x c`` and box centre ``ȳ_box`` (profile-weighted), the
vertical skew ``κ_y = (ȳ_mass - ȳ_box) / H`` is 1/6 for an apex-up triangle and 0 for circle and
square, so κ_y > 0.08 means triangle (robust to blur, unlike the fill ratio at small sizes).
Otherwise the diagonal-to-axis extent ratio decides: from the box centre, the soft extent along a ray
is ``∫ c ds`` (bilinear samples every ¼ px), and ``q = mean(diagonal rays) / mean(axis rays)`` is √2
for an ideal square and 1 for a circle; blur adds about the same length to every ray, so q stays
apart (rendered: circles 0.97–1.05, squares 1.24–1.35; generated, read by eye: circles 0.91–1.01,
soft and ragged squares 1.10–1.33). q ≥ 1.07 means square, else circle. The fill ratio and the
corner fill this replaced read soft-edged generated squares as circles (by-eye agreement 82%).

Verdicts (grammar.py clause types): binding — some object has colour c and shape s; count —
exactly n such objects; relation — some object matching a and some matching b whose centres
satisfy the relation (``render.relation_holds``, margin 0).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from .grammar import Clause, parse
from .render import COLOURS, PALETTE, ShapeSpec, relation_holds

_HUES = np.array([colorsys.rgb_to_hsv(*PALETTE[c])[0] for c in COLOURS])
_CHROMA = np.array([max(PALETTE[c]) - min(PALETTE[c]) for c in COLOURS])
CHECKER_VERSION = 2  # bumped when a verdict rule changes: cached labels (Stage C logs) depend on it
TRIANGLE_MIN_SKEW = 0.08
SQUARE_MIN_RATIO = 1.07


@dataclass(frozen=True)
class Detection:
    """An object found in an image: colour, shape, centre (fractions of the side), soft area (px), fill ρ."""

    colour: str
    shape: str
    cx: float
    cy: float
    area: float
    fill: float
    w: float = 0.0  # soft extents, fractions of the side
    h: float = 0.0
    skew: float = 0.0  # the shape features the verdict came from (see the module docstring)
    corner: float = 0.0


def diagonal_ratio(c: np.ndarray, cx: float, cy: float) -> float:
    """q = mean soft extent along the 4 diagonal rays / along the 4 axis rays, from (cx, cy) in pixels."""
    h, w = c.shape
    steps = np.arange(0.0, float(max(h, w)), 0.25)
    ext: list[float] = []
    for k in range(8):
        t = k * np.pi / 4
        xs, ys = cx + steps * np.cos(t) - 0.5, cy + steps * np.sin(t) - 0.5  # pixel centres at +0.5
        ext.append(ndimage.map_coordinates(c, [ys, xs], order=1, mode="constant").sum() * 0.25)
    arr = np.asarray(ext)
    return float(arr[1::2].mean() / max(arr[0::2].mean(), 1e-9))


def _hue(img: np.ndarray) -> np.ndarray:
    r, g, b = img
    mx, mn = img.max(0), img.min(0)
    d = np.where(mx - mn > 1e-6, mx - mn, 1.0)
    h = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
    return h / 6.0


class Checker:
    """Detects objects and judges clauses. ``min_area``: smallest object as a fraction of H·W."""

    def __init__(self, min_area: float = 0.01, min_chroma: float = 0.08):
        self.min_area = min_area
        self.min_chroma = min_chroma

    def detect(self, image: torch.Tensor) -> list[Detection]:
        """Objects of one image ``[3, H, W]`` in [0, 1]."""
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"image must be [3, H, W], got {tuple(image.shape)}")
        img = image.detach().to(torch.float64).clamp(0, 1).cpu().numpy()
        h, w = img.shape[1:]
        chroma = img.max(0) - img.min(0)
        hue = _hue(img)
        dist = np.abs(hue[None] - _HUES[:, None, None])
        dist = np.minimum(dist, 1 - dist)  # hue is circular
        label = dist.argmin(0)
        cov = np.clip(chroma / _CHROMA[label], 0, 1) * (chroma > self.min_chroma)
        out: list[Detection] = []
        for k, name in enumerate(COLOURS):
            ck = np.where(label == k, cov, 0.0)
            comps, n = ndimage.label(ck > 0.5, structure=np.ones((3, 3)))
            for idx in range(1, n + 1):
                region = ndimage.binary_dilation(comps == idx, structure=np.ones((3, 3)))
                # dead zone: noise of up to ±0.15 in coverage (generated images) neither adds
                # background mass nor removes interior mass; symmetric, so edges stay unbiased
                c = np.where(region, np.clip((ck - 0.15) / 0.7, 0, 1), 0.0)
                area = c.sum()
                if area < self.min_area * h * w:
                    continue
                colx, rowy = c.max(0), c.max(1)  # soft column / row profiles of the object
                wx, wy = colx.sum(), rowy.sum()
                fill = area / max(wx * wy, 1e-9)
                xs, ys = np.arange(w) + 0.5, np.arange(h) + 0.5
                # box centre from the profiles (the renderer's (cx, cy) is the box centre), and
                # the vertical skew of the mass: an apex-up triangle's centroid sits H/6 below it
                cx, cy = (colx * xs).sum() / wx, (rowy * ys).sum() / wy
                skew = ((c.sum(1) * ys).sum() / area - cy) / wy
                # corner fill (reported only): mean coverage where the box lies outside its inscribed ellipse
                u = (xs[None, :] - cx) / max(wx / 2, 1e-9)
                v = (ys[:, None] - cy) / max(wy / 2, 1e-9)
                zone = (np.abs(u) < 1) & (np.abs(v) < 1) & (u * u + v * v > 1.3)
                corner = float(c[zone].mean()) if zone.sum() >= 4 else 0.0
                if skew > TRIANGLE_MIN_SKEW:
                    shape = "triangle"
                elif diagonal_ratio(c, cx, cy) >= SQUARE_MIN_RATIO:
                    shape = "square"
                else:
                    shape = "circle"
                cx, cy = cx / w, cy / h
                out.append(
                    Detection(
                        name,
                        shape,
                        float(cx),
                        float(cy),
                        float(area),
                        float(fill),
                        float(wx / w),
                        float(wy / h),
                        float(skew),
                        corner,
                    )
                )
        return out

    @staticmethod
    def judge(clause: Clause, found: list[Detection]) -> bool:
        """Verdict of one clause on the detections of one image."""
        match_a = [d for d in found if d.colour == clause.colour and d.shape == clause.shape]
        if clause.type == "binding":
            return len(match_a) > 0
        if clause.type == "count":
            return len(match_a) == clause.n
        if clause.type == "relation":
            kind = clause.relation
            if kind is None:
                raise ValueError("a 'relation' clause needs a relation (e.g. 'left of'), got None")
            match_b = [d for d in found if d.colour == clause.colour2 and d.shape == clause.shape2]

            def spec(d: Detection) -> ShapeSpec:
                return ShapeSpec(d.shape, d.colour, d.cx, d.cy, 0.1)

            return any(a is not b and relation_holds(kind, spec(a), spec(b)) for a in match_a for b in match_b)
        raise ValueError(f"unknown clause type {clause.type!r}")

    def __call__(self, image: torch.Tensor, prompt: str | list[Clause]) -> list[tuple[Clause, bool]]:
        clauses = parse(prompt) if isinstance(prompt, str) else prompt
        found = self.detect(image)
        return [(c, self.judge(c, found)) for c in clauses]


def check(image: torch.Tensor, prompt: str) -> list[tuple[Clause, bool]]:
    """Per-clause verdicts with the default checker."""
    return Checker()(image, prompt)


def accuracy(checker: Checker, images: torch.Tensor, prompts: list[str]) -> dict[str, float]:
    """Fraction of satisfied clauses per clause type and ``all`` (every clause of a prompt true)."""
    per: dict[str, list[bool]] = {}
    for img, p in zip(images, prompts):
        verdicts = checker(img, p)
        for c, ok in verdicts:
            per.setdefault(c.type, []).append(ok)
        per.setdefault("all", []).append(all(ok for _, ok in verdicts))
    return {k: float(np.mean(v)) for k, v in per.items()}


def scene_truth(scene, prompt: str | list[Clause]) -> list[tuple[Clause, bool]]:
    """Ground-truth verdicts from a scene's own objects (what the checker must reproduce from pixels)."""
    clauses = parse(prompt) if isinstance(prompt, str) else prompt
    found = [Detection(o.colour, o.shape, o.cx, o.cy, 1.0, 1.0) for o in scene.objects]
    return [(c, Checker.judge(c, found)) for c in clauses]
