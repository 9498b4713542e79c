"""One page that shows what the loop did, for people: the result, its overlay, one strip per tournament.

``TournamentStrips`` is an ``AuditSuite.on_tournament`` observer: it keeps each tournament's record and
small copies of its N+1 judged views (control first). ``loop_picture`` lays them out:

    [ result ] [ overlay: accepted green, rejected orange ]
    step s · image b · region r · accepted candidate k            (one row per tournament)
    [ C0 S=… ] [ #1 S=… u=… ] … [ #N S=… u=… ]                     winner framed green, a kept control grey

Thumbnails keep memory small at any image size (``THUMB`` pixels on the long side); at most
``max_tournaments`` are kept (the first ones), and the picture says how many were left out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .tournament_record import TournamentRecord

THUMB = 96  # long side of a candidate thumbnail, in pixels
PANEL = 256  # long side of the result and overlay panels
PAD = 8
LINE = 14  # text line height of PIL's default font, with spacing
WINNER, CONTROL, FRAME = (0, 200, 0), (150, 150, 150), 3


def _fit(images: torch.Tensor, long_side: int) -> torch.Tensor:
    """[K,3,H,W] resized so the long side is ``long_side`` (nearest up, so small images stay crisp)."""
    h, w = images.shape[-2:]
    s = long_side / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    mode = "nearest" if s >= 1 else "area"
    return F.interpolate(images.float(), size=size, mode=mode).clamp(0, 1)


class TournamentStrips:
    """Collects (record, thumbnails [N+1,3,h,w]) per tournament; use it as ``AuditSuite.on_tournament``."""

    def __init__(self, max_tournaments: int = 24):
        self.max_tournaments = int(max_tournaments)
        self.strips: list[tuple[TournamentRecord, torch.Tensor]] = []
        self.left_out = 0

    def __call__(self, record: TournamentRecord, judged: torch.Tensor) -> None:
        if len(self.strips) >= self.max_tournaments:
            self.left_out += 1
            return
        self.strips.append((record, _fit(judged.detach().cpu(), THUMB)))


def _to_pil(img: torch.Tensor):
    from PIL import Image

    arr = (img.detach().float().cpu().permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype("uint8")
    return Image.fromarray(arr)


def _caption(record: TournamentRecord, i: int) -> str:
    s = record.scores["S"][i]
    return f"C0 S={s:.3f}" if i == 0 else f"#{i} S={s:.3f} u={record.utilities[i]:.3f}"


def loop_picture(
    image: torch.Tensor, overlay: torch.Tensor, strips: TournamentStrips | None, title: str = ""
) -> torch.Tensor:
    """The page as a float [3, H, W] image in [0, 1]; ``image`` and ``overlay`` are [3, h, w]."""
    from PIL import Image, ImageDraw

    image, overlay = image.detach(), overlay.detach()  # a picture for people: no graph to keep
    panels = [_to_pil(p[0]) for p in (_fit(image[None], PANEL), _fit(overlay[None], PANEL))]
    rows = strips.strips if strips is not None else []
    # a column fits its thumbnail and its caption (PIL's default font is about 6 px a character)
    thumb_w = max(max((t.shape[-1] for _, t in rows), default=THUMB), 6 * len("#10 S=0.000 u=0.000"))
    thumb_h = max((t.shape[-2] for _, t in rows), default=THUMB)
    n_max = max((t.shape[0] for _, t in rows), default=0)
    width = max(sum(p.width for p in panels) + 3 * PAD, n_max * (thumb_w + PAD) + PAD, 420)
    row_h = LINE + thumb_h + LINE + PAD
    header = (LINE * 2 if title else LINE) + PAD
    left = strips.left_out if strips is not None else 0
    height = header + max(p.height for p in panels) + PAD + LINE + len(rows) * row_h + (LINE if left else 0) + PAD
    page = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(page)
    y = PAD
    if title:
        draw.text((PAD, y), title, fill=(240, 240, 240))
        y += LINE
    draw.text((PAD, y), "result", fill=(200, 200, 200))
    draw.text((panels[0].width + 2 * PAD, y), "overlay: green accepted, orange rejected", fill=(200, 200, 200))
    y += LINE
    x = PAD
    for p in panels:
        page.paste(p, (x, y))
        x += p.width + PAD
    y += max(p.height for p in panels) + PAD
    draw.text(
        (PAD, y), f"{len(rows) + left} tournament(s); each: the control C0, then the N candidates", fill=(200, 200, 200)
    )
    y += LINE
    for record, thumbs in rows:
        verdict = f"accepted candidate {record.winner}" if record.accepted else "control kept"
        region = record.region.get("index")
        draw.text(
            (PAD, y),
            f"step {record.step} · image {record.batch_index} · region {region} · {verdict}",
            fill=(230, 230, 230),
        )
        y += LINE
        for i in range(thumbs.shape[0]):
            x = PAD + i * (thumb_w + PAD)
            page.paste(_to_pil(thumbs[i]), (x, y))
            won = record.accepted and i == record.winner
            kept = not record.accepted and i == 0
            if won or kept:
                box = [x - 1, y - 1, x + thumbs.shape[-1], y + thumbs.shape[-2]]
                draw.rectangle(box, outline=WINNER if won else CONTROL, width=FRAME)
            draw.text((x, y + thumb_h + 1), _caption(record, i), fill=(210, 210, 210))
        y += thumb_h + LINE + PAD
    if left:
        draw.text((PAD, y), f"… and {left} more tournament(s), in the report", fill=(200, 200, 200))
    arr = torch.frombuffer(bytearray(page.tobytes()), dtype=torch.uint8).reshape(height, width, 3)
    return arr.permute(2, 0, 1).float() / 255.0


__all__ = ["THUMB", "TournamentStrips", "loop_picture"]
