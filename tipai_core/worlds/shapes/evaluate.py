"""Held-out prompts, checker accuracy per clause type, and PNG grids for ShapesWorld.

The held-out set is a fixed list of (prompt, seed): prompts from the grammar's evaluation stream
(``dataset`` stream 2, never used for training draws) and sampling seeds 10_000 + i. The calibration
set (Stage C and the offline TSPO logs) is drawn the same way from its own stream 4 with seeds
30_000 + i, so nothing the guard or the policy is fitted on is ever scored in the table. The
development set (stream 6, seeds 50_000 + i) is where the accuracy–compute curve's settings are tuned
before the held-out set is run once.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch

from ...records.files import atomic_write
from .checker import Checker
from .grammar import CLAUSE_TYPES, describe, sample_spec

EVAL_STREAM = 2
CALIBRATION_STREAM = 4
DEVELOPMENT_STREAM = 6
TRAINING_STREAM = 8


def _prompt_set(n: int, stream: int, first_seed: int) -> list[tuple[str, int]]:
    return [(describe(sample_spec(random.Random(i * 7919 + stream))), first_seed + i) for i in range(n)]


def held_out(n: int) -> list[tuple[str, int]]:
    """The fixed evaluation set: n (prompt, sampling seed) pairs."""
    return _prompt_set(n, EVAL_STREAM, 10_000)


def calibration_set(n: int) -> list[tuple[str, int]]:
    """n (prompt, sampling seed) pairs for Stage C and TSPO, disjoint in draws from ``held_out``."""
    return _prompt_set(n, CALIBRATION_STREAM, 30_000)


def training_set(n: int, first: int = 0) -> list[tuple[str, int]]:
    """Items ``first .. first + n - 1`` of the stream that training data of the loop's own images comes from
    (``eval/shapes/loop_judge.py``), disjoint in draws and seeds from every evaluation set."""
    return [
        (describe(sample_spec(random.Random(i * 7919 + TRAINING_STREAM))), 70_000 + i) for i in range(first, first + n)
    ]


def development_set(n: int) -> list[tuple[str, int]]:
    """n (prompt, seed) pairs to tune on, disjoint in draws from ``held_out`` and ``calibration_set``."""
    return _prompt_set(n, DEVELOPMENT_STREAM, 50_000)


def clause_accuracy(images, prompts, checker: Checker | None = None) -> tuple[dict[str, float], list[list[bool]]]:
    """Per clause type and ``all`` (every clause of a prompt true): fraction satisfied; and the verdicts."""
    checker = checker or Checker()
    per: dict[str, list[bool]] = {}
    verdicts = []
    for img, p in zip(images, prompts):
        v = checker(img, p)
        verdicts.append([ok for _, ok in v])
        for c, ok in v:
            per.setdefault(c.type, []).append(ok)
        per.setdefault("all", []).append(all(ok for _, ok in v))
    return {k: float(np.mean(per[k])) for k in (*CLAUSE_TYPES, "all") if k in per}, verdicts


def save_grid(
    columns: list[list[torch.Tensor]],
    path: str | Path,
    scale: int = 4,
    outlines: list[list[torch.Tensor | None]] | None = None,
    labels: list[str] | None = None,
) -> None:
    """PNG: one column per method, one row per prompt; optional masks outlined in magenta and a
    header naming each column (split at '[' to fit; the full names go in the .txt beside it)."""
    from PIL import Image, ImageDraw

    rows, cols = len(columns[0]), len(columns)
    h, w = columns[0][0].shape[1:]
    pad = 2
    head = 26 if labels else 0
    canvas = np.full((head + rows * (h * scale + pad) + pad, cols * (w * scale + pad) + pad, 3), 128, dtype=np.uint8)
    for c, col in enumerate(columns):
        for r, img in enumerate(col):
            a = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            outline = outlines[c][r] if outlines is not None else None
            if outline is not None:
                m = outline.reshape(h, w).numpy() > 0.5
                edge = m & ~(
                    np.pad(m, 1)[2:, 1:-1] & np.pad(m, 1)[:-2, 1:-1] & np.pad(m, 1)[1:-1, 2:] & np.pad(m, 1)[1:-1, :-2]
                )
                a[edge] = (255, 0, 255)
            a = a.repeat(scale, 0).repeat(scale, 1)
            y, x = head + pad + r * (h * scale + pad), pad + c * (w * scale + pad)
            canvas[y : y + h * scale, x : x + w * scale] = a
    image = Image.fromarray(canvas)
    if labels:
        draw = ImageDraw.Draw(image)
        for c, name in enumerate(labels):
            first, _, rest = name.partition("[")
            x = pad + c * (w * scale + pad) + 1
            draw.text((x, 1), first, fill=(255, 255, 255))
            if rest:
                draw.text((x, 13), "[" + rest, fill=(255, 255, 255))
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def plain_accuracy(model, n: int = 64, steps: int = 20, cfg: float = 3.0, png: str | None = None) -> dict[str, float]:
    """Plain sampling of the held-out set: prints and returns the accuracy per clause type."""
    from .generate import generate

    t = time.time()
    items = held_out(n)
    images = [generate(model, p, s, steps, cfg) for p, s in items]
    acc, _ = clause_accuracy(images, [p for p, _ in items])
    dt = time.time() - t
    print(
        f"plain sampling, {n} held-out prompts, {steps} steps, CFG {cfg}: "
        + ", ".join(f"{k} {v:.3f}" for k, v in acc.items())
        + f" ({dt:.0f}s)"
    )
    if png:
        save_grid([images], png)
        Path(png).with_suffix(".txt").write_text("\n".join(p for p, _ in items) + "\n")
    return acc
