"""Checker-based stand-ins for the auditor A_s and the miner's saliency in ShapesWorld.

These read the image with the same checker the evaluation scores with, so they are *oracles*:
an upper bound on what a learned auditor (the tiny open_clip model with Stage A heads) can give
the loop, and a way to test the loop's mechanics in this world before that auditor exists.
Tables made with them must say so.

* ``CheckerAuditor.score``: ``S = S_R = F = (satisfied clauses) / (clauses)`` per image, one
  policy class with ``P = 1`` and seam quality ``B = 1``.
* ``checker_saliency``: 1 on the (one-pixel-grown) boxes of detected objects that the prompt does
  not ask for, of the first object of each violated relation whose two objects are present, and of surplus objects of a
  violated count; 0 elsewhere. Missing objects raise no saliency (nothing to point at).
"""

from __future__ import annotations

import torch

from ...protocols import AuditScores
from .checker import Checker, Detection
from .grammar import parse


class CheckerAuditor:
    """``protocols.Auditor`` from checker verdicts (an oracle; see the module docstring)."""

    classes = ("safe",)

    def __init__(self, checker: Checker | None = None):
        self.checker = checker or Checker()

    def satisfied(self, image: torch.Tensor, prompt: str) -> float:
        v = self.checker(image, prompt)
        return sum(ok for _, ok in v) / len(v)

    def score(self, images: torch.Tensor, prompt: str, mask: torch.Tensor | None = None) -> AuditScores:
        s = torch.tensor([self.satisfied(img, prompt) for img in images], dtype=torch.float32)
        ones = torch.ones_like(s)
        return AuditScores(S=s, S_R=s.clone(), F=s.clone(), P=ones[:, None], B=ones, classes=self.classes)


def _box(mask: torch.Tensor, d: Detection, grow: int = 1) -> None:
    h, w = mask.shape[-2:]
    x0 = int((d.cx - d.w / 2) * w) - grow
    x1 = int(round((d.cx + d.w / 2) * w)) + grow
    y0 = int((d.cy - d.h / 2) * h) - grow
    y1 = int(round((d.cy + d.h / 2) * h)) + grow
    mask[..., max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)] = 1.0


def checker_saliency(checker: Checker | None = None):
    """A ``saliency_fn(image [1,3,H,W], prompt) -> [1,1,H,W]`` for ``regions.SaliencyMiner``."""
    checker = checker or Checker()

    def fn(image: torch.Tensor, prompt: str) -> torch.Tensor:
        clauses = parse(prompt)
        found = checker.detect(image[0])
        sal = image.new_zeros(1, 1, *image.shape[-2:])
        wanted = {(c.colour, c.shape) for c in clauses} | {(c.colour2, c.shape2) for c in clauses if c.colour2}
        for d in found:
            if (d.colour, d.shape) not in wanted:
                _box(sal, d)
        for c in clauses:
            if Checker.judge(c, found):
                continue
            match = [d for d in found if d.colour == c.colour and d.shape == c.shape]
            if c.type == "relation" and match and any(d.colour == c.colour2 and d.shape == c.shape2 for d in found):
                _box(sal, match[0])  # both present, wrongly placed: move the first
            if c.type == "count" and len(match) > c.n:
                for d in sorted(match, key=lambda d: d.area)[: len(match) - c.n]:
                    _box(sal, d)
        return sal

    return fn
