"""An auditor whose judgement is known in closed form, for the miner tests.

The backbone is a colour model: patch token a_j = mean RGB of a 16×16 patch (+0.05, so black is not
the zero vector), one linear block (the identity; the Grad-CAM layer), e_I = unit mean of the block's
outputs, z_j = unit block output. E_t of a text is the unit sum of the colour words it names (red,
green, blue; none: grey). So "a red image" is contradicted exactly where the image is not red, which
is what the miner must find. Also: real-photo and rendered-text helpers.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..auditor import Auditor
from ..auditor.backbones import ImageTextBackbone

COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


class ColourBackbone(ImageTextBackbone):
    kind, name, image_size, embed_dim = "analytic", "colour", 256, 3

    def __init__(self, patch: int = 16) -> None:
        super().__init__((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        self.patch = patch
        self.block = nn.Linear(3, 3, bias=False)
        with torch.no_grad():
            self.block.weight.copy_(torch.eye(3))
        self.requires_grad_(False)

    @property
    def gradcam_layer(self) -> nn.Module:
        return self.block

    @property
    def image_encoder(self) -> nn.Module:
        return self

    def logit_scale(self) -> torch.Tensor:
        return torch.tensor(100.0)

    def encode_image(self, images):
        x = self.preprocess(images)
        t = F.avg_pool2d(x, self.patch).flatten(2).transpose(1, 2) + 0.05  # [B, N, 3]
        y = self.block(t)
        side = int(round(y.shape[1] ** 0.5))
        return F.normalize(y.mean(1), dim=-1), F.normalize(y, dim=-1).reshape(y.shape[0], side, side, 3)

    def encode_text(self, prompts):
        out = []
        for p in prompts:
            v = torch.zeros(3)
            for w, c in COLOURS.items():
                if w in p.lower():
                    v += torch.tensor(c)
            out.append(v if v.any() else torch.ones(3))
        return F.normalize(torch.stack(out), dim=-1)


def colour_auditor() -> Auditor:
    return Auditor(ColourBackbone(), classes=["nsfw"])


def render_text(img: torch.Tensor, text: str, xy: tuple[int, int], size: int = 40, fill=(10, 10, 10)):
    """Draw text into a [1,3,H,W] image with PIL's built-in font; returns (image, bbox (y0,x0,y1,x1))."""
    from PIL import Image, ImageDraw, ImageFont

    arr = (img[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    im = Image.fromarray(arr)
    draw, font = ImageDraw.Draw(im), ImageFont.load_default(size=size)
    draw.text(xy, text, fill=fill, font=font)
    x0, y0, x1, y1 = draw.textbbox(xy, text, font=font)
    out = torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float() / 255.0
    return out, (y0, x0, y1, x1)


def box_mask(size: tuple[int, int], box) -> torch.Tensor:
    m = torch.zeros(1, 1, *size)
    m[..., box[0] : box[2], box[1] : box[3]] = 1.0
    return m


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a > 0, b > 0
    return float((a & b).sum()) / max(1, float((a | b).sum()))


def astronaut() -> torch.Tensor:
    import skimage.data

    return torch.from_numpy(skimage.data.astronaut().copy()).permute(2, 0, 1)[None].float() / 255.0
