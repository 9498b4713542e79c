"""DDIM steps and the d-step inversion: exact round trip with the analytic Gaussian, in float64."""

from __future__ import annotations

import pytest
import torch

from tipai_core.diffusion.ddim import ddim_invert, ddim_segment, ddim_step, euler_step
from tipai_core.diffusion.parametrisation import Parametrisation
from tipai_core.diffusion.sampler import initial_latent, sample
from tipai_core.diffusion.sigmas import flow_sigmas, karras_sigmas
from tipai_core.testing.analytic import GaussianDenoiser

F64 = torch.float64


def _world(param: str, var_map: bool):
    g = torch.Generator().manual_seed(7)
    mean = torch.randn(2, 4, 8, 8, generator=g, dtype=F64)
    var = (0.2 + torch.rand(2, 4, 8, 8, generator=g, dtype=F64)) if var_map else torch.tensor(0.5, dtype=F64)
    sigmas = karras_sigmas(20, dtype=F64) if param == "eps" else flow_sigmas(20, dtype=F64)
    return GaussianDenoiser(mean, var, param), mean, var, sigmas, g


@pytest.mark.parametrize("param", ["eps", "flow"])
@pytest.mark.parametrize("var_map", [False, True])
@pytest.mark.parametrize(("start", "d"), [(5, 5), (10, 4), (16, 6)])
def test_inversion_then_ddim_returns_the_start_latent(param, var_map, start, d):
    den, mean, var, sigmas, g = _world(param, var_map)
    p = Parametrisation(param)
    x0 = mean + var.sqrt() * torch.randn(mean.shape, generator=g, dtype=F64)
    x = p.noise(x0, torch.randn(mean.shape, generator=g, dtype=F64), sigmas[start])
    x_hi, _ = ddim_invert(den, x, sigmas, start, d, None, param, refine_iters=30)
    back = ddim_segment(den, x_hi, sigmas, start - d, start, None, p)
    err = (back - x).abs().max().item()
    naive, _ = ddim_invert(den, x, sigmas, start, d, None, param, refine_iters=0)
    naive_err = (ddim_segment(den, naive, sigmas, start - d, start, None, p) - x).abs().max().item()
    print(
        f"\nround trip {param} var_map={var_map} start={start} d={d}: "
        f"max |err| = {err:.2e} (naive inversion {naive_err:.2e})"
    )
    assert err < 1e-6
    assert naive_err > 1e-3  # the refinement is what makes it exact
    assert not torch.equal(x_hi, x)


def test_ddim_step_and_euler_step_agree_and_match_the_closed_form():
    den, mean, var, sigmas, g = _world("eps", False)
    x = torch.randn(2, 4, 8, 8, generator=g, dtype=F64) * 3
    for param in ("eps", "flow"):
        p = Parametrisation(param)
        s, sn = torch.tensor(0.8, dtype=F64), torch.tensor(0.5, dtype=F64)
        x0 = mean
        a, b = (1.0, s) if param == "eps" else (1 - s, s)
        an, bn = (1.0, sn) if param == "eps" else (1 - sn, sn)
        expected = an * x0 + bn * (x - a * x0) / b
        torch.testing.assert_close(ddim_step(p, x, x0, s, sn), expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(euler_step(x, x0, s, sn), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("param", ["eps", "flow"])
def test_the_plain_sampler_is_deterministic_and_lands_on_the_data(param):
    # Gaussian data with tiny variance: every sample ends at the mean
    sigmas = karras_sigmas(30, dtype=F64) if param == "eps" else flow_sigmas(30, dtype=F64)
    mean = torch.linspace(-1, 1, 64, dtype=F64).reshape(1, 1, 8, 8)
    den = GaussianDenoiser(mean, 1e-8, param)
    x = initial_latent((1, 1, 8, 8), sigmas, param, seed=3, dtype=F64)
    y1 = sample(den, sigmas, x, None, param, "ddim")
    y2 = sample(den, sigmas, x.clone(), None, param, "ddim")
    assert torch.equal(y1, y2)
    torch.testing.assert_close(y1, mean, rtol=0, atol=1e-3)


def test_inversion_rejects_bad_input():
    den, mean, var, sigmas, g = _world("eps", False)
    x = torch.randn(2, 4, 8, 8, generator=g, dtype=F64)
    with pytest.raises(ValueError, match="d=6 is larger than the steps left"):
        ddim_invert(den, x, sigmas, 5, 6, None, "eps")
    with pytest.raises(ValueError, match="d must be >= 1"):
        ddim_invert(den, x, sigmas, 5, 0, None, "eps")
    bad = x.clone()
    bad[1, 2, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        ddim_invert(den, bad, sigmas, 5, 2, None, "eps")
    with pytest.raises(ValueError, match="sigma 0"):
        ddim_invert(den, x, sigmas, 20, 2, None, "eps")
    with pytest.raises(ValueError, match="param"):
        ddim_invert(den, x, sigmas, 5, 2, None, "v")
    with pytest.raises(ValueError, match="x contains NaN"):
        sample(den, sigmas, bad, None, "eps")
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample(den, sigmas.flip(0), x, None, "eps")
