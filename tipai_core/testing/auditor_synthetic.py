"""Synthetic DETONATE-style pairs and tiny random-weight backbones for the auditor tests.

Each pair: Prompt "a <colour> square"; Chosen shows a square of that colour on a noisy grey field;
Rejected shows a square of another colour plus an object that stands for its Category: a magenta
checkerboard tile for nsfw, a cyan tile with a diagonal cross for violence/weapon; Mask marks it.
The object and the colour binding are learnable from the image features, but a random-weight backbone
cannot know them zero-shot.

Why the object is this size and colour: the tiny backbone sees 64 px in 16 px patches through random
weights, so what survives into its tokens is mostly a patch's mean colour. A 16 px grey-on-black
pattern at a random offset is smeared over up to four patches and drowned by the field's noise
(a linear probe on the frozen features separates the two categories at ROC-AUC ≈ 0.64–0.76). A
24 px object in a hue of its own always fills at least one whole patch (probe ≈ 0.96–0.98), the kind
of cue a real CLIP sees without trouble. The colours are kept clear of the four square colours.

Run as a script to write a demo set and a tiny open_clip weights file:
    python -m tipai_core.testing.auditor_synthetic OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

COLOURS = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.8, 0.2), "blue": (0.1, 0.2, 0.9), "yellow": (0.95, 0.9, 0.1)}
CATEGORIES = ("nsfw", "violence/weapon")


def _square(img: torch.Tensor, rgb, y: int, x: int, s: int) -> None:
    img[:, y : y + s, x : x + s] = torch.tensor(rgb).view(3, 1, 1)


CUE_COLOURS = {  # (pattern colour, ground colour): one hue per category
    "nsfw": ((1.0, 0.2, 0.8), (0.75, 0.05, 0.6)),
    "violence/weapon": ((0.0, 0.9, 0.9), (0.0, 0.6, 0.65)),
}


def _cue(img: torch.Tensor, mask: torch.Tensor, category: str, y: int, x: int, s: int) -> None:
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    if category == "nsfw":
        pattern = ((yy // 3 + xx // 3) % 2).float()
    else:
        pattern = ((yy - xx).abs() <= 1).float().maximum(((yy + xx - (s - 1)).abs() <= 1).float())
    on, off = (torch.tensor(c).view(3, 1, 1) for c in CUE_COLOURS[category])
    img[:, y : y + s, x : x + s] = pattern[None] * on + (1 - pattern[None]) * off
    mask[:, y : y + s, x : x + s] = 1.0


def make_pairs(n: int, seed: int, size: int = 64, masks: bool = True) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    names = list(COLOURS)
    rows = []

    def rand(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi, (1,), generator=g))

    for _ in range(n):
        want = names[rand(0, len(names))]
        other = names[(names.index(want) + rand(1, len(names))) % len(names)]
        category = CATEGORIES[rand(0, len(CATEGORIES))]

        def field() -> torch.Tensor:
            base = 0.35 + 0.3 * torch.rand(1, generator=g)
            return (base + 0.06 * torch.randn(3, size, size, generator=g)).clamp(0, 1)

        s = size * 3 // 8
        chosen, rejected = field(), field()
        _square(chosen, COLOURS[want], rand(0, size - s), rand(0, size - s), s)
        _square(rejected, COLOURS[other], rand(0, size - s), rand(0, size - s), s)
        mask = torch.zeros(1, size, size)
        c = size * 3 // 8  # the cue object is as large as the square (24 px at 64)
        _cue(rejected, mask, category, rand(0, size - c), rand(0, size - c), c)
        row = {"Prompt": f"a {want} square", "Chosen": chosen, "Rejected": rejected, "Category": category}
        if masks:
            row["Mask"] = mask
        rows.append(row)
    return rows


def write_tiny_open_clip(path: Path, seed: int = 0) -> Path:
    """Random weights of the shipped tiny open_clip config, saved as safetensors."""
    import open_clip
    from safetensors.torch import save_file

    from ..auditor.backbones import CONFIG_DIR, TINY_ARCH

    open_clip.add_model_config(str(CONFIG_DIR))
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_ARCH, pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return Path(path)


if __name__ == "__main__":
    from ..auditor.data import write_pairs_parquet

    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    write_tiny_open_clip(out / "tiny_clip.safetensors")
    write_pairs_parquet(out / "train.parquet", make_pairs(400, seed=1))
    write_pairs_parquet(out / "val.parquet", make_pairs(160, seed=2))
    print(f"wrote {out}/tiny_clip.safetensors, train.parquet (400 pairs), val.parquet (160 pairs)")
