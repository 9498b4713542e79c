"""A cheap audit decoder: a linear latent-to-RGB map, upsampled to the audit resolution.

``rgb(p) = clamp(W·z(p) + c, 0, 1)`` per latent pixel, then each latent pixel becomes a block of
``f = factor · scale`` pixels (nearest). It is what ComfyUI's latent previewer does with the
model's latent_rgb_factors, and it serves coarse early audits and the analytic tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def view_factor(factor: int, scale: float) -> int:
    """Pixels per latent pixel of an audit view: ``factor · scale``, which must be a whole number >= 1."""
    f = factor * scale
    if f < 1 or abs(f - round(f)) > 1e-9:
        raise ValueError(
            f"scale={scale} gives {f} pixels per latent pixel with factor {factor}; need a whole number >= 1"
        )
    return int(round(f))


def latent_rgb(latent: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``W·z(p) + c`` per latent pixel: ``[B, C, h, w]`` -> ``[B, 3, h, w]``, not clamped."""
    return torch.einsum("oc,bchw->bohw", weight.to(latent), latent) + bias.to(latent)[None, :, None, None]


class LinearLatentDecoder:
    """``protocols.AuditDecoder`` from a ``[3, C]`` matrix W and a ``[3]`` bias c."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, factor: int = 8):
        if weight.dim() != 2 or weight.shape[0] != 3:
            raise ValueError(f"weight must be [3, C], got {tuple(weight.shape)}")
        self.weight = weight
        self.bias = torch.zeros(3, dtype=weight.dtype) if bias is None else bias
        self.factor = int(factor)

    def __call__(self, latent: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        if latent.dim() != 4 or latent.shape[1] != self.weight.shape[1]:
            raise ValueError(f"latent must be [B, {self.weight.shape[1]}, h, w], got {tuple(latent.shape)}")
        f = view_factor(self.factor, scale)
        rgb = latent_rgb(latent, self.weight, self.bias).clamp(0.0, 1.0)
        return F.interpolate(rgb, scale_factor=f, mode="nearest") if f > 1 else rgb
