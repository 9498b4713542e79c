"""Referee inversion: the outside of the mask never moves, the referee's score rises on a case built to
make it rise, the same seed gives the same refine, the costs are counted, and bad input is refused."""

from __future__ import annotations

import math

import pytest
import torch

from tipai_core.editing.referee import RefereeSettings, referee_refine

pytestmark = pytest.mark.usefixtures("one_thread")


class RednessReferee(torch.nn.Module):
    """A referee with a known optimum: S = mean red minus mean green and blue, differentiable."""

    def similarity(self, images: torch.Tensor, prompt: str) -> torch.Tensor:
        return images[:, 0].mean((1, 2)) - 0.5 * images[:, 1:].mean((1, 2, 3))


def decode(z: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    return torch.sigmoid(z[:, :3])  # a differentiable decoder, latent channels 0..2 -> RGB


def _latent(seed=0, b=2):
    return torch.randn(b, 4, 16, 16, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("k", [0, 3])
def test_outside_the_mask_is_the_input_bit_for_bit_and_the_score_rises(k):
    z = _latent()
    before = z.clone()
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    res = referee_refine(
        z, "red", RednessReferee(), decode, mask=mask, settings=RefereeSettings(steps=25, lr=0.2, n_augment=k)
    )
    assert torch.equal(z, before)  # the input is never written to
    outside = (mask == 0).expand_as(z)
    assert torch.equal(res.latent[outside], z[outside])
    assert not torch.equal(res.latent[~outside], z[~outside])
    assert res.trajectory[-1] > res.trajectory[0] + 0.05
    assert len(res.trajectory) == 26


def test_the_same_seed_gives_the_same_refine_and_costs_are_counted():
    s = RefereeSettings(steps=4, lr=0.1, n_augment=3, micro_batch=2, seed=7)
    a = referee_refine(_latent(), "red", RednessReferee(), decode, settings=s)
    b = referee_refine(_latent(), "red", RednessReferee(), decode, settings=s)
    assert torch.equal(a.latent, b.latent)
    c = referee_refine(
        _latent(), "red", RednessReferee(), decode, settings=RefereeSettings(steps=4, lr=0.1, n_augment=3, seed=8)
    )
    assert not torch.equal(a.latent, c.latent)  # other augmentation draws
    # per step: the plain image scored once (B=2) and K·B augmented views forward and backward
    assert a.decoder_calls == 4 + 1
    assert a.auditor_forwards == 4 * (2 + 3 * 2) + 2
    assert a.auditor_backwards == 4 * 3 * 2
    assert a.denoiser_calls == 0


def test_sds_calls_the_denoiser_once_a_step_and_pulls_towards_its_x0():
    target = torch.full((1, 4, 8, 8), 0.5)

    def denoiser(x, sigma, cond):  # an analytic denoiser whose data is the single point `target`
        return target.expand_as(x)

    s = RefereeSettings(steps=30, lr=0.05, n_augment=0, sds_weight=50.0)
    z = torch.zeros(1, 4, 8, 8)
    res = referee_refine(
        z, "x", RednessReferee(), decode, settings=s, denoiser=denoiser, sds_sigmas=torch.tensor([0.5, 1.0])
    )
    assert res.denoiser_calls == 30
    # with x̂0 = target, ε̂ - ε = (z - target)/σ: SDS moves the channel the referee ignores towards target
    assert abs(float(res.latent[:, 3].mean()) - 0.5) < abs(0.0 - 0.5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps"),
        ({"lr": math.nan}, "lr"),
        ({"n_augment": -1}, "n_augment"),
        ({"ema": 1.0}, "ema"),
        ({"tv_weight": math.inf}, "tv_weight"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RefereeSettings(**kwargs)


def test_bad_inputs_are_refused_before_any_work():
    z = _latent()
    with pytest.raises(ValueError, match="mask is empty"):
        referee_refine(z, "red", RednessReferee(), decode, mask=torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="mask must be"):
        referee_refine(z, "red", RednessReferee(), decode, mask=torch.ones(1, 1, 8, 8))
    bad = z.clone()
    bad[0, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        referee_refine(bad, "red", RednessReferee(), decode)
    with pytest.raises(ValueError, match="prompt"):
        referee_refine(z, " ", RednessReferee(), decode)
    with pytest.raises(ValueError, match="denoiser"):
        referee_refine(z, "red", RednessReferee(), decode, settings=RefereeSettings(sds_weight=1.0))

    def frozen(latent, scale=1.0):  # built under inference mode: no gradient can flow
        with torch.inference_mode():
            return torch.sigmoid(latent[:, :3])

    with pytest.raises(ValueError, match="no gradient"):
        referee_refine(z, "red", RednessReferee(), frozen)


@pytest.mark.parametrize("k", [0, 2])
def test_regularisers_pull_back_towards_the_input(k):
    z = _latent()
    free = referee_refine(z, "red", RednessReferee(), decode, settings=RefereeSettings(steps=10, lr=0.2, n_augment=k))
    held = referee_refine(
        z, "red", RednessReferee(), decode,
        settings=RefereeSettings(steps=10, lr=0.2, n_augment=k, l2_weight=50.0, tv_weight=1.0, ema=0.5),
    )  # fmt: skip
    assert (held.latent - z).abs().mean() < (free.latent - z).abs().mean()
    assert set(held.history[0]) == {"referee", "tv", "l2"}
