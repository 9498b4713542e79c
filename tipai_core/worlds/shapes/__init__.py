"""ShapesWorld: coloured circles, squares and triangles, a prompt grammar over them, and a checker.

One concept per file:

* ``render.py``  — scenes (objects with colour, shape, size, position) and their anti-aliased images;
* ``grammar.py`` — prompts (counts, colour–shape binding, left of / right of / above), their parse
  into typed clauses, the token vocabulary, and binding corruptions for rejected pairs;
* ``dataset.py`` — (image, prompt) pairs deterministic from a seed: a prompt, then a layout that
  satisfies it;
* ``checker.py`` — per-clause verdicts from colour segmentation and geometry (ground truth on
  rendered images; validated on generated ones).
"""

from .checker import Checker, check
from .dataset import batch, example
from .grammar import Clause, parse, tokenize
from .render import Scene, ShapeSpec, render

__all__ = ["Checker", "check", "example", "batch", "Clause", "parse", "tokenize", "Scene", "ShapeSpec", "render"]
