"""Masks: dilation, erosion and feathering (kornia), and the pixel <-> latent mapping.

Masks are float tensors ``[B, 1, H, W]`` in [0, 1]. A binary mask holds exactly 0 or 1. Feathering
is a Gaussian blur of finite support, so a feathered mask stays exactly 0 farther than the
kernel radius from the mask: the blend promise "where m == 0 the latent is the control's, bit for
bit" depends on that.

The VAE factor f (8 for SD) maps a latent pixel (i, j) to the pixel block
``[f·i, f·i + f) × [f·j, f·j + f)``; images must be whole multiples of f.
"""

from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F


def check_mask(mask: torch.Tensor, name: str = "mask") -> None:
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"{name} must be [B, 1, H, W], got shape {tuple(mask.shape)}")
    if not torch.isfinite(mask).all():
        raise ValueError(f"{name} contains NaN or inf")


def check_mask_matches(mask: torch.Tensor, latent: torch.Tensor, name: str = "mask") -> None:
    """The mask covers the latent's spatial size, and its batch is 1 or the latent's."""
    check_mask(mask, name)
    if mask.shape[-2:] != latent.shape[-2:] or mask.shape[0] not in (1, latent.shape[0]):
        raise ValueError(
            f"{name} of shape {tuple(mask.shape)} does not match the latent of shape {tuple(latent.shape)}"
        )


MAX_RADIUS = 64  # morphology and feather radii, in pixels: beyond this a "region" is the whole image


def _check_radius(radius: int) -> None:
    if not 0 <= radius <= MAX_RADIUS:
        raise ValueError(f"radius must be in [0, {MAX_RADIUS}], got {radius}")


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Grow a mask by ``radius`` pixels (square structuring element); radius 0 returns it unchanged.

    A flat square dilation is the max over the (2r+1)² window: one max-pool, whose padding never wins
    the max, so pixels outside the image do not grow the mask (kornia's geodesic border).
    """
    check_mask(mask)
    _check_radius(radius)
    if radius == 0:
        return mask
    return F.max_pool2d(mask, 2 * radius + 1, stride=1, padding=radius)


def erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Shrink a mask by ``radius`` pixels; pixels outside the image do not erode it (min over the window)."""
    check_mask(mask)
    _check_radius(radius)
    if radius == 0:
        return mask
    return -F.max_pool2d(-mask, 2 * radius + 1, stride=1, padding=radius)


def feather(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Soft edge of ``radius`` pixels: Gaussian blur with kernel ``2r+1`` and σ = r/2, clamped to [0, 1].

    The support grows by at most r; values farther out stay exactly 0. Radius 0 returns the mask.
    """
    check_mask(mask)
    _check_radius(radius)
    if radius == 0:
        return mask
    k = 2 * radius + 1
    out = kornia.filters.gaussian_blur2d(mask, (k, k), (radius / 2.0, radius / 2.0), border_type="replicate")
    # the blur of an all-ones window may round to 1 - ulp; snap it, and keep the exact zeros
    return torch.where(out >= 1 - 1e-6, torch.ones_like(out), out.clamp(0.0, 1.0))


def pixel_to_latent(mask: torch.Tensor, factor: int, mode: str = "max") -> torch.Tensor:
    """Pixel mask ``[B,1,f·h,f·w]`` -> latent mask ``[B,1,h,w]``.

    ``max``: a latent pixel is covered if any of its f×f pixels is (never loses a region);
    ``area``: the covered fraction of its block.
    """
    check_mask(mask)
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    h, w = mask.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"mask size {h}x{w} is not a multiple of the VAE factor {factor}")
    if mode == "max":
        return F.max_pool2d(mask, factor)
    if mode == "area":
        return F.avg_pool2d(mask, factor)
    raise ValueError(f"mode must be 'max' or 'area', got {mode!r}")


def latent_to_pixel(mask: torch.Tensor, factor: int, mode: str = "nearest") -> torch.Tensor:
    """Latent mask ``[B,1,h,w]`` -> pixel mask ``[B,1,f·h,f·w]`` (``nearest`` blocks or ``bilinear``)."""
    check_mask(mask)
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    if mode == "nearest":
        return mask.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    if mode == "bilinear":
        out = F.interpolate(mask, scale_factor=factor, mode="bilinear", align_corners=False)
        # keep exact zeros where the whole latent neighbourhood is 0
        return torch.where(latent_to_pixel(dilate(mask, 1), factor) == 0, torch.zeros_like(out), out.clamp(0, 1))
    raise ValueError(f"mode must be 'nearest' or 'bilinear', got {mode!r}")


def check_user_mask(user_mask: torch.Tensor, batch: int, size: tuple[int, int]) -> None:
    """A user's pixel mask ``[1 or B, 1, H, W]`` for a batch of B images of ``size = (H, W)`` pixels."""
    check_mask(user_mask, "user_mask")
    if tuple(user_mask.shape[-2:]) != tuple(size):
        raise ValueError(
            f"user_mask: the user mask is {user_mask.shape[-1]}x{user_mask.shape[-2]} pixels but the image is "
            f"{size[1]}x{size[0]}; resize the mask to the image size"
        )
    if user_mask.shape[0] not in (1, batch):
        raise ValueError(
            f"user_mask: the user mask batch ({user_mask.shape[0]}) must be 1 or the image batch ({batch})"
        )
