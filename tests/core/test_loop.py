"""The loop's promises: non-regression bit for bit, blend-mask bit identity, costs, the synthetic world."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tipai_core.diffusion.sampler import initial_latent, sample
from tipai_core.editing.diffusion_editor import DiffusionEditor, action_mask
from tipai_core.guard.tournament_guard import TournamentGuard
from tipai_core.loop.audit_schedule import AuditSchedule
from tipai_core.loop.audit_step import audit_step
from tipai_core.loop.sampling import sample_with_audits
from tipai_core.mining.masks import pixel_to_latent
from tipai_core.mining.regions import Region
from tipai_core.policy.actions import Action, FixedKnobPolicy
from tipai_core.records.costs import Costs, expected_step_costs
from tipai_core.testing.synthetic import fix_rates, make_world, world_sigmas, world_suite

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("param", ["eps", "flow"])
@pytest.mark.parametrize("sampler", ["euler", "ddim"])
def test_loop_that_accepts_nothing_is_the_plain_sampler_bit_for_bit(param, sampler):
    world = make_world(param)
    sigmas = world_sigmas(param)
    suite = dataclasses.replace(world_suite(world, seed=3), guard=TournamentGuard(delta=1e9))
    x = initial_latent(world.shape, sigmas, param, seed=11)
    plain = sample(world.denoiser, sigmas, x, world.cond, param, sampler)
    res = sample_with_audits(
        world.denoiser, sigmas, x, world.cond, param, "p", suite, sampler, region_payload=world.region_payload
    )
    assert res.records, "the audits must have run tournaments"
    assert res.costs.denoiser_calls > 0
    assert not any(r.accepted for r in res.records)
    assert res.accepted_steps == []
    assert torch.equal(res.latent, plain)


@pytest.mark.parametrize("param", ["eps", "flow"])
def test_accepted_edit_leaves_the_latent_bit_identical_where_the_blend_mask_is_zero(param):
    world = make_world(param)
    sigmas = world_sigmas(param)
    suite = dataclasses.replace(world_suite(world, seed=5), guard=TournamentGuard(delta=0.0), alpha=0.7)
    x = initial_latent(world.shape, sigmas, param, seed=2)
    step = 8
    # the control state at step 8, from the plain sampler
    seen = {}

    def grab(i, xi, x0i):
        if i == step:
            seen["x"], seen["x0"] = xi.clone(), x0i.clone()
        return None

    sample(world.denoiser, sigmas, x, world.cond, param, callback=grab)
    xc, x0c = seen["x"], seen["x0"]
    x_keep, x0_keep = xc.clone(), x0c.clone()
    new_x, records = audit_step(
        xc,
        x0c,
        step,
        sigmas,
        denoiser=world.denoiser,
        param=param,
        cond=world.cond,
        prompt="p",
        suite=suite,
        region_payload=world.region_payload,
    )
    assert new_x is not None and any(r.accepted for r in records)
    # audit work never writes into the control tensors
    assert torch.equal(xc, x_keep) and torch.equal(x0c, x0_keep)
    # the union of the accepted candidates' blend masks, rebuilt from the records
    union = torch.zeros(1, 1, *xc.shape[-2:])
    regions = suite.miner(suite.decoder(x0c, suite.schedule.scale(step, 20)), "p")
    for rec, region in zip(records, regions):
        if rec.accepted:
            lat = pixel_to_latent(region.mask, rec.region["view_factor"])
            union = torch.maximum(union, action_mask(lat, Action.from_dict(rec.actions[rec.winner - 1])))
    outside = (union == 0).expand_as(xc)
    assert outside.any() and (~outside).any()
    assert torch.equal(new_x[outside], xc[outside])
    assert not torch.equal(new_x[~outside], xc[~outside])


class _FixedMiner:
    """K fixed, well separated square regions (so K is known for the cost formula)."""

    def __init__(self, k: int, size: int, factor: int):
        self.k, self.size, self.factor = k, size, factor

    def __call__(self, image, prompt, user_mask=None):
        f = image.shape[-1] // self.size
        out = []
        # the first box is the synthetic world's planted square, so edits there can win
        for y0, x0, y1, x1 in [(4, 4, 8, 8), (0, 0, 2, 2), (9, 0, 11, 3)][: self.k]:
            m = torch.zeros(1, 1, *image.shape[-2:])
            m[..., y0 * f : y1 * f, x0 * f : x1 * f] = 1
            out.append(Region.from_mask(m))
        return out


@pytest.mark.parametrize(("editor_kind", "refine"), [("invert", 0), ("invert", 2), ("renoise", 0)])
@pytest.mark.parametrize(("k", "n", "d"), [(1, 1, 1), (2, 5, 3), (3, 4, 2)])
def test_cost_accounting_matches_the_formula(editor_kind, refine, k, n, d):
    world = make_world("eps")
    sigmas = world_sigmas("eps")
    policy = FixedKnobPolicy({"depth": ((d,), (1.0,)), "editor": ((editor_kind,), (1.0,))})
    suite = dataclasses.replace(
        world_suite(world, n_candidates=n),
        miner=_FixedMiner(k, world.shape[-1], world.decoder.factor),
        policy=policy,
        editor=DiffusionEditor(refine_iters=refine),
        guard=TournamentGuard(delta=1e9),
        schedule=AuditSchedule(every=3, first=4, skip_last=1, scales=(0.5, 1.0)),
    )
    x = initial_latent(world.shape, sigmas, "eps", seed=0)
    res = sample_with_audits(world.denoiser, sigmas, x, world.cond, "eps", "p", suite)
    steps = suite.schedule.steps(20)
    per_step = expected_step_costs(k, n, d, editor_kind, refine)
    expected = Costs()
    for _ in steps:
        expected.add(per_step)
    print(
        f"\ncosts K={k} N={n} d={d} {editor_kind} r={refine}: per audited step {per_step} "
        f"(formula K·(d·(1+r)·[invert] + d + 1) denoiser calls); {len(steps)} audits -> {res.costs}"
    )
    assert res.costs == expected
    assert len(res.records) == k * len(steps)
    per_region = expected_step_costs(1, n, d, editor_kind, refine)
    for rec in res.records:
        assert rec.costs.denoiser_calls == per_region.denoiser_calls
        assert rec.costs.denoiser_evals == per_region.denoiser_evals
        assert rec.costs.decode_calls == 1 and rec.costs.decoded_images == n
        assert rec.costs.auditor_images == n + 1


def test_cost_of_accepted_steps_adds_one_restart_call_each():
    world = make_world("eps")
    sigmas = world_sigmas("eps")
    k, n, d = 1, 3, 2
    policy = FixedKnobPolicy({"depth": ((d,), (1.0,)), "editor": (("invert",), (1.0,)), "emphasis": ((2.0,), (1.0,))})
    suite = dataclasses.replace(
        world_suite(world, n_candidates=n),
        miner=_FixedMiner(k, world.shape[-1], world.decoder.factor),
        policy=policy,
        guard=TournamentGuard(delta=0.0),
    )
    x = initial_latent(world.shape, sigmas, "eps", seed=0)
    res = sample_with_audits(
        world.denoiser, sigmas, x, world.cond, "eps", "p", suite, region_payload=world.region_payload
    )
    assert res.accepted_steps
    base = expected_step_costs(k, n, d)
    n_audits = len(suite.schedule.steps(20))
    assert res.costs.denoiser_calls == n_audits * base.denoiser_calls + len(res.accepted_steps)
    assert res.costs.denoiser_evals == n_audits * base.denoiser_evals + len(res.accepted_steps)
    assert res.costs.decode_calls == n_audits * base.decode_calls


@pytest.mark.parametrize("param", ["eps", "flow"])
def test_synthetic_world_the_loop_fixes_the_planted_region_and_the_plain_sampler_never_does(param):
    rates = fix_rates(param, seeds=50, n_candidates=5)
    print(
        f"\nsynthetic world ({param}, 50 seeds, N=5): plain fixes {rates.plain:.2f}, loop fixes {rates.loop:.2f}; "
        f"mean correct share of the square: plain {rates.plain_mean_fraction:.3f}, loop {rates.loop_mean_fraction:.3f}"
    )
    assert rates.plain == 0.0
    assert rates.loop >= 0.8
    assert rates.loop - rates.plain >= 0.5


def test_audit_step_rejects_bad_input():
    world = make_world("eps")
    sigmas = world_sigmas("eps")
    suite = world_suite(world)
    x = initial_latent(world.shape, sigmas, "eps", seed=0)
    x0 = world.denoiser(x, sigmas[4], world.cond)
    kw = dict(denoiser=world.denoiser, param="eps", cond=world.cond, prompt="p", suite=suite)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        audit_step(bad, x0, 4, sigmas, **kw)
    with pytest.raises(ValueError, match="user_mask"):
        audit_step(x, x0, 4, sigmas, user_mask=torch.ones(1, 1, 50, 50), **kw)
    with pytest.raises(ValueError, match="N"):
        dataclasses.replace(suite, n_candidates=0)
    with pytest.raises(ValueError, match="step"):
        audit_step(x, x0, 20, sigmas, **kw)
    with pytest.raises(ValueError, match="x contains NaN"):
        sample_with_audits(world.denoiser, sigmas, bad, world.cond, "eps", "p", suite)


def test_batches_are_audited_per_image_and_stay_bit_identical_when_nothing_is_accepted():
    world = make_world("eps")
    sigmas = world_sigmas("eps")
    x = initial_latent((2, *world.shape[1:]), sigmas, "eps", seed=4)
    reject = dataclasses.replace(world_suite(world, seed=1), guard=TournamentGuard(delta=1e9))
    plain = sample(world.denoiser, sigmas, x, world.cond, "eps")
    res = sample_with_audits(
        world.denoiser, sigmas, x, world.cond, "eps", "p", reject, region_payload=world.region_payload
    )
    assert {r.batch_index for r in res.records} == {0, 1}
    assert torch.equal(res.latent, plain)
    accept = world_suite(world, seed=1)
    res = sample_with_audits(
        world.denoiser, sigmas, x, world.cond, "eps", "p", accept, region_payload=world.region_payload
    )
    assert res.accepted_steps
    assert world.is_fixed(res.latent[0:1]) and world.is_fixed(res.latent[1:2])
    assert not world.is_fixed(plain[0:1]) and not world.is_fixed(plain[1:2])


def test_a_region_text_is_encoded_and_conditions_only_that_regions_edit():
    """``AuditSuite.region_encoder``: a region carrying a prompt is edited under that prompt's payload;
    the candidates change inside the mask and stay the control outside it, bit for bit."""
    world = make_world("eps")
    sigmas = world_sigmas("eps")
    seen: list = []

    class Spy(DiffusionEditor):
        def __call__(self, ctx, region_mask, actions):
            res = super().__call__(ctx, region_mask, actions)
            seen.append((ctx.region_payload, region_mask, res, ctx.x))
            return res

    def texts(view, prompt, user_mask=None, text="green"):
        return [dataclasses.replace(r, prompt=text) for r in world.miner(view, prompt, user_mask)]

    xs = {}

    def grab(i, xi, x0i):
        if i == 8:
            xs.update(x=xi.clone(), x0=x0i.clone())

    sample(world.denoiser, sigmas, initial_latent(world.shape, sigmas, "eps", seed=2), world.cond, "eps", callback=grab)
    base = dataclasses.replace(world_suite(world, seed=5), guard=TournamentGuard(delta=1e9), editor=Spy())
    encoded = {"green": torch.tensor([3.0, 0.0]), "red": torch.tensor([0.0, 3.0])}
    runs = {}
    for label, miner, enc in (
        ("none", world.miner, None),
        ("green", texts, encoded.__getitem__),
        ("red", lambda v, p, u=None: texts(v, p, u, "red"), encoded.__getitem__),
        ("blank", lambda v, p, u=None: texts(v, p, u, "  "), encoded.__getitem__),
    ):
        seen.clear()
        suite = dataclasses.replace(base, miner=miner, region_encoder=enc)
        audit_step(
            xs["x"],
            xs["x0"],
            8,
            sigmas,
            denoiser=world.denoiser,
            param="eps",
            cond=world.cond,
            prompt="p",
            suite=suite,
            region_payload=world.region_payload,
        )
        assert seen, "the miner must have found a region"
        runs[label] = list(seen)
    for label in ("none", "blank"):
        assert all(p is world.region_payload for p, *_ in runs[label])
    assert all(torch.equal(p, encoded["green"]) for p, *_ in runs["green"])
    for (_, _, green, x), (_, _, red, _) in zip(runs["green"], runs["red"]):
        for res in (green, red):  # outside each candidate's own (dilated) mask: the control, bit for bit
            outside = (res.masks == 0).expand_as(res.latents)
            assert torch.equal(res.latents[outside], x.expand_as(res.latents)[outside])
        inside = ((green.masks > 0) & (red.masks > 0)).expand_as(green.latents)
        assert not torch.equal(green.latents[inside], red.latents[inside])
