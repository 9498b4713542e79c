"""The referee backend in the loop: candidates are the control outside their masks, its costs reach the
records, a loop that accepts nothing stays the plain sampler bit for bit, and accepted refines raise S."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tipai_core.diffusion.parametrisation import Parametrisation
from tipai_core.diffusion.sampler import initial_latent, sample
from tipai_core.editing.referee import RefereeSettings
from tipai_core.editing.referee_editor import RefereeEditor
from tipai_core.guard.tournament_guard import TournamentGuard
from tipai_core.loop.sampling import sample_with_audits
from tipai_core.policy.actions import Action
from tipai_core.protocols import EditContext
from tipai_core.testing.synthetic import make_world, world_sigmas, world_suite

pytestmark = pytest.mark.usefixtures("one_thread")
SETTINGS = RefereeSettings(steps=4, lr=0.3, n_augment=0)


def _suite(world, delta):
    editor = RefereeEditor(world.auditor, world.decoder, "p", SETTINGS)
    return dataclasses.replace(
        world_suite(world, n_candidates=3, seed=1), editor=editor, guard=TournamentGuard(delta=delta)
    )


@pytest.mark.parametrize("param", ["eps", "flow"])
def test_candidates_are_the_control_outside_their_masks(param):
    world = make_world(param)
    sigmas = world_sigmas(param)
    x = initial_latent(world.shape, sigmas, param, seed=0)
    x0 = world.denoiser(x, sigmas[6], world.cond)
    ctx = EditContext(world.denoiser, Parametrisation.parse(param), sigmas, 6, x, x0, world.cond)
    editor = RefereeEditor(world.auditor, world.decoder, "p", SETTINGS)
    actions = [Action(seed=s, depth=1) for s in range(3)]
    res = editor(ctx, world.planted_mask(), actions)
    outside = (res.masks == 0).expand_as(res.latents)
    assert torch.equal(res.latents[outside], x.expand_as(res.latents)[outside])
    assert not torch.equal(res.latents, x.expand_as(res.latents))
    assert res.costs.auditor_images > 0 and res.costs.denoiser_calls == 0


def test_a_loop_that_accepts_nothing_is_plain_and_counts_the_referee_costs():
    world = make_world("eps")
    sigmas = world_sigmas("eps")
    x = initial_latent(world.shape, sigmas, "eps", seed=2)
    plain = sample(world.denoiser, sigmas, x, world.cond, "eps", "euler")
    res = sample_with_audits(world.denoiser, sigmas, x, world.cond, "eps", "p", _suite(world, 1e9), "euler")
    assert res.records and not any(r.accepted for r in res.records)
    assert torch.equal(res.latent, plain)
    for r in res.records:
        # a candidate of depth d refines 4·d steps: per step the plain image forward, K=0 so one more
        # forward and one backward; one forward at the end. Then the tournament's one scoring call.
        steps = [4 * a["depth"] for a in r.actions]
        assert r.costs.auditor_calls == sum(3 * n + 1 for n in steps) + 1
        assert r.costs.auditor_images == sum(2 * n + 1 for n in steps) + len(steps) + 1
        assert r.costs.denoiser_calls == 0


def test_accepted_refines_raise_the_score_over_plain():
    world = make_world("eps")
    sigmas = world_sigmas("eps")
    gains = []
    for seed in range(4):
        x = initial_latent(world.shape, sigmas, "eps", seed=seed)
        plain = sample(world.denoiser, sigmas, x, world.cond, "eps", "euler")
        res = sample_with_audits(world.denoiser, sigmas, x, world.cond, "eps", "p", _suite(world, 0.0), "euler")
        s = lambda z: float(world.auditor.similarity(world.decoder(z), "p")[0])  # noqa: E731
        gains.append(s(res.latent) - s(plain))
    assert sum(gains) > 0 and max(gains) > 0.01, gains
