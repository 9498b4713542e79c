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


def local_pair_scenes(seed: int, stream: int = 5) -> tuple[str, tuple[Scene, Scene]]:
    """(prompt, (chosen, rejected)) where the rejected scene is the chosen one edited in place, as a
    tournament candidate differs from its control: objects recoloured or reshaped where they stand
    (a corrupted binding), two objects' positions swapped (a reversed relation), or one object removed
    or added (a wrong count). Falls back to ``pair_scenes``'s fresh layout when no in-place edit of
    the corruption exists; the rejected scene always violates the prompt."""
    from dataclasses import replace

    from .checker import scene_truth

    rng = _rng(seed, stream)
    spec = sample_spec(rng)
    bad = corrupt(spec, rng)
    good = scene_for(spec, rng)
    objs = list(good.objects)
    edited = None
    if bad.form == spec.form and len(bad.objects) == len(objs):
        if bad.relation != spec.relation and bad.objects == spec.objects:  # reversed: swap the two places
            assert spec.relation is not None  # the relations differ and the forms match: both are relations
            _, i, j = spec.relation
            a, b = objs[i], objs[j]
            objs[i], objs[j] = replace(a, cx=b.cx, cy=b.cy), replace(b, cx=a.cx, cy=a.cy)
        else:
            objs = [replace(o, colour=c, shape=s) for o, (c, s) in zip(objs, bad.objects)]
        edited = Scene(tuple(objs))
    elif len(bad.objects) < len(objs):
        edited = Scene(tuple(objs[: len(bad.objects)]))
    else:
        extra = layout(list(bad.objects), rng).objects[len(objs) :]
        placed = list(objs)
        for o in extra:  # keep the extra object only where it touches nothing already there
            if not any(o.overlaps(p, 0.05) for p in placed):
                placed.append(o)
        if len(placed) == len(bad.objects):
            edited = Scene(tuple(placed))
    prompt = describe(spec)
    if edited is None or all(ok for _, ok in scene_truth(edited, prompt)):
        edited = scene_for(bad, rng)
    return prompt, (good, edited)


def degrade(images: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """The same random degradation for a batch of images ``[B, 3, H, W]``: what an audit sees of an x0
    prediction mid-sampling (soft edges, faded colour, speckle). Blur σ ~ U[0, 1.2] px, fade toward
    white by U[0, 0.3], Gaussian noise of std U[0, 0.08]; all drawn from ``rng``."""
    import math

    import torch.nn.functional as F

    out = images
    s = rng.uniform(0.0, 1.2)
    if s > 0.05:
        r = max(1, math.ceil(2.5 * s))
        k = torch.exp(-(torch.arange(-r, r + 1, dtype=images.dtype) ** 2) / (2 * s * s))
        k = k / k.sum()
        c = images.shape[1]
        out = F.conv2d(F.pad(out, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        out = F.conv2d(F.pad(out, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    fade = rng.uniform(0.0, 0.3)
    out = out * (1 - fade) + fade
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    noise = torch.randn(out.shape, generator=g) * rng.uniform(0.0, 0.08)
    return (out + noise).clamp(0, 1)


def edit_pair(seed: int, size: int = DEFAULT_SIZE, p_degrade: float = 0.7) -> tuple[str, torch.Tensor, torch.Tensor]:
    """An in-place edit (``local_pair_scenes``), degraded with probability ``p_degrade`` by one draw applied to
    both images alike, noise included, so that they differ only where the edit is: what the learned editor
    trains on (the rejected image's region repainted as the chosen one's). The rare fresh-layout fallback
    of ``local_pair_scenes`` differs everywhere; a caller that needs a local edit filters it out."""
    rng = _rng(seed, 7)
    prompt, (good, bad) = local_pair_scenes(seed)
    g, b = render(good, size), render(bad, size)
    if rng.random() < p_degrade:
        twin = random.Random()
        twin.setstate(rng.getstate())
        g, b = degrade(g[None], rng)[0], degrade(b[None], twin)[0]
    return prompt, g, b


def audit_pair(
    seed: int, size: int = DEFAULT_SIZE, p_local: float = 0.5, p_degrade: float = 0.7
) -> tuple[str, torch.Tensor, torch.Tensor]:
    """A Stage A pair as the loop's audits see them: in-place edits with probability ``p_local`` (else
    ``pair``'s fresh layout), both images degraded alike with probability ``p_degrade``."""
    rng = _rng(seed, 6)
    if rng.random() < p_local:
        prompt, (good, bad) = local_pair_scenes(seed)
        g, b = render(good, size), render(bad, size)
    else:
        prompt, g, b = pair(seed, size)
    if rng.random() < p_degrade:
        g, b = degrade(torch.stack([g, b]), rng)
    return prompt, g, b
