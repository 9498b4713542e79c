"""Scenes of coloured shapes and their anti-aliased RGB images.

A scene is a list of objects, each ``(shape, colour, cx, cy, r)`` with the centre and the
half-extent r given as fractions of the image side, so one scene renders at any size.
Shapes (all axis-aligned, fill ratio ρ = area / bounding-box area in brackets):

* circle   ``(x-cx)² + (y-cy)² ≤ r²``                         (ρ = π/4 ≈ 0.785)
* square   ``|x-cx| ≤ r and |y-cy| ≤ r``                        (ρ = 1)
* triangle apex up: ``(cx, cy-r)``, ``(cx-r, cy+r)``, ``(cx+r, cy+r)``  (ρ = 1/2)

The distinct fill ratios are what the checker reads. Pixels are coverage-weighted over an
``ss × ss`` supersampling grid: ``I(p) = bg·(1 - c(p)) + colour·c(p)``, objects painted in order.
Layouts are drawn by ``layout`` with a seeded ``random.Random``, so a seed gives the same scene on
every platform.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

SHAPES = ("circle", "square", "triangle")
# saturated colours with well separated hues (red 0°, yellow ~54°, green ~130°, blue ~222°)
PALETTE = {
    "red": (0.86, 0.16, 0.16),
    "yellow": (0.90, 0.82, 0.16),
    "green": (0.16, 0.70, 0.24),
    "blue": (0.16, 0.31, 0.86),
}
COLOURS = tuple(PALETTE)
BACKGROUND = (1.0, 1.0, 1.0)  # white: zero chroma, so every saturated pixel belongs to an object
DEFAULT_SIZE = 32


@dataclass(frozen=True)
class ShapeSpec:
    """One object: shape, colour name, centre (cx, cy) and half-extent r as fractions of the side."""

    shape: str
    colour: str
    cx: float
    cy: float
    r: float

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        if self.colour not in PALETTE:
            raise ValueError(f"colour must be one of {COLOURS}, got {self.colour!r}")
        if not (0 < self.r < 0.5):
            raise ValueError(f"r must be in (0, 0.5), got {self.r}")

    def overlaps(self, other: "ShapeSpec", gap: float) -> bool:
        """Bounding boxes closer than ``gap`` on both axes (so the checker could merge them)."""
        return abs(self.cx - other.cx) < self.r + other.r + gap and abs(self.cy - other.cy) < self.r + other.r + gap


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeSpec, ...]


def _coverage(obj: ShapeSpec, size: int, ss: int) -> np.ndarray:
    """Fraction of each pixel inside the shape, ``[size, size]``, from an ss×ss grid of samples."""
    n = size * ss
    c = (np.arange(n, dtype=np.float64) + 0.5) / n  # sample centres in [0, 1]
    y, x = np.meshgrid(c, c, indexing="ij")
    dx, dy = x - obj.cx, y - obj.cy
    if obj.shape == "circle":
        inside = dx * dx + dy * dy <= obj.r * obj.r
    elif obj.shape == "square":
        inside = (np.abs(dx) <= obj.r) & (np.abs(dy) <= obj.r)
    else:
        # apex at (cx, cy - r), base y = cy + r from cx - r to cx + r: half-width grows as (dy + r)/2
        inside = (dy <= obj.r) & (dy >= -obj.r) & (np.abs(dx) <= (dy + obj.r) / 2)
    return inside.reshape(size, ss, size, ss).mean(axis=(1, 3))


def render(scene: Scene, size: int = DEFAULT_SIZE, ss: int = 4) -> torch.Tensor:
    """RGB image ``[3, size, size]`` in [0, 1] (float32)."""
    img = np.empty((3, size, size), dtype=np.float64)
    img[:] = np.asarray(BACKGROUND)[:, None, None]
    for obj in scene.objects:
        cov = _coverage(obj, size, ss)
        col = np.asarray(PALETTE[obj.colour])[:, None, None]
        img = img * (1 - cov) + col * cov
    return torch.from_numpy(img.astype(np.float32))


# half-extent ranges (fraction of the side) by number of objects: 3 objects must still fit apart
R_RANGE = {1: (0.14, 0.24), 2: (0.12, 0.19), 3: (0.11, 0.15)}
GAP = 0.07  # minimum gap between bounding boxes (2 px at 32 px), so components never touch
MARGIN = 0.15  # a relation is drawn with at least this centre offset along its axis


def layout(
    objects: list[tuple[str, str]],
    rng: random.Random,
    relation: tuple[str, int, int] | None = None,
    max_tries: int = 2000,
) -> Scene:
    """Place ``objects`` [(colour, shape), ...] without overlap; optionally satisfy one relation.

    ``relation = (kind, i, j)`` with kind in {"left of", "right of", "above"}: object i is left
    of / right of / above object j, by at least MARGIN between centres along that axis.
    Deterministic for a given rng state.
    """
    n = len(objects)
    lo, hi = R_RANGE[min(max(n, 1), 3)]
    for _ in range(max_tries):
        placed: list[ShapeSpec] = []
        ok = True
        for colour, shape in objects:
            r = rng.uniform(lo, hi)
            edge = r + 0.03  # keep one pixel-ish of background around the image border
            cand = ShapeSpec(shape, colour, rng.uniform(edge, 1 - edge), rng.uniform(edge, 1 - edge), r)
            if any(cand.overlaps(o, GAP) for o in placed):
                ok = False
                break
            placed.append(cand)
        if not ok:
            continue
        if relation is not None and not relation_holds(relation[0], placed[relation[1]], placed[relation[2]], MARGIN):
            continue
        return Scene(tuple(placed))
    raise RuntimeError(f"could not lay out {objects} with {relation} in {max_tries} tries")


def relation_holds(kind: str, a: ShapeSpec, b: ShapeSpec, margin: float = 0.0) -> bool:
    """Ground truth of "a <kind> b" by centres (image y grows downwards)."""
    if kind == "left of":
        return a.cx + margin < b.cx
    if kind == "right of":
        return a.cx > b.cx + margin
    if kind == "above":
        return a.cy + margin < b.cy
    raise ValueError(f"unknown relation {kind!r}")
