"""Analytic denoisers: the exact x0 prediction E[x0 | x] for Gaussian and Gaussian-mixture data.

With ``x = a·x0 + b·ε`` (``diffusion.Parametrisation``: eps ``a=1, b=σ``; flow ``a=1-σ, b=σ``):

* Gaussian ``x0 ~ N(μ, v)`` (elementwise): ``E[x0|x] = μ + a·v / (a²v + b²) · (x - a·μ)``.
* Mixture per latent pixel, ``x0[:, p] ~ Σ_k π_k N(μ_k, s_k² I_C)`` over the C channels:
  ``τ_k = a²s_k² + b²``, responsibilities ``r_k ∝ π_k N(x; a·μ_k, τ_k I)`` and
  ``E[x0|x] = Σ_k r_k (μ_k + a·s_k²/τ_k · (x - a·μ_k))``.

The mixture is conditioned through per-class log-biases (the "prompt"): a prompt's weights are
``log π_k + β_k`` (``payload``; the region prompt's ``region_payload``), the unconditional ones
``log π``. The branches' exact posterior means are combined by ``conditioning.guided_x0``, the
same combine every denoiser uses (CFG map, region composite, emphasis). Tests, benchmarks and the
demo use these as an exact, model-free Denoiser.
"""

from __future__ import annotations

import math

import torch

from ..diffusion.conditioning import Conditioning, guided_x0
from ..diffusion.parametrisation import Parametrisation, _as_column


class GaussianDenoiser:
    """Exact posterior mean for elementwise Gaussian data ``x0 ~ N(mean, var)``; ignores conditioning."""

    def __init__(self, mean: torch.Tensor | float, var: torch.Tensor | float, param: Parametrisation | str = "eps"):
        # python scalars are kept in float64 and cast to the latent's dtype at call time
        self.mean = mean if isinstance(mean, torch.Tensor) else torch.tensor(float(mean), dtype=torch.float64)
        self.var = var if isinstance(var, torch.Tensor) else torch.tensor(float(var), dtype=torch.float64)
        if (self.var <= 0).any():
            raise ValueError("var must be > 0")
        self.param = Parametrisation.parse(param)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning | None = None) -> torch.Tensor:
        a, b = self.param.coefficients(_as_column(sigma, x))
        mu, v = self.mean.to(x), self.var.to(x)
        return mu + a * v / (a * a * v + b * b) * (x - a * mu)


class GaussianMixtureDenoiser:
    """Exact posterior mean for a per-pixel isotropic Gaussian mixture over the latent channels.

    Args:
        means: ``[K, C]`` component means μ_k.
        stds: ``[K]`` (or scalar) component standard deviations s_k > 0.
        weights: ``[K]`` prior weights π_k (normalised here); uniform when None.
        param: noise parametrisation.
    """

    def __init__(
        self,
        means: torch.Tensor,
        stds: torch.Tensor | float,
        weights: torch.Tensor | None = None,
        param: Parametrisation | str = "eps",
    ):
        if means.dim() != 2:
            raise ValueError(f"means must be [K, C], got {tuple(means.shape)}")
        k = means.shape[0]
        self.means = means
        self.stds = torch.as_tensor(stds, dtype=means.dtype).expand(k).clone()
        if (self.stds <= 0).any():
            raise ValueError("stds must be > 0")
        w = torch.full((k,), 1.0 / k, dtype=means.dtype) if weights is None else weights.to(means.dtype)
        if w.shape != (k,) or (w <= 0).any():
            raise ValueError(f"weights must be [K]={k} positive values")
        self.log_weights = torch.log(w / w.sum())
        self.param = Parametrisation.parse(param)

    @property
    def n_components(self) -> int:
        return int(self.means.shape[0])

    def posterior(self, x: torch.Tensor, sigma: torch.Tensor, log_bias: torch.Tensor | None = None):
        """(responsibilities ``[B, K, h, w]``, per-component posterior means ``[B, K, C, h, w]``)."""
        a, b = self.param.coefficients(_as_column(sigma, x))
        mu = self.means.to(x)[None, :, :, None, None]  # [1, K, C, 1, 1]
        s2 = (self.stds.to(x) ** 2)[None, :, None, None]  # [1, K, 1, 1]
        # a, b are scalars or [B, 1, 1, 1] columns; a5 adds the K axis for [B, K, C, h, w] terms
        a5 = a.unsqueeze(1) if isinstance(a, torch.Tensor) and a.dim() else a
        tau = a * a * s2 + b * b  # [B or 1, K, 1, 1]
        diff = x.unsqueeze(1) - a5 * mu  # [B, K, C, h, w]
        sq = (diff * diff).sum(dim=2)  # [B, K, h, w]
        c = x.shape[1]
        loglik = -sq / (2 * tau) - 0.5 * c * torch.log(tau * 2 * math.pi)
        logits = self.log_weights.to(x)[None, :, None, None] + loglik
        if log_bias is not None:
            logits = logits + log_bias
        resp = torch.softmax(logits, dim=1)
        gain = (a * s2 / tau).unsqueeze(2)  # [B or 1, K, 1, 1, 1]
        means = mu + gain * diff
        return resp, means

    def _mean(self, x: torch.Tensor, sigma: torch.Tensor, log_bias: torch.Tensor | None) -> torch.Tensor:
        resp, means = self.posterior(x, sigma, log_bias)
        return (resp.unsqueeze(2) * means).sum(dim=1)

    def _as_bias(self, p, x: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(p).to(x)
        return t.reshape(1, self.n_components, 1, 1) if t.dim() == 1 else t

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning | None = None) -> torch.Tensor:
        uncond = self._mean(x, sigma, None)
        if cond is None or (cond.payload is None and cond.region_mask is None):
            return uncond
        base = self._as_bias(cond.payload, x) if cond.payload is not None else x.new_zeros(1, self.n_components, 1, 1)
        region = None
        if cond.region_mask is not None and cond.region_payload is not None:
            region = self._mean(x, sigma, self._as_bias(cond.region_payload, x))
        return guided_x0(uncond, self._mean(x, sigma, base), cond, region)

    def component_of(self, x0: torch.Tensor) -> torch.Tensor:
        """Index of the nearest component mean for each latent pixel of a clean latent, ``[B, h, w]``."""
        d = ((x0.unsqueeze(1) - self.means.to(x0)[None, :, :, None, None]) ** 2).sum(dim=2)
        return d.argmin(dim=1)

    def sample(self, shape: tuple[int, int, int], generator: torch.Generator, log_bias: torch.Tensor | None = None):
        """Draw clean latents ``[B, C, h, w]`` (``shape = (B, h, w)``) from the (biased) mixture."""
        bsz, h, w = shape
        logits = self.log_weights[None, :, None, None].expand(bsz, -1, h, w)
        if log_bias is not None:
            logits = logits + log_bias
        probs = torch.softmax(logits, dim=1).permute(0, 2, 3, 1).reshape(-1, self.n_components)
        comp = torch.multinomial(probs, 1, generator=generator).reshape(bsz, h, w)
        mu = self.means[comp].permute(0, 3, 1, 2)  # [B, C, h, w]
        noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
        return mu + self.stds[comp].unsqueeze(1) * noise
