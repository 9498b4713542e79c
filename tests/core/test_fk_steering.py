"""FK steering against a closed form: on the analytic two-component mixture, with a judge that reads
which component x0 belongs to, the particles must carry the tilted target's component weights
``π̃_0 = π_0·e^λ / (π_0·e^λ + π_1)``, within a tolerance that shrinks as 1/√k.

The tolerance. The population fraction f of component 0 after the final resample is the base fraction
reweighted, ``g(f) = f·a / (f·a + 1 − f)`` with a = e^λ, plus the noise of every resampling stage.
The base fraction of k particles has variance π_0(1 − π_0)/k, carried by g'(π_0) = a/(π_0·a + 1 − π_0)²;
each of the R + 1 resampling stages (R intermediate, one final) adds at most 1/(4k) in fraction terms,
carried by a slope of at most a. So the standard deviation of one run's f is at most
``sqrt((g'² π_0(1 − π_0) + (R + 1)·a²/4) / k)``, and of the mean over S seeds that over √S. We allow
4 standard deviations plus 0.01 for the sampler's discretisation (40 steps).
"""

from __future__ import annotations

import math

import pytest
import torch

from tipai_core.diffusion.sigmas import karras_sigmas
from tipai_core.loop.fk_steering import FKSettings, fk_start_latents, fk_steering, resample_every, resample_indices
from tipai_core.testing.analytic import GaussianMixtureDenoiser

PI0, LAM, STEPS, SEEDS = 0.3, math.log(3.0), 40, 8
DEN = GaussianMixtureDenoiser(
    torch.tensor([[2.0, 2.0], [-2.0, -2.0]], dtype=torch.float64), 0.3, torch.tensor([PI0, 1 - PI0])
)
SIGMAS = karras_sigmas(STEPS, dtype=torch.float64)
RESAMPLE = resample_every(STEPS, 5)


def component0(x0: torch.Tensor) -> torch.Tensor:
    """The judge: 1 for a sample of component 0 (mean (2, 2)), else 0."""
    return (x0.sum(dim=(1, 2, 3)) > 0).double()


def tilted(lam: float) -> float:
    a = math.exp(lam)
    return PI0 * a / (PI0 * a + 1 - PI0)


def tolerance(k: int, lam: float) -> float:
    a = math.exp(lam)
    slope = a / (PI0 * a + 1 - PI0) ** 2
    var = (slope**2 * PI0 * (1 - PI0) + (len(RESAMPLE) + 1) * a * a / 4) / k
    return 4 * math.sqrt(var / SEEDS) + 0.01


def population_fraction(k: int, lam: float, scheme: str, eta: float) -> float:
    fractions = []
    for seed in range(SEEDS):
        gen = torch.Generator().manual_seed(100 + seed)
        x = fk_start_latents((2, 1, 1), SIGMAS, "eps", k, gen)
        s = FKSettings(k=k, lam=lam, resample_at=RESAMPLE, resampling=scheme, eta=eta, final_resample=True)
        res = fk_steering(DEN, SIGMAS, x, None, "eps", component0, s, generator=gen)
        fractions.append(float(res.rewards.mean()))
    return sum(fractions) / len(fractions)


@pytest.mark.parametrize("scheme", ["systematic", "multinomial"])
@pytest.mark.parametrize("eta", [1.0, 0.0])
def test_particles_approach_the_tilted_component_weights(one_thread, scheme, eta):
    errors = {}
    for k in (512, 4096):
        f = population_fraction(k, LAM, scheme, eta)
        errors[k] = abs(f - tilted(LAM))
        print(
            f"eta={eta} {scheme} k={k}: fraction {f:.4f}, target {tilted(LAM):.4f}, tolerance {tolerance(k, LAM):.4f}"
        )
        assert errors[k] <= tolerance(k, LAM)
    # far from the untilted base weight: the steering did move the population
    assert abs(population_fraction(4096, LAM, scheme, eta) - PI0) > 2 * tolerance(4096, LAM)


def test_without_tilt_the_particles_keep_the_base_weights(one_thread):
    assert abs(population_fraction(4096, 0.0, "systematic", 1.0) - PI0) <= tolerance(4096, 0.0)


def test_systematic_resampling_keeps_the_expected_counts():
    w = torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64)
    idx = resample_indices(w.log(), "systematic", torch.Generator().manual_seed(0))
    counts = torch.bincount(idx, minlength=4)
    # systematic: every count is floor or ceil of k·w
    assert torch.equal(counts, torch.tensor([2, 1, 0, 1])) or torch.equal(counts, torch.tensor([2, 1, 1, 0]))


def test_costs_and_best_particle():
    k = 6
    gen = torch.Generator().manual_seed(1)
    x = fk_start_latents((2, 1, 1), SIGMAS, "eps", k, gen)
    res = fk_steering(
        DEN, SIGMAS, x, None, "eps", component0, FKSettings(k=k, lam=2.0, resample_at=RESAMPLE), generator=gen
    )
    c = res.costs
    assert (c.denoiser_calls, c.denoiser_evals) == (STEPS, k * STEPS)
    assert (c.auditor_calls, c.auditor_images) == (len(RESAMPLE) + 1, k * (len(RESAMPLE) + 1))
    assert res.rewards[res.best] == res.rewards.max() and torch.equal(
        res.latent, res.particles[res.best : res.best + 1]
    )
    assert len(res.ess) == len(RESAMPLE) and all(1.0 <= e <= k for e in res.ess)
    assert math.isclose(float(torch.logsumexp(res.log_weights, 0)), 0.0, abs_tol=1e-9)


def test_max_potential_and_bad_settings():
    gen = torch.Generator().manual_seed(2)
    x = fk_start_latents((2, 1, 1), SIGMAS, "eps", 8, gen)
    res = fk_steering(
        DEN,
        SIGMAS,
        x,
        None,
        "eps",
        component0,
        FKSettings(k=8, lam=5.0, potential="max", resample_at=RESAMPLE),
        generator=gen,
    )
    assert res.particles.shape == (8, 2, 1, 1) and torch.isfinite(res.particles).all()
    for bad in (dict(k=0), dict(lam=float("nan")), dict(potential="sum"), dict(resampling="stratified"), dict(eta=2)):
        with pytest.raises(ValueError):
            FKSettings(**bad)
    with pytest.raises(ValueError, match="resample_at"):
        fk_steering(DEN, SIGMAS, x, None, "eps", component0, FKSettings(k=8, resample_at=(0,)))
    with pytest.raises(ValueError, match="k=4"):
        fk_steering(DEN, SIGMAS, x, None, "eps", component0, FKSettings(k=4))
