"""Standalone A_g on a clean latent: N candidates, the original outside every mask bit for bit."""

from __future__ import annotations

import pytest
import torch

from tipai_core.diffusion.sampler import initial_latent, sample
from tipai_core.editing.region_edit import edit_region
from tipai_core.policy.actions import FixedKnobPolicy
from tipai_core.testing.synthetic import make_world, world_sigmas

POLICY = FixedKnobPolicy(
    knobs={
        "depth": ((2, 4), (0.5, 0.5)),
        "cfg_inside": ((2.0, 6.0), (0.5, 0.5)),
        "feather": ((0, 1), (0.5, 0.5)),
        "editor": (("invert", "renoise"), (0.5, 0.5)),
    }
)


def _clean(param):
    world = make_world(param)
    sigmas = world_sigmas(param)
    z = sample(world.denoiser, sigmas, initial_latent(world.shape, sigmas, param, 3), world.cond, param)
    return world, sigmas, z


@pytest.mark.parametrize("param", ["eps", "flow"])
def test_candidates_keep_the_original_outside_the_mask(param):
    world, sigmas, z = _clean(param)
    mask = torch.zeros(1, 1, *z.shape[-2:])
    mask[..., 2:6, 2:6] = 1.0
    res = edit_region(world.denoiser, param, sigmas, z, mask, POLICY, n=4, seed=11, cond=world.cond)
    assert res.candidates.shape == (4, *z.shape[1:]) and res.log_probs.shape == (4,)
    outside = (res.masks == 0).expand_as(res.candidates)
    assert torch.equal(res.candidates[outside], z.expand_as(res.candidates)[outside])
    inside = (mask > 0).expand_as(res.candidates)
    assert (res.candidates[inside] - z.expand_as(res.candidates)[inside]).abs().max() > 1e-3
    again = edit_region(world.denoiser, param, sigmas, z, mask, POLICY, n=4, seed=11, cond=world.cond)
    assert torch.equal(res.candidates, again.candidates)  # deterministic given the seed


def test_bad_input_is_named():
    world, sigmas, z = _clean("eps")
    with pytest.raises(ValueError, match="region_mask"):
        edit_region(world.denoiser, "eps", sigmas, z, torch.zeros(1, 1, 3, 3), POLICY, 2, 0, world.cond)
    with pytest.raises(ValueError, match="all zero"):
        edit_region(world.denoiser, "eps", sigmas, z, torch.zeros(1, 1, *z.shape[-2:]), POLICY, 2, 0, world.cond)
    with pytest.raises(ValueError, match="N must be"):
        edit_region(world.denoiser, "eps", sigmas, z, torch.ones(1, 1, *z.shape[-2:]), POLICY, 0, 0, world.cond)
