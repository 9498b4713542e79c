"""Overlays for the nodes: audited regions as boxes (accepted green, rejected orange) and tinted masks.

Images are ``[3, H, W]`` or ``[B, 3, H, W]`` float in [0, 1] (the nodes convert ComfyUI's
``[B, H, W, 3]``). Both functions return a new tensor of the same shape and dtype; a pixel that no
box border or mask touches is bit-identical to the input.

Box coordinates. A TournamentRecord's ``region["bbox"]`` is ``[y0, x0, y1, x1]`` (end exclusive) in
pixels of the audit view, which has ``f = region["view_factor"]`` pixels per latent pixel
(``loop.audit_step``: ``f = view_factor(decoder.factor, audit_scale)``, view size ``f·h × f·w``
for a latent ``h × w``). On the output image ``H × W`` one view pixel is

    s_y = H / (f · h),   s_x = W / (f · w)     image pixels,

with ``(h, w) = latent_size`` when given, else ``h = H / factor`` (the VAE's factor, 8 for SD), i.e.
``s = factor / f``. The box becomes ``[⌊y0·s_y⌋, ⌊x0·s_x⌋, ⌈y1·s_y⌉, ⌈x1·s_x⌉]`` clipped to the image,
so it always covers the region. A ``regions.Region`` (the miner's output) is in the pixels of its
own mask, so its scale is ``H / mask_H``; a plain dict without ``view_factor`` is in image pixels.
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..mining.regions import Region
from .tournament_record import TournamentRecord

Color = Sequence[float]


def _check_image(image: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """[B,3,H,W] view of the image and whether it came without a batch dim."""
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        raise ValueError("image must be a float tensor [3,H,W] or [B,3,H,W] in [0,1]")
    if image.dim() == 3 and image.shape[0] == 3:
        return image[None], True
    if image.dim() == 4 and image.shape[1] == 3:
        return image, False
    raise ValueError(f"image must be [3,H,W] or [B,3,H,W], got {tuple(image.shape)}")


def _color(c: Color, name: str, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(c, dtype=like.dtype, device=like.device).reshape(-1)
    if t.numel() != 3 or not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1:
        raise ValueError(f"{name} must be 3 floats in [0,1], got {c!r}")
    return t


def palette(k: int) -> list[tuple[float, float, float]]:
    """K distinct RGB colours: hues spaced by the golden ratio, so any prefix stays well spread."""
    return [colorsys.hsv_to_rgb((i * 0.6180339887498949) % 1.0, 0.85, 1.0) for i in range(k)]


def _scaled(v: int, num: int, den: int, up: bool) -> int:
    # exact integer floor/ceil of v·num/den: boxes must not drift by a float rounding
    return -((-v * num) // den) if up else (v * num) // den


def _item(obj: Any) -> dict:
    """Normalise a record, record dict, region dict or Region to {bbox, scale, accepted, batch, mask}."""
    if isinstance(obj, TournamentRecord):
        return {
            "bbox": obj.region["bbox"],
            "f": obj.region.get("view_factor"),
            "accepted": obj.accepted,
            "batch": obj.batch_index,
            "mask": None,
        }
    if isinstance(obj, Region):
        return {"bbox": obj.bbox, "f": None, "accepted": None, "batch": None, "mask": obj.mask}
    if isinstance(obj, dict):
        if "region" in obj:  # a record's to_dict(), e.g. read back from a log
            return {
                "bbox": obj["region"]["bbox"],
                "f": obj["region"].get("view_factor"),
                "accepted": bool(obj.get("accepted")),
                "batch": int(obj.get("batch_index", 0)),
                "mask": None,
            }
        if "bbox" in obj:  # a region entry of a report's steps, or a hand-made box
            acc = obj.get("accepted")
            return {
                "bbox": obj["bbox"],
                "f": obj.get("view_factor"),
                "accepted": None if acc is None else bool(acc),
                "batch": obj.get("batch_index"),
                "mask": obj.get("mask"),
            }
    raise ValueError(f"cannot draw a {type(obj).__name__}: expected a TournamentRecord, a Region or a dict with 'bbox'")


def _image_box(it: dict, h_img: int, w_img: int, factor: int, latent_size: tuple[int, int] | None):
    y0, x0, y1, x1 = (int(v) for v in it["bbox"])
    if it["f"] is not None:
        f = int(it["f"])
        if f < 1:
            raise ValueError(f"view_factor must be >= 1, got {f}")
        if latent_size is not None:
            (ny, dy), (nx, dx) = (h_img, f * int(latent_size[0])), (w_img, f * int(latent_size[1]))
        else:
            (ny, dy), (nx, dx) = (factor, f), (factor, f)
    elif it["mask"] is not None:
        (ny, dy), (nx, dx) = (h_img, int(it["mask"].shape[-2])), (w_img, int(it["mask"].shape[-1]))
    else:
        (ny, dy), (nx, dx) = (1, 1), (1, 1)
    box = (_scaled(y0, ny, dy, False), _scaled(x0, nx, dx, False), _scaled(y1, ny, dy, True), _scaled(x1, nx, dx, True))
    return (max(0, box[0]), max(0, box[1]), min(h_img, box[2]), min(w_img, box[3]))


def _tint(img: torch.Tensor, mask: torch.Tensor, color: torch.Tensor, alpha: float) -> torch.Tensor:
    """``(1 - α·m)·img + α·m·c`` where m > 0; elsewhere img bit for bit. img [B,3,H,W], mask [1|B,1,H,W]."""
    m = alpha * mask.to(img.dtype)
    blended = (1 - m) * img + m * color.view(1, 3, 1, 1)
    return torch.where(m > 0, blended, img)


def _fit_mask(mask: torch.Tensor, h: int, w: int, mode: str) -> torch.Tensor:
    m = mask.float()
    if m.dim() == 2:
        m = m[None, None]
    elif m.dim() == 3:
        m = m[:, None]
    if m.dim() != 4 or m.shape[1] != 1:
        raise ValueError(f"masks must be [K,1,H,W], got {tuple(mask.shape)}")
    if m.shape[-2:] != (h, w):
        kw = {} if mode == "nearest" else {"align_corners": False}
        m = F.interpolate(m, size=(h, w), mode=mode, **kw)
    return m.clamp(0.0, 1.0)


def draw_overlay(
    image: torch.Tensor,
    records_or_regions: Iterable[Any],
    *,
    accepted_color: Color = (0.0, 1.0, 0.0),
    rejected_color: Color = (1.0, 0.6, 0.0),
    undecided_color: Color = (0.0, 0.6, 1.0),
    thickness: int = 1,
    outline: int = 0,
    mask_alpha: float = 0.35,
    factor: int = 8,
    latent_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Each audited region's box on the image: accepted green, rejected orange (see the module docstring).

    ``records_or_regions``: TournamentRecords, their dicts, the region entries of a report's steps,
    miner ``Region``s or ``{"bbox": ...}`` dicts. Items without a decision (Regions) use
    ``undecided_color``; items with a mask (Regions) also get it tinted with α = ``mask_alpha``.
    The border is ``thickness`` pixels inside the box; ``outline`` > 0 puts a black band of that
    many pixels on both sides of it (outside the box and inside the border), so the border stays
    visible on content of its own colour (``readable_style`` gives both for an image size). An item
    with a ``batch_index`` is drawn on that image only (ValueError if the batch has no such image);
    one without on every image. Rejected boxes are drawn first, so an accepted box stays visible
    where they overlap.
    """
    batch, unbatched = _check_image(image)
    if int(thickness) != thickness or thickness < 1:
        raise ValueError(f"thickness must be an integer >= 1, got {thickness}")
    if not 0.0 <= mask_alpha <= 1.0:
        raise ValueError(f"mask_alpha must be in [0,1], got {mask_alpha}")
    if int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be an integer >= 1, got {factor}")
    if int(outline) != outline or outline < 0:
        raise ValueError(f"outline must be an integer >= 0, got {outline}")
    t, o = int(thickness), int(outline)
    colors = {
        True: _color(accepted_color, "accepted_color", batch),
        False: _color(rejected_color, "rejected_color", batch),
        None: _color(undecided_color, "undecided_color", batch),
    }
    b, _, h, w = batch.shape
    items = [_item(o) for o in records_or_regions]
    items.sort(key=lambda it: {None: 0, False: 1, True: 2}[it["accepted"]])  # stable: input order within a kind
    out = batch.clone()
    for it in items:
        rows = range(b) if it["batch"] is None else [int(it["batch"])]
        if not all(0 <= r < b for r in rows):
            raise ValueError(f"an item of batch_index {it['batch']} cannot be drawn on a batch of {b} image(s)")
        c = colors[it["accepted"]]
        if it["mask"] is not None and mask_alpha > 0:
            m = _fit_mask(it["mask"], h, w, "nearest")[:1]
            for r in rows:
                out[r : r + 1] = _tint(out[r : r + 1], m, c, mask_alpha)
        y0, x0, y1, x1 = _image_box(it, h, w, int(factor), latent_size)
        if y1 <= y0 or x1 <= x0:
            continue  # outside the image after clipping
        for r in rows:
            if o > 0:  # the dark band first: box grown by o, band t + 2o wide, then the colour over it
                grown = (max(0, y0 - o), max(0, x0 - o), min(h, y1 + o), min(w, x1 + o))
                _band(out[r], grown, t + 2 * o, torch.zeros_like(c))
            _band(out[r], (y0, x0, y1, x1), t, c)
    return out[0] if unbatched else out


def _band(view: torch.Tensor, box: tuple[int, int, int, int], t: int, c: torch.Tensor) -> None:
    """Paint the ``t``-pixel border inside the end-exclusive ``box`` of one [3,H,W] image."""
    y0, x0, y1, x1 = box
    for ys, xs in (
        (slice(y0, min(y1, y0 + t)), slice(x0, x1)),
        (slice(max(y0, y1 - t), y1), slice(x0, x1)),
        (slice(y0, y1), slice(x0, min(x1, x0 + t))),
        (slice(y0, y1), slice(max(x0, x1 - t), x1)),
    ):
        view[:, ys, xs] = c.view(3, 1, 1)


def readable_style(h: int, w: int) -> dict[str, int]:
    """``thickness`` and ``outline`` that stay visible at any size: about 1% of the short side, outlined."""
    t = max(1, round(min(h, w) / 100))
    return {"thickness": t, "outline": max(1, t // 2)}


def mask_overlay(
    image: torch.Tensor,
    masks: torch.Tensor,
    colors: Sequence[Color] | torch.Tensor | None = None,
    alpha: float = 0.35,
) -> torch.Tensor:
    """Tint mask k with colour c_k: ``I ← (1 - α·m_k)·I + α·m_k·c_k`` for k = 1..K in order.

    masks ``[K, 1, H', W']`` in [0, 1] (resized bilinearly to the image when H'×W' differs) are
    drawn on every image of the batch; ``colors`` defaults to ``palette(K)``. Where every m_k is 0
    the image is unchanged bit for bit.
    """
    batch, unbatched = _check_image(image)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0,1], got {alpha}")
    if not isinstance(masks, torch.Tensor) or not torch.isfinite(masks.float()).all():
        raise ValueError("masks must be a finite tensor [K,1,H,W]")
    _, _, h, w = batch.shape
    m = _fit_mask(masks, h, w, "bilinear")
    k = m.shape[0]
    cols = palette(k) if colors is None else list(colors)
    if len(cols) != k:
        raise ValueError(f"{len(cols)} colours for {k} masks")
    out = batch.clone()
    for i in range(k):
        if alpha > 0:
            out = _tint(out, m[i : i + 1].to(out.device), _color(cols[i], f"colors[{i}]", out), alpha)
    return out[0] if unbatched else out


__all__ = ["draw_overlay", "mask_overlay", "palette", "readable_style"]
