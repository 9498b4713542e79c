"""Standalone A_g: N candidates for a masked region of a finished (clean) latent.

The diffusion editor works on a sampling state x at σ_i, so a clean latent z is first placed at
the last non-zero noise level of the schedule, ``x = a(σ_i)·z + b(σ_i)·ε`` with ε from ``seed``
(i = n - 1). The editor then re-noises the region by each candidate's depth d, re-denoises it
with the candidate's knobs, and returns x̂0 at σ_i. Outside the mask each candidate is exactly z:
``ẑ_n = m_n·x̂0_n + (1 - m_n)·z``, so an untouched pixel is the original, bit for bit where m = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..diffusion.conditioning import Conditioning
from ..diffusion.ddim import check_latent
from ..diffusion.parametrisation import Parametrisation
from ..mining.masks import check_mask_matches
from ..policy.actions import Action, PolicyState
from ..protocols import EditContext
from .diffusion_editor import DiffusionEditor, seeded_noise


@dataclass
class RegionEdit:
    candidates: torch.Tensor  # [N, C, h, w] clean latents, equal to z where the masks are 0
    masks: torch.Tensor  # [N, 1, h, w]
    actions: list[Action]
    log_probs: torch.Tensor  # [N]


def edit_region(
    denoiser,
    param: Parametrisation | str,
    sigmas: torch.Tensor,
    z: torch.Tensor,
    region_mask: torch.Tensor,
    policy,
    n: int,
    seed: int,
    cond: Conditioning | None = None,
    editor=None,
    prompt: str = "",
) -> RegionEdit:
    """N candidates for ``region_mask [1, 1, h, w]`` of the clean latent ``z [1, C, h, w]``; ``editor`` any
    ``protocols.Editor`` (the diffusion editor by default), ``prompt`` the text it edits toward (the learned
    editor reads it)."""
    param = Parametrisation.parse(param)
    check_latent(z, "z")
    if z.shape[0] != 1:
        raise ValueError(f"edit_region takes one latent, z has batch {z.shape[0]}")
    check_mask_matches(region_mask, z, "region_mask")
    if not (region_mask > 0).any():
        raise ValueError("region_mask is all zero: nothing to edit")
    if n < 1:
        raise ValueError(f"N must be >= 1, got {n}")
    nonzero = int((sigmas > 0).sum())
    if nonzero < 2:
        raise ValueError(f"sigmas need at least 2 non-zero levels to re-noise a region, got {nonzero}")
    i = nonzero - 1
    x = param.noise(z, seeded_noise(seed, z)[None], sigmas[i])
    state = PolicyState(
        step=i,
        n_steps=sigmas.numel() - 1,
        t=i / (sigmas.numel() - 1),
        sigma=float(sigmas[i]),
        region_area=float((region_mask > 0).float().mean()),
        region_score=1.0,
        audit_scale=1.0,
        max_depth=i,
    )
    actions, logp = policy.propose(state, n, torch.Generator().manual_seed(int(seed)))
    editor = editor or DiffusionEditor()
    # x̂0 at σ_i of the control: the denoiser's own, so that the editor's outside projection is consistent
    x0 = denoiser(x, sigmas[i], cond)
    res = editor(EditContext(denoiser, param, sigmas, i, x, x0, cond, prompt=prompt), region_mask.to(z.dtype), actions)
    m = res.masks
    candidates = torch.where(m == 0, z, m * res.x0 + (1 - m) * z)
    return RegionEdit(candidates, m, actions, logp)
