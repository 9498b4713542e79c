"""Custom socket types and conversions between ComfyUI tensors and tipai_core tensors.

ComfyUI: IMAGE ``[B, H, W, 3]``, MASK ``[B, H, W]`` (or ``[H, W]``), values in [0, 1].
tipai_core: images ``[B, 3, H, W]``, masks ``[B, 1, H, W]``.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

# Socket types. Their names are public API: saved workflows connect them, never rename.
Auditor = io.Custom("TIPAI_AUDITOR")
Miner = io.Custom("TIPAI_MINER")
Editor = io.Custom("TIPAI_EDITOR")
Guard = io.Custom("TIPAI_GUARD")
Policy = io.Custom("TIPAI_POLICY")
Report = io.Custom("TIPAI_REPORT")


def image_to_core(image: torch.Tensor, where: str = "IMAGE") -> torch.Tensor:
    """ComfyUI's ``[B, H, W, C]`` as the core's ``[B, 3, H, W]`` in [0, 1]. ``where`` ("<node>: <input>")
    names the input in the errors; non-finite pixels are refused before the clamp, which would hide inf."""
    if image.dim() == 3:
        image = image[None]
    if image.dim() != 4 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{where} must be [B, H, W, C] with C in 1, 3, 4; got {tuple(image.shape)}")
    if not bool(image.isfinite().all()):
        raise ValueError(f"{where} contains NaN or inf pixels")
    x = image[..., :3] if image.shape[-1] >= 3 else image.expand(*image.shape[:-1], 3)
    return x.movedim(-1, 1).float().clamp(0, 1)


def image_from_core(image: torch.Tensor) -> torch.Tensor:
    return image.movedim(1, -1).clamp(0, 1).float().cpu()


def mask_to_core(mask: torch.Tensor) -> torch.Tensor:
    if mask.dim() == 2:
        mask = mask[None]
    if mask.dim() == 4 and mask.shape[1] == 1:
        return mask.float()
    if mask.dim() != 3:
        raise ValueError(f"MASK must be [B, H, W] or [H, W]; got {tuple(mask.shape)}")
    return mask[:, None].float()


def mask_from_core(mask: torch.Tensor) -> torch.Tensor:
    return mask[:, 0].float().cpu()
