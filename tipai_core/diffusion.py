"""Diffusion in sigma space: the noise parametrisation, the conditioning record and sigma schedules.

Both families ComfyUI runs are written as ``x = a(σ)·x0 + b(σ)·ε``:

* ``eps`` (eps- and v-prediction, SD1.5 / SDXL, k-diffusion sigma space): ``a = 1``, ``b = σ``;
* ``flow`` (rectified flow, SD3 / Flux): ``a = 1 - σ``, ``b = σ``.

A Denoiser (``protocols.Denoiser``) returns the x0 prediction ``D(x, σ, cond)``; CFG is a
per-pixel scale map ``w(p)``: ``D = D_u + w·(D_c - D_u)``, so ``w`` inside a mask may differ
from ``w`` outside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

import torch


class Parametrisation(str, Enum):
    """How a noisy latent is made from x0 and ε at noise level σ."""

    EPS = "eps"
    FLOW = "flow"

    @classmethod
    def parse(cls, value: "Parametrisation | str") -> "Parametrisation":
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"param must be 'eps' or 'flow', got {value!r}") from None

    def coefficients(self, sigma: torch.Tensor | float) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """(a(σ), b(σ)) with ``x = a·x0 + b·ε``."""
        if self is Parametrisation.EPS:
            return 1.0, sigma
        return 1.0 - sigma, sigma

    def noise(self, x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """``x = a(σ)·x0 + b(σ)·ε``."""
        a, b = self.coefficients(_as_column(sigma, x0))
        return a * x0 + b * eps

    def eps_from(self, x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """The ε implied by (x, x0) at σ > 0: ``ε = (x - a·x0) / b``."""
        a, b = self.coefficients(_as_column(sigma, x))
        return (x - a * x0) / b

    @property
    def sigma_max_allowed(self) -> float:
        return math.inf if self is Parametrisation.EPS else 1.0


def _as_column(sigma: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor | float:
    """σ as a scalar or a ``[B, 1, 1, 1]`` column that broadcasts over a latent."""
    if isinstance(sigma, torch.Tensor):
        if sigma.dim() == 0:
            return sigma.to(like.dtype)
        return sigma.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))
    return float(sigma)


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


def cfg_combine(x0_uncond: torch.Tensor, x0_cond: torch.Tensor, cfg: float | torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance with a per-pixel scale map: ``D = D_u + w(p)·(D_c - D_u)``."""
    return x0_uncond + cfg * (x0_cond - x0_uncond)


def karras_sigmas(
    n: int, sigma_min: float = 0.0292, sigma_max: float = 14.6146, rho: float = 7.0, dtype=torch.float32
) -> torch.Tensor:
    """Karras et al. schedule, n steps, plus the final 0 (as ComfyUI's ``karras`` scheduler)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sig = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sig, sig.new_zeros(1)]).to(dtype)


def flow_sigmas(n: int, shift: float = 3.0, dtype=torch.float32) -> torch.Tensor:
    """Rectified-flow schedule, n steps from σ = 1 to 0 with time shift (SD3: 3.0, Flux: dynamic).

    ``σ(t) = s·t / (1 + (s - 1)·t)`` on ``t = linspace(1, 0, n + 1)``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    t = torch.linspace(1, 0, n + 1, dtype=torch.float64)
    return (shift * t / (1 + (shift - 1) * t)).to(dtype)


def validate_sigmas(sigmas: torch.Tensor, param: Parametrisation) -> None:
    """A schedule is 1-D, finite, strictly decreasing, ≥ 0 (and ≤ 1 for flow)."""
    if sigmas.dim() != 1 or sigmas.numel() < 2:
        raise ValueError(f"sigmas must be 1-D with at least 2 entries, got shape {tuple(sigmas.shape)}")
    if not torch.isfinite(sigmas).all():
        raise ValueError("sigmas must be finite")
    if not (sigmas[1:] < sigmas[:-1]).all():
        raise ValueError("sigmas must be strictly decreasing")
    if sigmas[-1] < 0 or sigmas[0] > param.sigma_max_allowed:
        raise ValueError(f"sigmas must lie in [0, {param.sigma_max_allowed}] for param={param.value}")
