"""The plain sampler that the TiPAI loop reuses, so "plain vs loop" run the same code.

``sample`` is k-diffusion's loop in sigma space: at step i it computes ``x̂0 = D(x, σ_i)``, hands
``(i, x, x̂0)`` to an optional callback (ComfyUI's step callback sees the same pair), then steps
to ``σ_{i+1}`` with Euler or DDIM. A callback that returns a new x restarts step i from it
(one more denoiser call at σ_i), exactly as the ComfyUI glue restarts on ``sigmas[i:]``.
A callback that returns None changes nothing: the run is the plain run, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..protocols import Denoiser
from .conditioning import Conditioning
from .ddim import check_latent, ddim_step, euler_step
from .parametrisation import Parametrisation
from .sigmas import validate_sigmas

StepCallback = Callable[[int, torch.Tensor, torch.Tensor], "torch.Tensor | None"]
SAMPLERS = ("euler", "ddim")


def initial_latent(
    shape: tuple[int, ...],
    sigmas: torch.Tensor,
    param: Parametrisation | str,
    seed: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Start latent at ``σ_0`` from pure noise: ``x = a(σ_0)·0 + b(σ_0)·ε``, ε from ``seed``."""
    param = Parametrisation.parse(param)
    gen = torch.Generator().manual_seed(int(seed))
    eps = torch.randn(shape, generator=gen, dtype=dtype)
    return param.noise(torch.zeros_like(eps), eps, sigmas[0].to(dtype))


def sample(
    denoiser: Denoiser,
    sigmas: torch.Tensor,
    x: torch.Tensor,
    cond: Conditioning | None,
    param: Parametrisation | str,
    sampler: str = "euler",
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run the schedule from x at ``sigmas[0]`` to ``sigmas[-1]``; deterministic given x."""
    param = Parametrisation.parse(param)
    validate_sigmas(sigmas, param)
    check_latent(x)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    for i in range(sigmas.numel() - 1):
        x0 = denoiser(x, sigmas[i], cond)
        if callback is not None:
            new_x = callback(i, x, x0)
            if new_x is not None:
                x = new_x
                x0 = denoiser(x, sigmas[i], cond)
        if sampler == "euler":
            x = euler_step(x, x0, sigmas[i], sigmas[i + 1])
        else:
            x = ddim_step(param, x, x0, sigmas[i], sigmas[i + 1])
    return x
