"""The late look (loop/finals.py): preview tournament, finalists finished, a final tournament on final images."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tipai_core.diffusion.sampler import initial_latent, sample
from tipai_core.guard.tournament_guard import TournamentGuard
from tipai_core.loop.finals import (
    FinalsPlan,
    finals_candidates,
    finals_evals,
    finish_from,
    sample_with_finals,
    top_finalists,
)
from tipai_core.policy.actions import FixedKnobPolicy
from tipai_core.records.costs import Costs, CountingDenoiser
from tipai_core.testing.synthetic import make_world, world_sigmas, world_suite

pytestmark = pytest.mark.usefixtures("one_thread")

G = 6


def global_suite(world, n: int, delta: float):
    knobs = {"editor": (["renoise"], [1.0]), "depth": ([G], [1.0]), "jitter": ([1.0], [1.0])}
    return dataclasses.replace(
        world_suite(world, n_candidates=n, seed=4), policy=FixedKnobPolicy(knobs), guard=TournamentGuard(delta=delta)
    )


@pytest.mark.parametrize("sampler", ["euler", "ddim"])
@pytest.mark.parametrize("param", ["eps", "flow"])
def test_finals_that_accept_nothing_are_the_plain_sampler_bit_for_bit(param, sampler):
    world = make_world(param)
    sigmas = world_sigmas(param)
    x = initial_latent(world.shape, sigmas, param, seed=7)
    plain = sample(world.denoiser, sigmas, x, world.cond, param, sampler)
    res = sample_with_finals(
        world.denoiser, sigmas, x, world.cond, param, "p", global_suite(world, 4, 1e9), FinalsPlan(G, 2), sampler
    )
    assert len(res.records) == 2 and not any(r.accepted for r in res.records)
    assert res.accepted_steps == []
    assert torch.equal(res.latent, plain)


@pytest.mark.parametrize("m", [1, 3])
def test_finals_count_every_evaluation_and_return_the_judged_finalist(m):
    world = make_world("eps")
    sigmas = world_sigmas("eps")
    n_steps, n = sigmas.numel() - 1, 4
    suite = global_suite(world, n, 0.0)
    wins = 0
    for seed in range(6):
        c = Costs()
        x = initial_latent(world.shape, sigmas, "eps", seed=seed)
        res = sample_with_finals(
            CountingDenoiser(world.denoiser, c), sigmas, x, world.cond, "eps", "p", suite, FinalsPlan(G, m), "euler"
        )
        # the plain run, N candidates of d + 1 = g + 1 calls, m finalists of n - g - 1 steps (the first is free)
        assert c.denoiser_evals == finals_evals(n_steps, G, n, m)
        assert res.costs.denoiser_evals == finals_evals(n_steps, G, n, m) - n_steps
        preview, final = res.records
        assert preview.step == G and not preview.accepted and len(preview.actions) == n
        assert preview.region["finalists"] == [k + 1 for k in top_finalists(torch.tensor(preview.scores["S"][1:]), m)]
        assert final.region["finals_of"] == preview.region["finalists"] and len(final.actions) == m
        assert res.costs.auditor_images == (n + 1) + (m + 1)
        # the final tournament judged the plain image as its control, and the returned latent is its winner
        plain = sample(world.denoiser, sigmas, x, world.cond, "eps", "euler")
        s_plain = world.auditor.score(suite.decoder(plain, 1.0), "p").S
        assert float(s_plain[0]) == pytest.approx(final.scores["S"][0], abs=1e-6)
        s_out = world.auditor.score(suite.decoder(res.latent, 1.0), "p").S
        assert float(s_out[0]) == pytest.approx(final.scores["S"][final.winner], abs=1e-6)
        if final.accepted:
            wins += 1
            assert res.accepted_steps == [n_steps - 1]
            assert final.scores["S"][final.winner] > final.scores["S"][0]
            assert not torch.equal(res.latent, plain)
        else:
            assert torch.equal(res.latent, plain)
    assert wins > 0, "with δ = 0 some finalist must beat some control in 6 seeds"


def test_finish_from_is_the_plain_sampler_from_that_step():
    world = make_world("eps")
    sigmas = world_sigmas("eps")
    x = initial_latent(world.shape, sigmas, "eps", seed=3)
    seen = {}

    def grab(i, xi, x0i):
        if i == 9:
            seen.update(x=xi.clone(), x0=x0i.clone())

    for sampler in ("euler", "ddim"):
        full = sample(world.denoiser, sigmas, x, world.cond, "eps", sampler, grab)
        out = finish_from(world.denoiser, sigmas, 9, seen["x"], seen["x0"], world.cond, world_param("eps"), sampler)
        assert torch.equal(out, full)


def world_param(p):
    from tipai_core.diffusion.parametrisation import Parametrisation

    return Parametrisation.parse(p)


def test_top_finalists_and_the_budget():
    assert top_finalists(torch.tensor([0.1, 0.5, 0.5, -1.0]), 2) == [1, 2]
    assert top_finalists(torch.tensor([0.3]), 1) == [0]
    for budget in (2, 4, 8):
        for g in (3, 5, 8):
            for m in (1, 2, 3):
                n = finals_candidates(budget, 20, g, m)
                if n:
                    assert n >= m and finals_evals(20, g, n, m) <= budget * 20 < finals_evals(20, g, n + 1, m)
    assert finals_candidates(2, 20, 8, 1) == 1  # 20 + 9 + 11 = 40
    assert finals_candidates(2, 20, 8, 2) == 0  # 20 + 2·9 + 2·11 > 40: no room for two finalists
    assert finals_candidates(4, 20, 8, 1) == 5


def test_bad_plans_are_refused_before_any_work():
    world = make_world("eps")
    sigmas = world_sigmas("eps")
    x = initial_latent(world.shape, sigmas, "eps", seed=0)
    calls = Costs()
    den = CountingDenoiser(world.denoiser, calls)
    with pytest.raises(ValueError, match="finalists"):
        FinalsPlan(5, 0)
    with pytest.raises(ValueError, match="preview step"):
        sample_with_finals(den, sigmas, x, world.cond, "eps", "p", global_suite(world, 2, 0.0), FinalsPlan(19, 1))
    with pytest.raises(ValueError, match="exceeds"):
        sample_with_finals(den, sigmas, x, world.cond, "eps", "p", global_suite(world, 2, 0.0), FinalsPlan(G, 3))
    assert calls.denoiser_calls == 0


def test_two_looks_accept_only_finalists_that_also_won_their_preview():
    world = make_world("eps")
    sigmas = world_sigmas("eps")
    suite = global_suite(world, 4, 0.0)
    kinds = set()
    for seed in range(8):
        x = initial_latent(world.shape, sigmas, "eps", seed=seed)
        one = sample_with_finals(world.denoiser, sigmas, x, world.cond, "eps", "p", suite, FinalsPlan(G, 2), "euler")
        two = sample_with_finals(
            world.denoiser, sigmas, x, world.cond, "eps", "p", suite, FinalsPlan(G, 2, preview_win=True), "euler"
        )
        preview, final = two.records
        s_prev = preview.scores["S"]
        won_preview = [s_prev[k] > s_prev[0] for k in final.region["finals_of"]]
        if final.accepted:
            assert won_preview[final.winner - 1]
        # the same finals were judged; only the rule differs, so where every finalist won its preview
        # the two decisions agree
        assert one.records[1].scores == final.scores
        if all(won_preview):
            assert torch.equal(one.latent, two.latent)
        elif not any(won_preview):
            assert not final.accepted and two.accepted_steps == []
        kinds.add((all(won_preview), any(won_preview)))
    assert len(kinds) >= 2, f"the seeds must exercise the rule both ways, saw {kinds}"
