"""(image, prompt) pairs of ShapesWorld, deterministic from a seed.

``example(seed)``: a prompt spec is drawn (``grammar.sample_spec``), then a layout that satisfies
it (``render.layout``), then the image. ``pair(seed)``: the same prompt with a chosen image (its
own scene) and a rejected image (the scene of ``grammar.corrupt(spec)``), the DETONATE-style
pair the auditor's Stage A trains on.
"""

from __future__ import annotations

import random

import torch

from .grammar import PromptSpec, corrupt, describe, sample_spec
from .render import DEFAULT_SIZE, Scene, layout, render


def _rng(seed: int, stream: int) -> random.Random:
    # separate streams so that the train, eval and pair sets never share a draw for one seed
    return random.Random(int(seed) * 7919 + stream)


def scene_for(spec: PromptSpec, rng: random.Random) -> Scene:
    return layout(list(spec.objects), rng, spec.relation)


def example(seed: int, size: int = DEFAULT_SIZE, stream: int = 0) -> tuple[torch.Tensor, str, Scene]:
    """(image ``[3, size, size]`` in [0, 1], prompt, scene)."""
    rng = _rng(seed, stream)
    spec = sample_spec(rng)
    scene = scene_for(spec, rng)
    return render(scene, size), describe(spec), scene


def batch(seeds, size: int = DEFAULT_SIZE, stream: int = 0) -> tuple[torch.Tensor, list[str]]:
    """Images ``[B, 3, size, size]`` and prompts for a list of seeds."""
    items = [example(s, size, stream) for s in seeds]
    return torch.stack([i for i, _, _ in items]), [p for _, p, _ in items]


def pair_scenes(seed: int, stream: int = 1) -> tuple[str, tuple[Scene, Scene]]:
    """(prompt, (chosen scene, rejected scene)): the rejected scene violates the prompt."""
    rng = _rng(seed, stream)
    spec = sample_spec(rng)
    bad = corrupt(spec, rng)
    return describe(spec), (scene_for(spec, rng), scene_for(bad, rng))


def pair(seed: int, size: int = DEFAULT_SIZE, stream: int = 1) -> tuple[str, torch.Tensor, torch.Tensor]:
    """(prompt, chosen image, rejected image)."""
    prompt, (good, bad) = pair_scenes(seed, stream)
    return prompt, render(good, size), render(bad, size)
