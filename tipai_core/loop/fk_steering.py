"""Feynman–Kac steering (Singhal et al. 2025): search over noise with k particles and a judge.

k particles ``x^(j)`` are sampled together, as one batch of the denoiser. At the resampling steps
t ∈ T the judge scores each particle's x̂0, ``r_t^j = r(x̂0^j)``, and the particles are resampled
in proportion to a potential ``G_t^j``:

    difference   G_t = exp(λ·(r_t − r_{t'}))      t' the previous resampling step (r = 0 before the first)
    max          G_t = exp(λ·max_{s ≤ t} r_s)     the best score a particle's history has seen

With ``difference`` the potentials telescope, and with the final weight ``exp(λ·(r(x_0) − r_{t_last}))``
the weighted particles target the tilted distribution ``p̃(x0) ∝ p(x0)·exp(λ·r(x0))`` as k grows
(tested on the analytic mixture, where p̃'s component weights are known in closed form). ``max``
is the paper's heuristic that favours particles that were good at any point; it has no such target.
Resampling is multinomial or systematic (lower variance). At the end the judge picks the best
particle (``best``); ``final_resample`` instead returns a population resampled by the final weights.

Transitions: ``eta = 0`` is DDIM (deterministic: resampled duplicates stay equal); ``eta > 0`` (eps
models) is Euler-ancestral with ``σ_up = η·min(σ', √(σ'²(σ² − σ'²)/σ²))``, so duplicates diverge.
Costs are counted like the loop's: one denoiser call of k rows per step, one judge call of k
images per judged step (and the decodes, when a decoder is given).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .. import interrupt
from ..diffusion.conditioning import Conditioning
from ..diffusion.ddim import check_latent, ddim_step
from ..diffusion.parametrisation import Parametrisation
from ..diffusion.sigmas import validate_sigmas
from ..protocols import AuditDecoder, Denoiser
from ..records.costs import Costs

POTENTIALS = ("difference", "max")
RESAMPLING = ("multinomial", "systematic")
Judge = Callable[[torch.Tensor], torch.Tensor]  # images or x̂0 [k, ...] -> rewards [k]


@dataclass(frozen=True)
class FKSettings:
    """k particles, temperature λ, potential, resampling steps and scheme, transition noise η."""

    k: int = 4
    lam: float = 10.0
    potential: str = "difference"
    resample_at: tuple[int, ...] = ()
    resampling: str = "systematic"
    eta: float = 1.0
    final_resample: bool = False

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k (particles) must be >= 1, got {self.k}")
        if not math.isfinite(self.lam) or self.lam < 0:
            raise ValueError(f"lam (λ) must be finite and >= 0, got {self.lam}")
        if self.potential not in POTENTIALS:
            raise ValueError(f"potential must be one of {POTENTIALS}, got {self.potential!r}")
        if self.resampling not in RESAMPLING:
            raise ValueError(f"resampling must be one of {RESAMPLING}, got {self.resampling!r}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")


def resample_every(n_steps: int, every: int = 5, start: float = 0.2, stop: float = 0.8) -> tuple[int, ...]:
    """Resampling steps every ``every`` steps over the middle ``[start, stop)`` of the trajectory."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    lo, hi = int(math.ceil(start * n_steps)), int(math.ceil(stop * n_steps))
    return tuple(range(max(lo, 1), min(hi, n_steps), every))


@dataclass
class FKResult:
    latent: torch.Tensor  # [1, C, h, w] the judge's best final particle
    particles: torch.Tensor  # [k, C, h, w] the final population (resampled when final_resample)
    rewards: torch.Tensor  # [k] final rewards of ``particles``
    log_weights: torch.Tensor  # [k] normalised final log-weights of ``particles`` (uniform after a resample)
    best: int
    costs: Costs
    ess: list[float] = field(default_factory=list)  # effective sample size at each resampling step
    ancestry: list[list[int]] = field(default_factory=list)  # parent indices chosen at each resampling


def resample_indices(log_w: torch.Tensor, scheme: str, generator: torch.Generator) -> torch.Tensor:
    """k parent indices drawn in proportion to ``exp(log_w)`` (multinomial or systematic)."""
    w = torch.softmax(log_w.double(), dim=0)
    k = w.numel()
    if scheme == "multinomial":
        return torch.multinomial(w, k, replacement=True, generator=generator)
    u = (torch.rand((), generator=generator, dtype=torch.float64) + torch.arange(k, dtype=torch.float64)) / k
    return torch.searchsorted(torch.cumsum(w, 0), u).clamp_max(k - 1)


def _ancestral_step(
    x: torch.Tensor, x0: torch.Tensor, sigma: float, sigma_next: float, eta: float, generator: torch.Generator
) -> torch.Tensor:
    """Euler-ancestral (eps models): Euler to σ_down, then fresh noise of σ_up."""
    if sigma_next == 0:
        return x0
    up = eta * min(sigma_next, math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    down = math.sqrt(sigma_next**2 - up**2)
    x = x0 + (x - x0) * (down / sigma)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return x + up * noise


def _potential(settings: FKSettings, r: torch.Tensor, r_prev: torch.Tensor, r_max: torch.Tensor) -> torch.Tensor:
    if settings.potential == "difference":
        return settings.lam * (r - r_prev)
    return settings.lam * torch.maximum(r_max, r)


def _check_inputs(sigmas: torch.Tensor, x: torch.Tensor, param: Parametrisation, settings: FKSettings) -> None:
    validate_sigmas(sigmas, param)
    check_latent(x, "x")
    n_steps = sigmas.numel() - 1
    if x.shape[0] != settings.k:
        raise ValueError(f"x must hold the k={settings.k} start latents, got batch {x.shape[0]}")
    if any(not 0 < t < n_steps for t in settings.resample_at):
        raise ValueError(f"resample_at steps must lie in (0, {n_steps}), got {settings.resample_at}")
    if settings.eta > 0 and param is not Parametrisation.EPS:
        raise ValueError("eta > 0 (ancestral transitions) is for eps models; use eta = 0 for flow models")


def _transition(
    param: Parametrisation,
    x: torch.Tensor,
    x0: torch.Tensor,
    s: torch.Tensor,
    s_next: torch.Tensor,
    eta: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """One step σ -> σ': Euler-ancestral for η > 0, else DDIM (x̂0 itself at σ' = 0)."""
    if eta > 0:
        return _ancestral_step(x, x0, float(s), float(s_next), eta, gen)
    if float(s_next) == 0:
        return x0
    return ddim_step(param, x, x0, s, s_next)


def fk_steering(
    denoiser: Denoiser,
    sigmas: torch.Tensor,
    x: torch.Tensor,
    cond: Conditioning | None,
    param: Parametrisation | str,
    judge: Judge,
    settings: FKSettings,
    *,
    decoder: AuditDecoder | None = None,
    generator: torch.Generator | None = None,
) -> FKResult:
    """FK steering from the start latents ``x [k, C, h, w]`` at ``sigmas[0]``; see the module docstring."""
    param = Parametrisation.parse(param)
    _check_inputs(sigmas, x, param, settings)
    k, n_steps = settings.k, sigmas.numel() - 1
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    costs = Costs()
    at = set(settings.resample_at)
    r_prev = torch.zeros(k, dtype=torch.float64)
    r_max = torch.full((k,), -math.inf, dtype=torch.float64)
    result_ess: list[float] = []
    ancestry: list[list[int]] = []

    def score(x0: torch.Tensor) -> torch.Tensor:
        images = x0
        if decoder is not None:
            images = decoder(x0)
            costs.decode_calls += 1
            costs.decoded_images += int(x0.shape[0])
        r = judge(images).reshape(-1).double().cpu()
        costs.auditor_calls += 1
        costs.auditor_images += int(x0.shape[0])
        if r.shape != (x0.shape[0],) or not torch.isfinite(r).all():
            raise ValueError(f"the judge must return {x0.shape[0]} finite rewards, got {tuple(r.shape)}")
        return r

    x0 = x
    for i in range(n_steps):
        interrupt.check()
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, s, cond)
        costs.denoiser_calls += 1
        costs.denoiser_evals += k
        if i in at:
            r = score(x0)
            log_w = _potential(settings, r, r_prev, r_max)
            w = torch.softmax(log_w, 0)
            result_ess.append(float(1.0 / (w * w).sum()))
            parents = resample_indices(log_w, settings.resampling, gen)
            ancestry.append(parents.tolist())
            idx = parents.to(x.device)
            x, x0 = x[idx], x0[idx]
            r_prev, r_max = r[parents], torch.maximum(r_max, r)[parents]
        x = _transition(param, x, x0, s, s_next, settings.eta, gen)

    r_final = score(x)
    # the weight left after the last resampling: it completes the telescoping product (difference)
    log_w = (
        _potential(settings, r_final, r_prev, r_max)
        if settings.potential == "difference"
        else torch.zeros(k, dtype=torch.float64)
    )
    log_w = log_w - torch.logsumexp(log_w, 0)
    particles, rewards = x, r_final
    if settings.final_resample:
        parents = resample_indices(log_w, settings.resampling, gen)
        ancestry.append(parents.tolist())
        particles, rewards = x[parents.to(x.device)], r_final[parents]
        log_w = torch.full((k,), -math.log(k), dtype=torch.float64)
    best = int(torch.argmax(rewards))
    return FKResult(particles[best : best + 1], particles, rewards, log_w, best, costs, result_ess, ancestry)


def fk_start_latents(
    shape: Sequence[int], sigmas: torch.Tensor, param: Parametrisation | str, k: int, generator: torch.Generator
) -> torch.Tensor:
    """k start latents ``a(σ_0)·0 + b(σ_0)·ε`` of ``shape = (C, h, w)``."""
    param = Parametrisation.parse(param)
    eps = torch.randn((k, *shape), generator=generator, dtype=sigmas.dtype)
    return param.noise(torch.zeros_like(eps), eps, sigmas[0])
