"""The loop picture: what the observer sees is what was judged, and the page frames the winner."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tipai_core.diffusion.sampler import initial_latent
from tipai_core.guard.tournament_guard import TournamentGuard
from tipai_core.loop.sampling import sample_with_audits
from tipai_core.records.tournament_picture import PAD, THUMB, TournamentStrips, loop_picture
from tipai_core.testing.synthetic import make_world, world_sigmas, world_suite

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(max_tournaments=24):
    world = make_world("eps")
    sigmas = world_sigmas("eps")
    strips = TournamentStrips(max_tournaments)
    seen = []

    def observe(record, judged):
        seen.append((record, judged.clone()))
        strips(record, judged)

    suite = dataclasses.replace(world_suite(world, seed=5), guard=TournamentGuard(delta=0.0), on_tournament=observe)
    x = initial_latent(world.shape, sigmas, "eps", seed=2)
    res = sample_with_audits(
        world.denoiser, sigmas, x, world.cond, "eps", "p", suite, region_payload=world.region_payload
    )
    return res, seen, strips


def test_the_observer_sees_each_tournament_once_with_its_n_plus_1_views():
    res, seen, strips = _run()
    assert [r for r, _ in seen] == res.records  # one call per record, in order
    for record, judged in seen:
        assert judged.shape[0] == len(record.actions) + 1  # the control, then the N candidates
        assert torch.isfinite(judged).all()
    assert any(r.accepted for r in res.records)
    assert len(strips.strips) == len(seen) and strips.left_out == 0
    assert max(strips.strips[0][1].shape[-2:]) == THUMB


def test_the_page_frames_the_winner_in_green_and_says_what_was_left_out():
    res, seen, strips = _run(max_tournaments=1)
    assert strips.left_out == len(seen) - 1
    record, thumbs = strips.strips[0]
    image = torch.rand(3, 32, 32)
    page = loop_picture(image, image, strips, "title")
    assert page.shape[0] == 3 and page.min() >= 0 and page.max() <= 1
    # the result panel is the image scaled to 256, nearest: its top-left pixel is the image's
    top = PAD + 2 * 14  # below the title line and the "result" caption line
    assert torch.allclose(page[:, top, PAD], (image[:, 0, 0] * 255).round() / 255, atol=1 / 255)
    k = record.winner if record.accepted else 0
    colour = torch.tensor([0, 200, 0] if record.accepted else [150, 150, 150]) / 255.0
    # somewhere on the frame row above thumbnail k: the frame colour
    assert (page.permute(1, 2, 0).reshape(-1, 3) - colour).abs().sum(-1).min() < 1e-6
    assert k <= len(record.actions)


def test_images_that_carry_a_graph_are_drawn_too():
    image = torch.rand(3, 8, 8, requires_grad=True) * 1.0
    page = loop_picture(image, image, None)
    assert not page.requires_grad and page.shape[0] == 3
