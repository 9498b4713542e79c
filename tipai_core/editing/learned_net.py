"""The learned local editor's network: a small U-Net with FiLM conditioning on the prompt and t.

    Î = A_g(X, m, p, t),   X = I ⊙ (1 − m) + (√(1 − s²)·I + s·ε) ⊙ m,   ε ∼ N(0, 1)

Input channels are X and m; the prompt embedding e_p (the auditor's text features, or a learned null
vector for the unconditional branch) and a sinusoidal embedding of t ∈ [0, 1] give one vector that
scales and shifts every block's features (FiLM). Why this shape:

* the region is filled from its surroundings, so the net must see well outside the mask: two
  resolution levels and a dilated middle block give a receptive field of about 40 pixels, which covers
  a ShapesWorld image and a 64×64 latent region with its context, at a few hundred thousand weights;
* one forward makes all N candidates of a region at once (a batch), so a candidate costs a small
  fraction of one denoiser evaluation;
* FiLM conditions every block on the text without attention, which keeps the net cheap and shape
  agnostic (any H, W; odd sizes are padded);
* the learned null text vector, trained by dropping the prompt, gives classifier-free guidance inside
  the region, which is what the action's inside-CFG knob drives.

The output is the prediction inside the region; the caller composites ``X ⊙ (1 − m) + Î ⊙ m``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class EditorArch:
    """What shapes the network's tensors (stored in the editor file's identity)."""

    channels: int = 3  # image (RGB) or latent channels
    text_dim: int = 64  # width of the prompt embedding it reads
    width: int = 32
    t_dim: int = 16

    def to_dict(self) -> dict:
        return asdict(self)


def t_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t ∈ [0, 1] ``[B, dim]``."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * (-math.log(100.0) / max(half - 1, 1)))
    ang = t.float()[:, None] * 100.0 * freqs[None]
    return torch.cat([ang.sin(), ang.cos()], dim=-1).to(t.dtype if t.is_floating_point() else torch.float32)


class FiLMBlock(nn.Module):
    """conv → GroupNorm → FiLM(scale, shift) → SiLU → conv, with a residual path."""

    def __init__(self, c_in: int, c_out: int, cond: int, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation)
        self.norm = nn.GroupNorm(min(8, c_out), c_out)
        self.film = nn.Linear(cond, 2 * c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.conv1(x))
        scale, shift = self.film(c)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(h * (1 + scale) + shift)
        return self.skip(x) + self.conv2(h)


class EditorNet(nn.Module):
    """A_g's network; ``forward(x, m, text, t) -> Î [B, C, H, W]`` (``text`` None: the null branch)."""

    text_mean: torch.Tensor
    text_scale: torch.Tensor

    def __init__(self, arch: EditorArch | None = None):
        super().__init__()
        self.arch = a = arch or EditorArch()
        w, cond = a.width, a.width * 4
        self.null_text = nn.Parameter(torch.zeros(a.text_dim))
        # CLIP text features share one large common direction (prompts of a world sit at cosines of 0.9
        # and more), so they are centred and scaled to unit spread first (the trainer sets both)
        self.register_buffer("text_mean", torch.zeros(a.text_dim))
        self.register_buffer("text_scale", torch.ones(()))
        self.cond = nn.Sequential(nn.Linear(a.text_dim + a.t_dim, cond), nn.SiLU(), nn.Linear(cond, cond))
        self.inp = nn.Conv2d(a.channels + 1, w, 3, padding=1)
        self.down1 = FiLMBlock(w, w, cond)
        self.pool = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1)
        self.down2 = FiLMBlock(2 * w, 2 * w, cond)
        self.mid = FiLMBlock(2 * w, 2 * w, cond, dilation=2)
        self.up = nn.Conv2d(2 * w, w, 3, padding=1)
        self.up1 = FiLMBlock(2 * w, w, cond)
        self.out = nn.Conv2d(w, a.channels, 3, padding=1)

    def forward(
        self,
        x: torch.Tensor,
        m: torch.Tensor,
        text: torch.Tensor | None,
        t: torch.Tensor,
        drop: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``drop [B]`` (bool): rows that take the null text instead of ``text`` (prompt dropout in training)."""
        b, _, h, w = x.shape
        null = self.null_text[None].expand(b, -1)
        if text is None:
            text = null
        else:
            text = (text.to(null) - self.text_mean) / self.text_scale
            if drop is not None:
                text = torch.where(drop[:, None], null, text)
        c = self.cond(torch.cat([text.to(x.dtype), t_embedding(t.to(x.dtype), self.arch.t_dim)], dim=-1))
        ph, pw = h % 2, w % 2
        z = torch.cat([x, m.to(x.dtype)], dim=1)
        if ph or pw:
            z = F.pad(z, (0, pw, 0, ph), mode="replicate")
        h1 = self.down1(self.inp(z), c)
        h2 = self.mid(self.down2(self.pool(h1), c), c)
        u = self.up(F.interpolate(h2, size=h1.shape[-2:], mode="nearest"))
        y = self.out(self.up1(torch.cat([u, h1], dim=1), c))
        return y[:, :, :h, :w]


def fit_text_norm(net: EditorNet, text: torch.Tensor) -> None:
    """Centre and scale the text input on the training prompts' features ``[N, D]``."""
    mean = text.float().mean(0)
    spread = (text.float() - mean).std()
    net.text_mean.copy_(mean)
    net.text_scale.copy_(spread.clamp_min(1e-6))


__all__ = ["EditorArch", "EditorNet", "fit_text_norm", "t_embedding"]
