"""The conditioning record and its combine: CFG as a per-pixel map, region prompts, emphasis.

A Denoiser (``protocols.Denoiser``) returns ``D = D_u + w(p)·(D_c - D_u)``. Inside a region's soft
mask m the conditional branch is the region prompt's, and prompt emphasis e scales the guidance:

    D_c(p) = (1 - m(p))·D_c,base(p) + m(p)·D_c,region(p)
    w(p)   = w_map(p)·(1 + m(p)·(e - 1))

``guided_x0`` is the one place that computes this; every denoiser (ComfyUI's, ShapesWorld's, the
analytic one) calls it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch


@dataclass(frozen=True)
class Conditioning:
    """What the Denoiser is conditioned on, including CFG as a per-pixel map.

    Attributes:
        payload: the model's conditioning for the prompt (ComfyUI: the encoded conds; the
            analytic mixture: per-class log-biases). Opaque to the core.
        cfg: the CFG scale w, a float or a map broadcastable to ``[B, 1, h, w]``.
        region_payload: conditioning for the region prompt, used where ``region_mask > 0``.
        region_mask: ``[B, 1, h, w]`` in [0, 1], where the regional conditioning applies.
        emphasis: prompt emphasis of the regional conditioning, float or ``[B]``.
    """

    payload: Any = None
    cfg: float | torch.Tensor = 1.0
    region_payload: Any = None
    region_mask: torch.Tensor | None = None
    emphasis: float | torch.Tensor = 1.0

    def with_region(
        self,
        region_mask: torch.Tensor,
        cfg_inside: torch.Tensor,
        emphasis: torch.Tensor,
        region_payload: Any = None,
    ) -> "Conditioning":
        """Batched conditioning for N candidates: CFG ``w_in`` inside the soft mask m, the base w outside.

        ``w(p) = (1 - m(p))·w_base + m(p)·w_in``; ``cfg_inside`` and ``emphasis`` are ``[N]``.
        """
        if region_mask.dim() != 4 or region_mask.shape[1] != 1:
            raise ValueError(f"region_mask must be [N, 1, h, w], got {tuple(region_mask.shape)}")
        n = region_mask.shape[0]
        w_in = cfg_inside.to(region_mask).reshape(n, 1, 1, 1)
        w_base = self.cfg if isinstance(self.cfg, torch.Tensor) else torch.tensor(float(self.cfg))
        w_base = w_base.to(region_mask)
        cfg_map = (1 - region_mask) * w_base + region_mask * w_in
        payload = self.payload if region_payload is None else region_payload
        return replace(
            self,
            cfg=cfg_map,
            region_payload=payload,
            region_mask=region_mask,
            emphasis=emphasis.to(region_mask).reshape(n),
        )


def guided_x0(
    x0_uncond: torch.Tensor,
    x0_cond: torch.Tensor,
    cond: Conditioning | None,
    x0_region: torch.Tensor | None = None,
) -> torch.Tensor:
    """``D = D_u + w(p)·(D_c(p) - D_u)``, with the region prompt's branch and emphasis inside the mask.

    ``x0_region`` is the conditional x̂0 under ``cond.region_payload`` (None: the base prompt's
    branch serves inside the mask too). Without a region mask this is plain CFG with the map w.
    """
    if cond is None:
        return x0_cond
    w: float | torch.Tensor = cond.cfg
    if isinstance(w, torch.Tensor):
        w = w.to(x0_cond)
    if cond.region_mask is not None:
        m = cond.region_mask.to(x0_cond)
        if x0_region is not None:
            x0_cond = (1 - m) * x0_cond + m * x0_region
        e = torch.as_tensor(cond.emphasis, dtype=x0_cond.dtype, device=x0_cond.device)
        e = e.reshape(-1, 1, 1, 1) if e.dim() else e
        w = torch.as_tensor(w, dtype=x0_cond.dtype, device=x0_cond.device) * (1 + m * (e - 1))
    return x0_uncond + w * (x0_cond - x0_uncond)
