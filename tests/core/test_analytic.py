"""The analytic denoisers give exact x0 = E[x0 | x], checked by Tweedie's formula through autograd.

Tweedie: with ``x = a·x0 + b·ε``, ``E[a·x0 | x] = x + b²·∇ log p(x)``, where p is the marginal
density of x, known in closed form (a Gaussian, or a mixture of Gaussians ``N(a·μ_k, τ_k)``).
"""

from __future__ import annotations

import math

import pytest
import torch

from tipai_core.diffusion.conditioning import Conditioning
from tipai_core.diffusion.parametrisation import Parametrisation
from tipai_core.testing.analytic import GaussianDenoiser, GaussianMixtureDenoiser

F64 = torch.float64


def _coeff(param, sigma):
    return Parametrisation(param).coefficients(torch.tensor(sigma, dtype=F64))


@pytest.mark.parametrize("param", ["eps", "flow"])
@pytest.mark.parametrize("sigma", [0.05, 0.4, 0.9])
def test_gaussian_matches_tweedie(param, sigma):
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(1, 3, 4, 4, generator=g, dtype=F64)
    var = 0.1 + torch.rand(1, 3, 4, 4, generator=g, dtype=F64)
    a, b = _coeff(param, sigma)
    x = torch.randn(1, 3, 4, 4, generator=g, dtype=F64).requires_grad_(True)
    logp = (-((x - a * mean) ** 2) / (2 * (a * a * var + b * b))).sum()
    (score,) = torch.autograd.grad(logp, x)
    expected = (x.detach() + b * b * score) / a
    got = GaussianDenoiser(mean, var, param)(x.detach(), torch.tensor(sigma, dtype=F64), None)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("param", ["eps", "flow"])
@pytest.mark.parametrize("sigma", [0.05, 0.4, 0.9])
def test_mixture_matches_tweedie(param, sigma):
    g = torch.Generator().manual_seed(1)
    k, c = 3, 4
    means = torch.randn(k, c, generator=g, dtype=F64) * 2
    stds = torch.tensor([0.3, 0.5, 0.8], dtype=F64)
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=F64)
    den = GaussianMixtureDenoiser(means, stds, weights, param)
    a, b = _coeff(param, sigma)
    x = torch.randn(2, c, 3, 5, generator=g, dtype=F64).requires_grad_(True)
    tau = a * a * stds**2 + b * b  # [K]
    diff = x.unsqueeze(1) - a * means[None, :, :, None, None]
    log_comp = (
        torch.log(weights)[None, :, None, None]
        - (diff**2).sum(2) / (2 * tau[None, :, None, None])
        - 0.5 * c * torch.log(2 * math.pi * tau)[None, :, None, None]
    )
    logp = torch.logsumexp(log_comp, dim=1).sum()
    (score,) = torch.autograd.grad(logp, x)
    expected = (x.detach() + b * b * score) / a
    got = den(x.detach(), torch.tensor(sigma, dtype=F64), None)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_mixture_with_one_component_is_the_gaussian():
    mu = torch.tensor([[0.5, -1.0, 2.0]], dtype=F64)
    mix = GaussianMixtureDenoiser(mu, 0.7, param="flow")
    gauss = GaussianDenoiser(mu.reshape(1, 3, 1, 1), 0.49, "flow")
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2), dtype=F64)
    s = torch.tensor([0.3, 0.8], dtype=F64)  # one sigma per batch row
    torch.testing.assert_close(mix(x, s, None), gauss(x, s, None), rtol=0, atol=1e-12)


def test_cfg_is_a_per_pixel_scale_map():
    means = torch.tensor([[1.0, 1.0], [-1.0, -1.0]], dtype=F64)
    den = GaussianMixtureDenoiser(means, 0.5)
    x = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(3), dtype=F64)
    s = torch.tensor(1.0, dtype=F64)
    bias = torch.tensor([2.0, 0.0], dtype=F64)
    cfg_map = torch.ones(1, 1, 4, 4, dtype=F64)
    cfg_map[..., :2, :] = 4.0
    out = den(x, s, Conditioning(payload=bias, cfg=cfg_map))
    uncond = den(x, s, None)
    cond1 = den(x, s, Conditioning(payload=bias, cfg=1.0))
    expected = uncond + cfg_map * (cond1 - uncond)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    # where w = 1 the result is the conditional posterior mean itself
    resp, comp_means = den.posterior(x, s, bias.reshape(1, 2, 1, 1))
    cond_exact = (resp.unsqueeze(2) * comp_means).sum(1)
    torch.testing.assert_close(out[..., 2:, :], cond_exact[..., 2:, :], rtol=0, atol=1e-12)
    assert not torch.allclose(out[..., :2, :], cond_exact[..., :2, :])


def test_regional_conditioning_applies_inside_the_region_mask_only():
    means = torch.tensor([[1.0, 1.0], [-1.0, -1.0]], dtype=F64)
    den = GaussianMixtureDenoiser(means, 0.5)
    x = torch.zeros(1, 2, 4, 4, dtype=F64)  # equidistant: only the bias decides
    s = torch.tensor(2.0, dtype=F64)
    base = Conditioning(payload=torch.tensor([0.0, 3.0], dtype=F64), cfg=1.0)
    m = torch.zeros(1, 1, 4, 4, dtype=F64)
    m[..., 1:3, 1:3] = 1
    cond = base.with_region(
        m, torch.tensor([1.0], dtype=F64), torch.tensor([2.0], dtype=F64), torch.tensor([3.0, 0.0], dtype=F64)
    )
    out = den(x, s, cond)
    assert (out[0, 0][m[0, 0] == 1] > 0).all()  # pulled to component 0 inside
    assert (out[0, 0][m[0, 0] == 0] < 0).all()  # the base prompt's component 1 outside
    with pytest.raises(ValueError, match="stds"):
        GaussianMixtureDenoiser(means, 0.0)
