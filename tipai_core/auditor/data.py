"""DETONATE-format preference pairs: Prompt, Chosen, Rejected, Category (+ optional Mask).

A source is one of
* a ``.parquet`` file, or a folder of them (read in name order), as the DETONATE release ships them:
  images are structs ``{"bytes", "path"}``, raw bytes, or paths relative to the file;
* a folder with ``pairs.csv`` or ``pairs.jsonl`` whose image columns hold paths relative to the folder.

Column names match case-insensitively. ``Mask`` (optional) marks the offending region of the rejected
image; it feeds L_sal. Rows are decoded lazily; a row that cannot be read raises DatasetRowError naming
the row and the column, so a corrupt row in a large set is found without guessing. An image path must
resolve inside the dataset's folder (no absolute path, no ``..`` out of it, no symlink leading out):
a row that names another file is corrupt, and that file is never opened. ``read_pairs`` is the
tolerant reader a trainer uses: it skips such rows, counts them, and ``skipped_report`` names them.
Images of any size and PIL mode (RGBA, greyscale, 16-bit, palette) decode to RGB in [0,1].
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

REQUIRED = ("Prompt", "Chosen", "Rejected", "Category")
OPTIONAL = ("Mask",)
TABLE_NAMES = ("pairs.csv", "pairs.jsonl")


class DatasetRowError(ValueError):
    """A row of a pairs dataset could not be read; the message names the row and column."""


@dataclass
class PreferencePair:
    prompt: str
    chosen: torch.Tensor  # [3,H,W] in [0,1]
    rejected: torch.Tensor  # [3,H,W] in [0,1]
    category: str | None
    mask: torch.Tensor | None  # [1,H,W] in [0,1], region of the rejected image that is at fault
    index: int


def _read_file(source: Path):
    """One table file as a DataFrame; a file its format cannot read is a ValueError naming the file."""
    import pandas as pd

    readers: dict[str, Callable[[Path], Any]] = {
        ".parquet": pd.read_parquet,
        ".csv": lambda f: pd.read_csv(f, keep_default_na=False),
        ".jsonl": lambda f: pd.read_json(f, lines=True),
    }
    read = readers.get(source.suffix)
    if read is None:
        raise ValueError(f"unsupported pairs file {source}: expected .parquet, pairs.csv or pairs.jsonl")
    try:
        df = read(source)
    except Exception as exc:  # pyarrow, pandas and the json reader raise many types for a bad file
        raise ValueError(
            f"pairs file {source} could not be read as {source.suffix[1:]}: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"pairs file {source} does not hold a table")
    return df


def _read_table(source: Path):
    import pandas as pd

    if source.is_file():
        df = _read_file(source)
        return df, [(source, i) for i in range(len(df))], source.parent
    if not source.is_dir():
        raise FileNotFoundError(
            f"pairs dataset not found: {source} (a .parquet file or a folder with *.parquet, "
            f"{' or '.join(TABLE_NAMES)})"
        )
    files = sorted(source.glob("*.parquet"))
    if files:
        frames = [_read_file(f) for f in files]
        where = [(f, i) for f, fr in zip(files, frames) for i in range(len(fr))]
        return pd.concat(frames, ignore_index=True), where, source
    for name in TABLE_NAMES:
        if (source / name).is_file():
            df, where, _ = _read_table(source / name)
            return df, where, source
    raise FileNotFoundError(f"no pairs in {source}: expected *.parquet files or one of {', '.join(TABLE_NAMES)}")


HIGH_BIT_MODES = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}
MATTE = 1.0  # transparent pixels are composited over white, as viewers show them


def pil_to_tensor(img: Any, mode: str = "RGB") -> torch.Tensor:
    """Any PIL image -> float [C,H,W] in [0,1], C = 3 for mode "RGB", 1 for "L".

    Modes: RGB, L, P, CMYK, YCbCr... go through PIL's own conversion; alpha (RGBA, LA, P with a
    transparent index) is composited over white, I = α·I_rgb + (1 − α)·1; 16-bit and float greyscale
    (I;16, I, F) are scaled from their full range (65535, 65535, 1) instead of being clipped at 255.
    EXIF orientation is applied, so a phone photo is upright.
    """
    from PIL import ImageOps

    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    img = ImageOps.exif_transpose(img)
    if img.mode in HIGH_BIT_MODES:
        import numpy as np

        grey = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()) / HIGH_BIT_MODES[img.mode]
        grey = grey.clamp(0.0, 1.0)[None]
        return grey.expand(3, -1, -1).clone() if mode == "RGB" else grey
    has_alpha = img.mode in ("RGBA", "LA", "RGBa", "La", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        t = _bytes_to_tensor(rgba, 4)
        rgb = t[:3] * t[3:] + MATTE * (1.0 - t[3:])
        if mode == "L":  # ITU-R 601 luma, as PIL's own RGB -> L
            rgb = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])[None]
        return rgb
    return _bytes_to_tensor(img.convert(mode), len(mode))


def _bytes_to_tensor(img: Any, channels: int) -> torch.Tensor:
    t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.height, img.width, channels)
    return t.permute(2, 0, 1).float() / 255.0


def inside(root: Path, name: str) -> Path:
    """``root / name`` resolved, refused (ValueError) unless it lies inside ``root``: an absolute path, ``..``
    out of the folder and a symlink leading out are refused before anything is opened."""
    if "\x00" in name or Path(name).is_absolute() or Path(name).drive:
        raise ValueError(f"image path {name!r} is not relative to the dataset folder {root}")
    base = Path(root).resolve()
    path = (base / name).resolve()
    if path != base and base not in path.parents:
        raise ValueError(f"image path {name!r} leads outside the dataset folder {base}")
    return path


def decode_image(value: Any, root: Path, mode: str = "RGB") -> torch.Tensor:
    """A PIL-readable image from a {bytes, path} struct, raw bytes or a path -> float [C,H,W] in [0,1].

    Any size and any PIL mode (see ``pil_to_tensor``).
    """
    from PIL import Image

    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        img = Image.open(io.BytesIO(bytes(value)))
    elif isinstance(value, str) and value:
        path = inside(root, value)
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
        img = Image.open(path)
    else:
        raise ValueError(f"no image (got {type(value).__name__})")
    img.load()
    return pil_to_tensor(img, mode)


def _resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


class PreferencePairs(torch.utils.data.Dataset):
    """Lazily decoded DETONATE-format pairs; ``image_size`` resizes every image (and mask) to a square."""

    def __init__(self, source: str | Path, image_size: int | None = None) -> None:
        self.source = Path(source)
        table, self._where, self.root = _read_table(self.source)
        lower = {str(c).lower(): c for c in table.columns}
        missing = [c for c in REQUIRED if c.lower() not in lower]
        if missing:
            raise ValueError(f"{self.source} lacks the column(s) {missing}; DETONATE format needs {list(REQUIRED)}")
        self._cols = {c: lower[c.lower()] for c in REQUIRED + OPTIONAL if c.lower() in lower}
        self._table = table
        self.image_size = image_size
        self.has_masks = "Mask" in self._cols

    def __len__(self) -> int:
        return len(self._table)

    def _where_text(self, i: int) -> str:
        f, r = self._where[i]
        return f"row {i} ({f.name}, row {r})" if f != self.source else f"row {i} of {f}"

    def _cell(self, i: int, col: str) -> Any:
        return self._table.iat[i, self._table.columns.get_loc(self._cols[col])]

    def prompt(self, i: int) -> str:
        value = self._cell(i, "Prompt")
        if not isinstance(value, str) or not value.strip():
            raise DatasetRowError(f"{self._where_text(i)}: column 'Prompt' is empty or not text ({value!r})")
        return value.strip()

    def category(self, i: int) -> str | None:
        value = self._cell(i, "Category")
        if value is None or (isinstance(value, float) and value != value):
            return None
        return str(value).strip() or None

    def categories(self) -> list[str]:
        return sorted({c for i in range(len(self)) if (c := self.category(i)) is not None})

    def _image(self, i: int, col: str, mode: str = "RGB") -> torch.Tensor:
        try:
            return _resize(decode_image(self._cell(i, col), self.root, mode), self.image_size)
        except Exception as exc:  # PIL raises many types for a broken image; name the row whatever it was
            raise DatasetRowError(
                f"{self._where_text(i)}: column {col!r} could not be decoded as an image: {type(exc).__name__}: {exc}"
            ) from exc

    def __getitem__(self, i: int) -> PreferencePair:
        if not 0 <= i < len(self):
            raise IndexError(i)
        mask = None
        if self.has_masks:
            value = self._cell(i, "Mask")
            if value is not None and not (isinstance(value, float) and value != value):
                mask = self._image(i, "Mask", mode="L")
        return PreferencePair(
            prompt=self.prompt(i),
            chosen=self._image(i, "Chosen"),
            rejected=self._image(i, "Rejected"),
            category=self.category(i),
            mask=mask,
            index=i,
        )


@dataclass
class SkippedRow:
    """A row left out of training because it could not be read."""

    index: int
    reason: str


def read_pairs(
    pairs: PreferencePairs, indices: list[int], strict: bool = False, skipped: list[SkippedRow] | None = None
) -> list[PreferencePair]:
    """The readable pairs among ``indices``; an unreadable row is appended to ``skipped`` and left out.

    With ``strict`` the first unreadable row raises its DatasetRowError instead.
    """
    items = []
    for i in indices:
        try:
            items.append(pairs[i])
        except DatasetRowError as exc:
            if strict:
                raise
            if skipped is not None:
                skipped.append(SkippedRow(i, str(exc)))
    return items


def skipped_report(skipped: list[SkippedRow], source: Any, limit: int = 20) -> str:
    """One line per skipped row (the first ``limit``), under a count."""
    if not skipped:
        return ""
    lines = [f"skipped {len(skipped)} unreadable row(s) of {source}:"]
    lines += [f"  {s.reason}" for s in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more")
    return "\n".join(lines)


def write_pairs_parquet(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write pairs (images as [3,H,W] tensors in [0,1], masks [1,H,W]) as DETONATE-style parquet with PNG bytes."""
    import pandas as pd

    def png(t: torch.Tensor) -> dict[str, Any]:
        from PIL import Image

        arr = (t.clamp(0, 1) * 255).round().byte()
        img = (
            Image.fromarray(arr[0].numpy(), "L")
            if arr.shape[0] == 1
            else Image.fromarray(arr.permute(1, 2, 0).contiguous().numpy(), "RGB")
        )
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}

    records = []
    for row in rows:
        rec = {
            "Prompt": row["Prompt"],
            "Chosen": png(row["Chosen"]),
            "Rejected": png(row["Rejected"]),
            "Category": row.get("Category"),
        }
        if "Mask" in row:
            rec["Mask"] = png(row["Mask"]) if row["Mask"] is not None else None
        records.append(rec)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame.from_records(records).to_parquet(path)
    return path


def summary(pairs: PreferencePairs) -> dict[str, Any]:
    return {
        "source": str(pairs.source),
        "pairs": len(pairs),
        "masks": pairs.has_masks,
        "categories": pairs.categories(),
    }


__all__ = [
    "DatasetRowError",
    "PreferencePair",
    "PreferencePairs",
    "SkippedRow",
    "decode_image",
    "inside",
    "pil_to_tensor",
    "read_pairs",
    "skipped_report",
    "summary",
    "write_pairs_parquet",
]
