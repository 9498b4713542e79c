"""DDIM in sigma space: the deterministic step, a segment of steps, and the short inversion of d steps.

With ``x = a(σ)·x0 + b(σ)·ε`` (``diffusion.Parametrisation``) a DDIM step from σ to σ' keeps
the predicted x0 and the implied ε:

    ε̂ = (x - a(σ)·x̂0) / b(σ),   x' = a(σ')·x̂0 + b(σ')·ε̂,   x̂0 = D(x, σ, cond).

The Euler step of the probability-flow ODE, ``x' = x + (σ' - σ)·(x - x̂0)/σ``, is the same map
in exact arithmetic for both parametrisations; they differ only in rounding, so each is kept
as written by its sampler (``sampler.py``).

DDIM inversion walks the schedule backwards, σ_i -> σ_{i-1} -> ... -> σ_{i-d}. The naive step
uses x̂0 at the lower σ; ``refine_iters > 0`` solves the implicit equation "a DDIM step from
x_hi lands on x_lo" by a fixed point on x̂0 with Anderson(1) acceleration, so the round trip
invert-then-denoise returns the start latent (exactly for the analytic Gaussian, see tests).
Each refinement costs one more denoiser call per inverted step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..protocols import Denoiser
from .conditioning import Conditioning
from .parametrisation import Parametrisation


def ddim_step(
    param: Parametrisation, x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor
) -> torch.Tensor:
    """``x' = a(σ')·x̂0 + b(σ')·(x - a(σ)·x̂0)/b(σ)``; σ must be > 0."""
    eps = param.eps_from(x, x0, sigma)
    return param.noise(x0, eps, sigma_next)


def euler_step(x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """Euler on ``dx/dσ = (x - x̂0)/σ`` (k-diffusion ``sample_euler``), valid for eps and flow."""
    d = (x - x0) / sigma
    return x + d * (sigma_next - sigma)


def check_latent(x: torch.Tensor, name: str = "x") -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} must be a latent [B, C, h, w], got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")


def ddim_segment(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    start: int,
    stop: int,
    cond: Conditioning | None,
    param: Parametrisation,
    after_step: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """DDIM from ``sigmas[start]`` down to ``sigmas[stop]`` (``stop - start`` denoiser calls).

    ``after_step(k, x)`` runs after each step, with x now at ``sigmas[k]`` (the editor uses it to
    put the control back outside the mask).
    """
    if not 0 <= start <= stop < sigmas.numel():
        raise ValueError(f"need 0 <= start <= stop < len(sigmas), got start={start}, stop={stop}")
    for k in range(start, stop):
        x0 = denoiser(x, sigmas[k], cond)
        x = ddim_step(param, x, x0, sigmas[k], sigmas[k + 1])
        if after_step is not None:
            x = after_step(k + 1, x)
    return x


def _row_dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u * v).flatten(1).sum(dim=1).reshape(-1, *([1] * (u.dim() - 1)))


def _invert_one(
    denoiser: Denoiser,
    x_lo: torch.Tensor,
    s_lo: torch.Tensor,
    s_hi: torch.Tensor,
    cond: Conditioning | None,
    param: Parametrisation,
    refine_iters: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    def lift(x0: torch.Tensor) -> torch.Tensor:
        # the x_hi whose DDIM step with this x̂0 lands on x_lo
        return param.noise(x0, param.eps_from(x_lo, x0, s_lo), s_hi)

    x0 = denoiser(x_lo, s_lo, cond)
    x_hi = lift(x0)
    prev_f = prev_g = None
    for _ in range(refine_iters):
        g = denoiser(x_hi, s_hi, cond)  # G(x̂0); the fixed point is x̂0 = G(x̂0)
        f = g - x0
        if prev_f is None:
            x0 = g
        else:
            assert prev_g is not None  # set together with prev_f
            df, dg = f - prev_f, g - prev_g
            den = _row_dot(df, df)
            gamma = torch.where(den > 0, _row_dot(f, df) / den.clamp_min(torch.finfo(den.dtype).tiny), 0.0)
            x0 = g - gamma * dg
        prev_f, prev_g = f, g
        x_hi = lift(x0)
    return x_hi, x0


def ddim_invert(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    start: int,
    d: int,
    cond: Conditioning | None,
    param: Parametrisation | str,
    refine_iters: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic DDIM inversion of d steps: x at ``sigmas[start]`` -> x at ``sigmas[start - d]``.

    Returns (x at σ_{start-d}, the last x̂0 estimate). Costs ``d·(1 + refine_iters)`` denoiser calls.
    Raises ValueError when d < 1, when d is larger than the steps left above ``start``, when
    ``sigmas[start]`` is 0, or when x holds NaN.
    """
    param = Parametrisation.parse(param)
    check_latent(x)
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}")
    if not 0 <= start < sigmas.numel():
        raise ValueError(f"start={start} outside the schedule of {sigmas.numel()} sigmas")
    if d > start:
        raise ValueError(f"d={d} is larger than the steps left to invert above step {start} ({start})")
    if refine_iters < 0:
        raise ValueError(f"refine_iters must be >= 0, got {refine_iters}")
    if not sigmas[start] > 0:
        raise ValueError(f"cannot invert from sigma 0 (sigmas[{start}])")
    x0 = x
    for k in range(start, start - d, -1):
        x, x0 = _invert_one(denoiser, x, sigmas[k], sigmas[k - 1], cond, param, refine_iters)
    return x, x0
