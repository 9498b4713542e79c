"""Sigma schedules, as ComfyUI's samplers take them: 1-D, strictly decreasing, ending at 0."""

from __future__ import annotations

import torch

from .parametrisation import Parametrisation


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
