"""A synthetic world where the right answer is known: a planted wrong region in a mixture world.

Data: every latent pixel is drawn from a two-component mixture over its C channels
(``analytic.GaussianMixtureDenoiser``), component 0 at ``+s·u`` and component 1 at ``-s·u``.
The prompt asks for component 0 everywhere, but the "model's" conditioning is wrong on a
planted square: its log-bias favours component 1 there, so the plain sampler paints the square
with the wrong component. The audit decoder maps component 0 to green and component 1 to red;
the auditor scores each pixel by how green it is,

    q(p) = sigmoid(κ·(G(p) - R(p))),   S = mean_p q,   S_R = F = mean_{p ∈ mask} q,

with P = 1 (one class, always safe) and B = 1. The miner's saliency is ``1 - q``. A regional
prompt (``region_payload``) favours component 0, so an edit with enough depth d, CFG and emphasis
repaints the square; the guard accepts it because S rises. Used by the tests, benchmarks and demo.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..diffusion.conditioning import Conditioning
from ..diffusion.decode import LinearLatentDecoder
from ..diffusion.parametrisation import Parametrisation
from ..diffusion.sigmas import flow_sigmas, karras_sigmas
from ..editing.diffusion_editor import DiffusionEditor
from ..guard.tournament_guard import TournamentGuard
from ..loop.audit_schedule import AuditSchedule
from ..loop.audit_step import AuditSuite
from ..loop.sampling import sample_with_audits
from ..mining.regions import Box, SaliencyMiner
from ..policy.actions import FixedKnobPolicy
from ..protocols import AuditScores
from .analytic import GaussianMixtureDenoiser


def greenness(images: torch.Tensor, kappa: float = 10.0) -> torch.Tensor:
    """q(p) = sigmoid(κ·(G - R)), ``[B, 1, H, W]``."""
    return torch.sigmoid(kappa * (images[:, 1:2] - images[:, 0:1]))


class ComponentAuditor:
    """``protocols.Auditor`` of the synthetic world (see the module docstring)."""

    classes = ("safe",)

    def __init__(self, kappa: float = 10.0):
        self.kappa = kappa

    def score(self, images: torch.Tensor, prompt: str, mask: torch.Tensor | None = None) -> AuditScores:
        q = greenness(images, self.kappa)
        s = q.flatten(1).mean(dim=1)
        if mask is None:
            s_r = s
        else:
            m = mask.to(q).expand_as(q)
            s_r = (q * m).flatten(1).sum(dim=1) / m.flatten(1).sum(dim=1).clamp_min(1e-12)
        b = images.shape[0]
        return AuditScores(S=s, S_R=s_r, F=s_r, P=q.new_ones(b, 1), B=q.new_ones(b), classes=self.classes)

    def similarity(self, images: torch.Tensor, prompt: str) -> torch.Tensor:
        """S with gradients (what referee inversion climbs)."""
        return greenness(images, self.kappa).flatten(1).mean(dim=1)


@dataclass
class SyntheticWorld:
    denoiser: GaussianMixtureDenoiser
    cond: Conditioning  # the model's (wrong on the planted square) conditioning
    region_payload: torch.Tensor  # the regional prompt: favours component 0
    decoder: LinearLatentDecoder
    auditor: ComponentAuditor
    miner: SaliencyMiner
    planted: Box  # latent box (y0, x0, y1, x1)
    shape: tuple[int, int, int, int]  # latent [1, C, h, w]

    def planted_mask(self) -> torch.Tensor:
        m = torch.zeros(1, 1, *self.shape[-2:])
        y0, x0, y1, x1 = self.planted
        m[..., y0:y1, x0:x1] = 1
        return m

    def correct_fraction(self, latent: torch.Tensor) -> float:
        """Share of the planted square's latent pixels that show component 0 (the right one)."""
        y0, x0, y1, x1 = self.planted
        comp = self.denoiser.component_of(latent)[:, y0:y1, x0:x1]
        return float((comp == 0).double().mean())

    def is_fixed(self, latent: torch.Tensor, threshold: float = 0.75) -> bool:
        """The square shows the right component: at least ``threshold`` of its latent pixels do."""
        return self.correct_fraction(latent) >= threshold


def make_world(
    param: Parametrisation | str = "eps",
    size: int = 12,
    channels: int = 4,
    planted: Box = (4, 4, 8, 8),
    separation: float = 1.5,
    std: float = 0.3,
    bias: float = 3.0,
    cfg: float = 1.5,
    factor: int = 8,
    dtype: torch.dtype = torch.float32,
) -> SyntheticWorld:
    """The world of the module docstring, on a ``[1, channels, size, size]`` latent."""
    u = torch.ones(channels, dtype=dtype) / channels**0.5
    means = torch.stack([separation * u, -separation * u])
    den = GaussianMixtureDenoiser(means, std, param=param)
    payload = torch.zeros(1, 2, size, size, dtype=dtype)
    payload[:, 0] = bias
    y0, x0, y1, x1 = planted
    payload[:, 0, y0:y1, x0:x1] = 0.0
    payload[:, 1, y0:y1, x0:x1] = bias
    region_payload = torch.tensor([bias, 0.0], dtype=dtype)
    # G - R grows with the projection on u: component 0 is green, component 1 red
    w = torch.zeros(3, channels, dtype=dtype)
    w[0] = -0.25 * u
    w[1] = 0.25 * u
    decoder = LinearLatentDecoder(w, torch.tensor([0.5, 0.5, 0.3], dtype=dtype), factor=factor)
    auditor = ComponentAuditor()
    miner = SaliencyMiner(
        lambda img, prompt: 1.0 - greenness(img, auditor.kappa),
        k=2,
        threshold=0.5,
        min_area_frac=2 / size**2,
        max_area_frac=0.5,
    )
    cond = Conditioning(payload=payload, cfg=cfg)
    return SyntheticWorld(den, cond, region_payload, decoder, auditor, miner, planted, (1, channels, size, size))


def default_policy() -> FixedKnobPolicy:
    """A spread of knobs, some too weak to fix the square (so the tournament matters)."""
    return FixedKnobPolicy(
        {
            "dilation": ((0, 1), (0.5, 0.5)),
            "feather": ((0, 1), (0.5, 0.5)),
            "cfg_inside": ((1.0, 2.0, 4.0), (1 / 3, 1 / 3, 1 / 3)),
            "emphasis": ((0.25, 1.0, 2.0), (1 / 3, 1 / 3, 1 / 3)),
            "jitter": ((0.0, 0.3, 0.6), (1 / 3, 1 / 3, 1 / 3)),
            "depth": ((1, 2, 4, 6), (0.25, 0.25, 0.25, 0.25)),
            "editor": (("invert", "renoise"), (0.5, 0.5)),
        }
    )


def world_sigmas(param: Parametrisation | str, n_steps: int = 20) -> torch.Tensor:
    """The schedules the synthetic benchmark uses: Karras (eps) or shifted flow (flow)."""
    if Parametrisation.parse(param) is Parametrisation.EPS:
        return karras_sigmas(n_steps, 0.02, 10.0)
    return flow_sigmas(n_steps, 3.0)


def world_suite(world: SyntheticWorld, n_candidates: int = 5, seed: int = 0, delta: float = 0.02) -> AuditSuite:
    return AuditSuite(
        decoder=world.decoder,
        miner=world.miner,
        auditor=world.auditor,
        editor=DiffusionEditor(),
        policy=default_policy(),
        guard=TournamentGuard(delta=delta),
        schedule=AuditSchedule(every=2, first=2, skip_last=1, scales=(0.5, 1.0)),
        alpha=1.0,
        n_candidates=n_candidates,
        seed=seed,
    )


@dataclass
class FixRates:
    param: str
    seeds: int
    plain: float  # share of seeds where the plain sampler's square shows component 0
    loop: float  # the same for the TiPAI loop
    plain_mean_fraction: float
    loop_mean_fraction: float


def fix_rates(param: Parametrisation | str = "eps", seeds: int = 50, n_candidates: int = 5) -> FixRates:
    """Plain sampler vs the loop on seeds 0..seeds-1 of the synthetic world (Euler, 20 steps)."""
    from ..diffusion.sampler import initial_latent, sample

    param = Parametrisation.parse(param)
    world = make_world(param)
    sigmas = world_sigmas(param)
    plain_fixed = loop_fixed = 0
    plain_frac = loop_frac = 0.0
    for s in range(seeds):
        x = initial_latent(world.shape, sigmas, param, s)
        plain = sample(world.denoiser, sigmas, x, world.cond, param)
        res = sample_with_audits(
            world.denoiser,
            sigmas,
            x,
            world.cond,
            param,
            "component 0 everywhere",
            world_suite(world, n_candidates, seed=s),
            region_payload=world.region_payload,
        )
        plain_fixed += world.is_fixed(plain)
        loop_fixed += world.is_fixed(res.latent)
        plain_frac += world.correct_fraction(plain)
        loop_frac += world.correct_fraction(res.latent)
    return FixRates(param.value, seeds, plain_fixed / seeds, loop_fixed / seeds, plain_frac / seeds, loop_frac / seeds)


if __name__ == "__main__":  # python -m tipai_core.testing.synthetic
    torch.set_num_threads(1)  # tiny tensors: threads only add contention
    for p in ("eps", "flow"):
        print(fix_rates(p))
