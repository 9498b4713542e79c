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
from enum import Enum

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
