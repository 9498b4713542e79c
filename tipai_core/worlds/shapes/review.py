"""Pages for reading the checker against one's own eyes on generated images.

``python -m tipai_core.worlds.shapes review --n 96 --out review/`` samples the base model on the
calibration set's prompts (never the evaluation's), and writes PNG pages of 24 numbered images
(6 × 4, each scaled up) and ``review.txt``: per image its prompt, what the checker detected (colour,
shape, centre) and its verdict per clause. A reader marks each clause whose verdict they disagree
with; agreement = 1 - disagreements / clauses. The checker's verdict depends only on its
detections, so reading the detections against the picture is the quicker check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .checker import Checker
from .evaluate import calibration_set
from .generate import generate


def review_pages(
    model, n: int, out: str | Path, steps: int = 20, cfg: float = 3.0, scale: int = 6, per_page: int = 24, cols: int = 6
) -> list[Path]:
    from PIL import Image, ImageDraw

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    checker = Checker()
    items = calibration_set(n)
    images = [generate(model, p, s, steps, cfg) for p, s in items]
    lines, pages = [], []
    for i, ((prompt, seed), img) in enumerate(zip(items, images)):
        found = checker.detect(img)
        det = ", ".join(f"{d.colour} {d.shape} @({d.cx:.2f},{d.cy:.2f})" for d in found) or "nothing"
        verdicts = "; ".join(f"{c.type}:{'yes' if ok else 'NO'}" for c, ok in checker(img, prompt))
        lines.append(f"{i:3d} seed {seed}  prompt: {prompt}\n     detected: {det}\n     verdicts: {verdicts}")
    for p0 in range(0, n, per_page):
        chunk = images[p0 : p0 + per_page]
        h, w = chunk[0].shape[1:]
        cell = h * scale
        rows = (len(chunk) + cols - 1) // cols
        canvas = Image.new("RGB", (cols * (cell + 4) + 4, rows * (cell + 18) + 4), (128, 128, 128))
        draw = ImageDraw.Draw(canvas)
        for k, img in enumerate(chunk):
            a = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            tile = Image.fromarray(a.repeat(scale, 0).repeat(scale, 1))
            x, y = 4 + (k % cols) * (cell + 4), 4 + (k // cols) * (cell + 18)
            canvas.paste(tile, (x, y + 14))
            draw.text((x, y), str(p0 + k), fill=(255, 255, 255))
        path = out / f"page{p0 // per_page}.png"
        canvas.save(path)
        pages.append(path)
    (out / "review.txt").write_text("\n".join(lines) + "\n")
    return pages


@torch.no_grad()
def main_review(model, n: int, out: str | Path) -> None:
    pages = review_pages(model, n, out)
    print(f"wrote {len(pages)} pages and {Path(out) / 'review.txt'}")
