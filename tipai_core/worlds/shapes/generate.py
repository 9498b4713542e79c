"""Plain sampling of the ShapesWorld model through the engine's sampler (``tipai_core.diffusion.sampler``).

Each image is its own run (batch 1, noise from its seed), exactly what the TiPAI loop audits, so
"plain vs loop" compare the same trajectories: ``x_T = σ_0·ε(seed)``, then ``sampler.sample`` with
``ShapesDenoiser`` on a Karras schedule in eps sigma space.

The schedule starts at ``SAMPLE_SIGMA_MAX = 5`` rather than the training range's σ_max = 20: with
eps prediction ``D = x - σ·ε̂`` an ε̂ error is amplified by σ, and at σ = 20 the x0 prediction of
the short-trained model is worse than the data mean (measured at step 600: x0 MSE 2.24 at σ = 20
vs 0.24 at σ = 5); starting at 5 removed most of the residual speckle (high-frequency energy of
the samples 0.153 -> 0.055) and raised binding accuracy on 32 held-out prompts from 0.29 to 0.37.
"""

from __future__ import annotations

import torch

from ...diffusion.conditioning import Conditioning
from ...diffusion.sampler import initial_latent, sample
from ...diffusion.sigmas import karras_sigmas
from .model import ShapesDenoiser, ShapesUNet

SAMPLE_SIGMA_MAX = 5.0


def sigmas_for(model: ShapesUNet, steps: int, sigma_max: float = SAMPLE_SIGMA_MAX) -> torch.Tensor:
    c = model.config
    return karras_sigmas(steps, sigma_min=c.sigma_min, sigma_max=min(sigma_max, c.sigma_max))


def start_latent(model: ShapesUNet, sigmas: torch.Tensor, seed: int) -> torch.Tensor:
    s = model.config.size
    return initial_latent((1, 3, s, s), sigmas, "eps", seed)


def generate(
    model: ShapesUNet,
    prompt: str,
    seed: int,
    steps: int = 20,
    cfg: float = 3.0,
    sampler: str = "ddim",
    sigma_max: float = SAMPLE_SIGMA_MAX,
) -> torch.Tensor:
    """One image ``[3, H, W]`` in [0, 1] for (prompt, seed)."""
    sig = sigmas_for(model, steps, sigma_max)
    x = sample(
        ShapesDenoiser(model),
        sig,
        start_latent(model, sig, seed),
        Conditioning(payload=prompt, cfg=cfg),
        "eps",
        sampler,
    )
    return ((x[0] + 1) / 2).clamp(0, 1)
