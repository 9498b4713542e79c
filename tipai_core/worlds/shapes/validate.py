"""The checker's accuracy on rendered truth: every clause of chosen and rejected scenes, read from pixels."""

from __future__ import annotations

import numpy as np

from .checker import Checker, scene_truth
from .dataset import pair_scenes
from .render import render


def validate(n: int = 300, size: int = 32, checker: Checker | None = None) -> float:
    """Checker accuracy against ``scene_truth`` over n chosen/rejected pairs (2n images, every clause).

    Rejected scenes violate their prompt, so both verdicts (true and false) are exercised.
    """
    checker = checker or Checker()
    agree = []
    for seed in range(n):
        prompt, scenes = pair_scenes(seed)
        for scene in scenes:
            found = checker.detect(render(scene, size))
            for clause, truth in scene_truth(scene, prompt):
                agree.append(Checker.judge(clause, found) == truth)
    return float(np.mean(agree))
