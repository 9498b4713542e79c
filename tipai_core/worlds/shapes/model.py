"""The ShapesWorld base model: a tiny text-conditioned U-Net, eps-parametrised in sigma space.

Pixel space is the latent space here (``x0 = 2·image - 1``, 3 channels, factor 1). In ComfyUI's
eps sigma space ``x = x0 + σ·ε``; the network predicts ε from the scaled input
``c_in·x`` with ``c_in = 1/√(σ² + σ_data²)`` and the noise embedding ``c_noise = ln(σ)/4``, and

    D(x, σ, c) = x - σ·ε̂(c_in·x, c_noise, c)                       (x0 prediction)

Text: token ids of the grammar (``grammar.tokenize``) through an embedding, learned positions and
a small transformer encoder with a key-padding mask; ``<bos>`` is never masked, so an empty
prompt (CFG dropout) still has one key and attention never softmaxes an all-masked row (NaN).
Image: two resolutions below the input, residual blocks with the noise embedding added, and
cross-attention to the text at H/2 and H/4.

``ShapesDenoiser`` is ``protocols.Denoiser``: CFG as a per-pixel map,
``D = D_u + w(p)·(D_c - D_u)``; inside a region mask the conditional branch uses the region
prompt and the action's emphasis e scales the guidance there: ``w_eff = w·(1 + (e - 1)·m)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ...diffusion.conditioning import Conditioning, guided_x0
from ...diffusion.parametrisation import Parametrisation
from .grammar import MAX_TOKENS, PAD, VOCAB, tokenize


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and noise range. ``size`` is the image side (a multiple of 4)."""

    size: int = 24
    channels: tuple[int, int, int] = (32, 64, 96)
    text_dim: int = 64
    text_layers: int = 2
    heads: int = 4
    sigma_min: float = 0.02
    sigma_max: float = 20.0
    sigma_data: float = 0.6

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        d["channels"] = tuple(d["channels"])
        return cls(**d)


class TextEncoder(nn.Module):
    def __init__(self, dim: int, layers: int, heads: int):
        super().__init__()
        self.embed = nn.Embedding(len(VOCAB), dim)
        self.pos = nn.Parameter(torch.zeros(MAX_TOKENS, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features ``[B, T, dim]``, key padding mask ``[B, T]``, True = ignore)."""
        pad = tokens == PAD
        h = self.embed(tokens) + self.pos[: tokens.shape[1]]
        return self.norm(self.encoder(h, src_key_padding_mask=pad)), pad


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int):
        super().__init__()
        self.n1 = nn.GroupNorm(8, cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.t = nn.Linear(temb, cout)
        self.n2 = nn.GroupNorm(8, cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.silu(self.n1(x))) + self.t(t)[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return h + self.skip(x)


class CrossAttention(nn.Module):
    def __init__(self, ch: int, text_dim: int, heads: int):
        super().__init__()
        self.norm = nn.GroupNorm(8, ch)
        self.attn = nn.MultiheadAttention(ch, heads, kdim=text_dim, vdim=text_dim, batch_first=True)

    def forward(self, x: torch.Tensor, text: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.norm(x).flatten(2).transpose(1, 2)
        out, _ = self.attn(q, text, text, key_padding_mask=pad, need_weights=False)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class ShapesUNet(nn.Module):
    """ε̂(c_in·x, c_noise, tokens) -> ``[B, 3, H, W]``; ``forward`` returns the x0 prediction D."""

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        self.config = config
        c1, c2, c3 = config.channels
        temb = 4 * c1
        self.temb = nn.Sequential(nn.Linear(c1, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.text = TextEncoder(config.text_dim, config.text_layers, config.heads)
        self.inp = nn.Conv2d(3, c1, 3, padding=1)
        self.d1 = ResBlock(c1, c1, temb)
        self.down1 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.d2 = ResBlock(c2, c2, temb)
        self.a2 = CrossAttention(c2, config.text_dim, config.heads)
        self.down2 = nn.Conv2d(c2, c3, 3, stride=2, padding=1)
        self.m1 = ResBlock(c3, c3, temb)
        self.am = CrossAttention(c3, config.text_dim, config.heads)
        self.m2 = ResBlock(c3, c3, temb)
        self.up2 = nn.Conv2d(c3, c2, 3, padding=1)
        self.u2 = ResBlock(2 * c2, c2, temb)
        self.au = CrossAttention(c2, config.text_dim, config.heads)
        self.up1 = nn.Conv2d(c2, c1, 3, padding=1)
        self.u1 = ResBlock(2 * c1, c1, temb)
        self.out = nn.Sequential(nn.GroupNorm(8, c1), nn.SiLU(), nn.Conv2d(c1, 3, 3, padding=1))
        last = cast(nn.Conv2d, self.out[-1])
        assert last.bias is not None  # the Conv2d above keeps its default bias=True
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def noise_embedding(self, sigma: torch.Tensor) -> torch.Tensor:
        half = self.config.channels[0] // 2
        freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32) / half).to(sigma)
        arg = (torch.log(sigma) / 4 * 250)[:, None] * freqs[None]  # c_noise = ln(σ)/4, spread over frequencies
        return self.temb(torch.cat([arg.sin(), arg.cos()], dim=1))

    def eps(self, x: torch.Tensor, sigma: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        sigma = sigma.to(x).reshape(-1).expand(x.shape[0])
        c_in = 1 / torch.sqrt(sigma**2 + self.config.sigma_data**2)
        t = self.noise_embedding(sigma)
        text, pad = self.text(tokens)
        h0 = self.d1(self.inp(x * c_in[:, None, None, None]), t)
        h1 = self.a2(self.d2(self.down1(h0), t), text, pad)
        h = self.m2(self.am(self.m1(self.down2(h1), t), text, pad), t)
        h = self.up2(F.interpolate(h, scale_factor=2, mode="nearest"))
        h = self.au(self.u2(torch.cat([h, h1], 1), t), text, pad)
        h = self.up1(F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.out(self.u1(torch.cat([h, h0], 1), t))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """D(x, σ, c) = x - σ·ε̂."""
        s = sigma.to(x).reshape(-1).expand(x.shape[0]).reshape(-1, 1, 1, 1)
        return x - s * self.eps(x, sigma, tokens)


def as_tokens(payload, batch: int, device=None) -> torch.Tensor:
    """Token ids ``[B, T]`` from a prompt string, a list of B strings, or a token tensor."""
    if isinstance(payload, torch.Tensor):
        t = payload.long()
    elif isinstance(payload, str):
        t = torch.tensor([tokenize(payload)])
    else:
        t = torch.tensor([tokenize(p) for p in payload])
    if t.shape[0] == 1 and batch > 1:
        t = t.expand(batch, -1)
    return t.to(device) if device is not None else t


class ShapesDenoiser:
    """``protocols.Denoiser`` over a ShapesUNet: ``payload`` is the prompt (str, list or tokens)."""

    param = Parametrisation.EPS

    def __init__(self, model: ShapesUNet):
        self.model = model.eval()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning | None) -> torch.Tensor:
        b = x.shape[0]
        sig = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1).expand(b)
        empty = as_tokens("", b)
        if cond is None or cond.payload is None:
            return self.model(x, sig, empty)
        cond_tok = as_tokens(cond.payload, b)
        branches = [empty, cond_tok]
        if cond.region_mask is not None and cond.region_payload is not None:
            branches.append(as_tokens(cond.region_payload, b))
        # one batched forward for all branches
        k = len(branches)
        out = self.model(x.repeat(k, 1, 1, 1), sig.repeat(k), torch.cat(branches)).chunk(k)
        return guided_x0(out[0], out[1], cond, out[2] if k == 3 else None)


def to_model_space(images: torch.Tensor) -> torch.Tensor:
    """RGB [0, 1] -> x0 in [-1, 1]."""
    return images * 2 - 1


class PixelDecoder:
    """``protocols.AuditDecoder`` for pixel-space worlds: ``(x + 1)/2`` clamped, factor 1."""

    factor = 1

    def __call__(self, latent: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        from ...diffusion.decode import view_factor

        f = view_factor(self.factor, scale)
        rgb = ((latent + 1) / 2).clamp(0, 1)
        return F.interpolate(rgb, scale_factor=f, mode="nearest") if f > 1 else rgb


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """Exponential moving average of the weights: ``θ_ema ← β·θ_ema + (1 - β)·θ``."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(beta).add_(p.detach(), alpha=1 - beta)
    for eb, b in zip(ema.buffers(), model.buffers()):
        eb.copy_(b)
