"""The diffusion editor A_g: the control outside the mask, exact identity edits, reproducible seeds, bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tipai_core.diffusion.parametrisation import Parametrisation
from tipai_core.diffusion.sampler import initial_latent, sample
from tipai_core.editing.diffusion_editor import DiffusionEditor, action_mask
from tipai_core.policy.actions import Action
from tipai_core.protocols import EditContext
from tipai_core.records.costs import Costs, CountingDenoiser
from tipai_core.testing.synthetic import make_world, world_sigmas

STEP = 8


def _ctx(param="eps", dtype=torch.float32, seed=1):
    world = make_world(param, dtype=dtype)
    sigmas = world_sigmas(param).to(dtype)
    x = initial_latent(world.shape, sigmas, param, seed, dtype=dtype)
    state = {}

    def grab(i, xi, x0i):
        if i == STEP:
            state["x"], state["x0"] = xi, x0i

    sample(world.denoiser, sigmas, x, world.cond, param, callback=grab)
    ctx = EditContext(
        world.denoiser, Parametrisation(param), sigmas, STEP, state["x"], state["x0"], world.cond, world.region_payload
    )
    return world, ctx


@pytest.mark.parametrize("param", ["eps", "flow"])
def test_candidates_equal_the_control_outside_their_masks_bit_for_bit(param):
    world, ctx = _ctx(param)
    actions = [
        Action(dilation=1, feather=1, cfg_inside=4.0, emphasis=2.0, jitter=0.5, seed=1, depth=4, editor="invert"),
        Action(dilation=0, feather=2, cfg_inside=2.0, emphasis=1.0, jitter=0.0, seed=2, depth=2, editor="renoise"),
        Action(dilation=2, feather=0, cfg_inside=1.0, emphasis=0.5, jitter=0.3, seed=3, depth=6, editor="invert"),
    ]
    res = DiffusionEditor()(ctx, world.planted_mask(), actions)
    assert res.latents.shape == (3, *ctx.x.shape[1:])
    for j, a in enumerate(actions):
        m = action_mask(world.planted_mask(), a)
        assert torch.equal(res.masks[j : j + 1], m)
        out = (m == 0).expand_as(ctx.x)
        assert torch.equal(res.latents[j : j + 1][out], ctx.x[out])
        assert not torch.equal(res.latents[j : j + 1][~out], ctx.x[~out])
        # and the audit view x̂0 is the denoiser's at σ_i for that candidate
        assert torch.isfinite(res.x0[j]).all()


@pytest.mark.parametrize("param", ["eps", "flow"])
def test_an_identity_action_reproduces_the_control(param):
    # base CFG inside, the base prompt as regional prompt, no jitter: invert (refined) and re-denoise
    world, ctx = _ctx(param, dtype=torch.float64)
    ctx = dataclasses.replace(ctx, region_payload=None)
    a = Action(cfg_inside=float(world.cond.cfg), emphasis=1.0, jitter=0.0, depth=5, editor="invert")
    res = DiffusionEditor(refine_iters=30)(ctx, world.planted_mask().double(), [a])
    err = (res.latents - ctx.x).abs().max().item()
    assert err < 1e-6
    assert not torch.equal(res.latents, ctx.x) or err == 0.0


def test_candidates_depend_only_on_their_own_action():
    world, ctx = _ctx("eps")
    a = Action(cfg_inside=3.0, emphasis=2.0, jitter=0.6, seed=42, depth=3, editor="renoise")
    b = Action(cfg_inside=1.0, emphasis=0.5, jitter=0.2, seed=7, depth=3, editor="renoise")
    ed = DiffusionEditor()
    alone = ed(ctx, world.planted_mask(), [a]).latents
    batched = ed(ctx, world.planted_mask(), [b, a, b]).latents
    torch.testing.assert_close(batched[1:2], alone, rtol=0, atol=1e-6)
    other = ed(ctx, world.planted_mask(), [dataclasses.replace(a, seed=43)]).latents
    assert not torch.allclose(other, alone)


def test_editor_cost_is_the_formula():
    world, ctx = _ctx("eps")
    for kind, refine, d in [("invert", 0, 3), ("invert", 2, 4), ("renoise", 0, 5)]:
        costs = Costs()
        ed = DiffusionEditor(refine_iters=refine)
        c = dataclasses.replace(ctx, denoiser=CountingDenoiser(world.denoiser, costs))
        ed(c, world.planted_mask(), [Action(depth=d, editor=kind, seed=s) for s in range(4)])
        expected = (d * (1 + refine) if kind == "invert" else 0) + d + 1
        assert costs.denoiser_calls == expected == ed.calls_per_region(kind, d)
        assert costs.denoiser_evals == 4 * expected


def test_editor_rejects_bad_input():
    world, ctx = _ctx("eps")
    ed = DiffusionEditor()
    m = world.planted_mask()
    with pytest.raises(ValueError, match="region_mask of shape"):
        ed(ctx, torch.ones(1, 1, 5, 5), [Action()])
    with pytest.raises(ValueError, match="all zero"):
        ed(ctx, torch.zeros_like(m), [Action()])
    with pytest.raises(ValueError, match="N must be >= 1"):
        ed(ctx, m, [])
    with pytest.raises(ValueError, match="d=9 is larger than the steps left"):
        ed(ctx, m, [Action(depth=9)])
    bad = ctx.x.clone()
    bad[0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        ed(dataclasses.replace(ctx, x=bad), m, [Action()])


def test_the_region_text_knob_picks_the_region_prompt_or_the_base_prompt_per_candidate():
    """Candidates with region_text "base" are made exactly as without a region payload; those with
    "region" use it; a mixed batch equals its two pure halves (grouped, not blended)."""
    world, ctx = _ctx("eps")
    mask = world.planted_mask()
    no_region = dataclasses.replace(ctx, region_payload=None)
    acts = [
        Action(depth=3, editor="renoise", jitter=0.5, seed=s, region_text=t) for s, t in ((1, "region"), (2, "base"))
    ]
    mixed = DiffusionEditor()(ctx, mask, acts)

    # each group of the mixed batch is one row here, so each is compared with a one-row call: the same row inside
    # a batch of two need not be equal bit for bit (a float matmul over 2 rows differed on 2 threads)
    def alone(c, a):
        return DiffusionEditor()(c, mask, [dataclasses.replace(a, region_text="region")]).latents[0]

    assert torch.equal(mixed.latents[0], alone(ctx, acts[0])) and torch.equal(
        mixed.latents[1], alone(no_region, acts[1])
    )
    assert not torch.equal(alone(ctx, acts[1]), alone(no_region, acts[1]))  # the region payload matters here
    with pytest.raises(ValueError, match="region_text"):
        Action(region_text="elsewhere")
