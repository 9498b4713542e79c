"""The TiPAI loop: sampling with audits (DESIGN.md, "Data flow of one audited step").

``audit_step`` is one audited step, reusable from ComfyUI's step callback, which hands over x at
σ_i and x̂0 (``denoised``) with no extra model call:

    decode x̂0 -> mine regions -> per region: policy draws N actions -> editor A_g makes N
    candidates -> compose their decoded crops into the audit view -> auditor A_s scores control +
    N in one call -> guard (u_i, δ, τ_P(t), τ_F(t)) -> if accepted, blend
    z ← (1 - α(t)·m)·z_ctrl + α(t)·m·z_edit

It returns ``(new x, records)``, or ``(None, records)`` when nothing was accepted. It never writes
into x or x̂0, so a run where the guard accepts nothing is the plain run bit for bit.
``sample_with_audits`` is ``sampler.sample`` with ``audit_step`` as its callback: the same code
as the plain sampler, plus a restart of step i from the edited x when an edit is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..policy.actions import PolicyState
from .audit_schedule import AuditSchedule
from .blend import alpha_at, latent_blend
from ..records.costs import CountingDenoiser, Costs
from ..diffusion.ddim import check_latent
from ..diffusion.conditioning import Conditioning
from ..diffusion.parametrisation import Parametrisation
from ..protocols import EditContext
from ..mining.masks import check_mask, latent_to_pixel, pixel_to_latent
from ..diffusion.decode import view_factor
from ..protocols import AuditDecoder, Auditor, Denoiser, Editor, Guard, Miner, Policy
from ..records.tournament_record import TournamentRecord
from ..mining.regions import Region, compose, context_box, crop, scale_box
from ..diffusion.sampler import sample
from ..diffusion.schedules import Schedule, progress


@dataclass
class AuditSuite:
    """The five objects of the TiPAI KSampler plus the schedule: what ``audit_step`` needs.

    n_candidates is N; crop_margin the context margin (latent pixels) of the decoded crops;
    seed seeds the policy's draws (never the sampler's generator).
    """

    decoder: AuditDecoder
    miner: Miner
    auditor: Auditor
    editor: Editor
    policy: Policy
    guard: Guard
    schedule: AuditSchedule = field(default_factory=AuditSchedule)
    alpha: Schedule | float = 1.0
    n_candidates: int = 4
    crop_margin: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_candidates < 1:
            raise ValueError(f"N (n_candidates) must be >= 1, got {self.n_candidates}")
        if self.crop_margin < 0:
            raise ValueError(f"crop_margin must be >= 0, got {self.crop_margin}")


def policy_seed(seed: int, step: int, batch_index: int, region_index: int) -> int:
    """A distinct, reproducible seed per (run seed, step, image, region)."""
    return (int(seed) * 1_000_003 + step * 10_007 + batch_index * 101 + region_index) % (2**63 - 1)


def _signal_pairs(signals) -> tuple[tuple[str, float], ...]:
    """Region signals as (name, weight): a miner may give a mapping, pairs, or names strongest first."""
    if isinstance(signals, dict):
        return tuple((str(k), float(v)) for k, v in signals.items())
    return tuple((str(s), 1.0) if isinstance(s, str) else (str(s[0]), float(s[1])) for s in signals)


def _latent_bbox(mask: torch.Tensor) -> tuple[int, int, int, int]:
    return Region.from_mask((mask > 0).any(dim=0, keepdim=True).to(mask.dtype)).bbox


def _user_mask_view(user_mask: torch.Tensor | None, b: int, size: tuple[int, int], full: tuple[int, int]):
    if user_mask is None:
        return None
    check_mask(user_mask, "user_mask")
    if user_mask.shape[-2:] != full:
        raise ValueError(
            f"user_mask of size {tuple(user_mask.shape[-2:])} does not match the image size {full} of the latent"
        )
    m = user_mask[b : b + 1] if user_mask.shape[0] > 1 else user_mask
    return torch.nn.functional.interpolate(m, size=size, mode="nearest") if size != full else m


def audit_step(
    x: torch.Tensor,
    x0: torch.Tensor,
    step: int,
    sigmas: torch.Tensor,
    *,
    denoiser: Denoiser,
    param: Parametrisation | str,
    cond: Conditioning | None,
    prompt: str,
    suite: AuditSuite,
    user_mask: torch.Tensor | None = None,
    region_payload: Any = None,
    costs: Costs | None = None,
) -> tuple[torch.Tensor | None, list[TournamentRecord]]:
    """One audited step at ``sigmas[step]``; see the module docstring.

    x and x0 are ``[B, C, h, w]``; each image of the batch is audited on its own. ``user_mask`` is
    a pixel mask ``[1 or B, 1, factor·h, factor·w]`` fused into the miner's saliency. ``costs``,
    when given, accumulates every extra cost of the step (the records hold the per-region part).
    """
    param = Parametrisation.parse(param)
    check_latent(x, "x")
    check_latent(x0, "x0")
    if x0.shape != x.shape:
        raise ValueError(f"x0 of shape {tuple(x0.shape)} does not match x {tuple(x.shape)}")
    n_steps = sigmas.numel() - 1
    if not 0 <= step < n_steps:
        raise ValueError(f"step={step} outside the schedule of {n_steps} steps")
    n = suite.n_candidates
    if n < 1:
        raise ValueError(f"N (n_candidates) must be >= 1, got {n}")
    costs = Costs() if costs is None else costs
    t = progress(step, n_steps)
    scale = suite.schedule.scale(step, n_steps)
    f = view_factor(suite.decoder.factor, scale)
    h, w = x.shape[-2:]
    full = (suite.decoder.factor * h, suite.decoder.factor * w)
    alpha = alpha_at(suite.alpha, t)
    records: list[TournamentRecord] = []
    out: torch.Tensor | None = None

    for b in range(x.shape[0]):
        xb, x0b = x[b : b + 1], x0[b : b + 1]
        view = suite.decoder(x0b, scale)
        costs.decode_calls += 1
        costs.decoded_images += 1
        if view.shape != (1, 3, f * h, f * w):
            raise ValueError(f"the audit decoder returned {tuple(view.shape)}, expected (1, 3, {f * h}, {f * w})")
        regions = suite.miner(view, prompt, _user_mask_view(user_mask, b, (f * h, f * w), full))
        z = xb
        for r, region in enumerate(regions):
            rc = Costs()
            lat_mask = pixel_to_latent(region.mask.to(x.dtype), f, "max")
            control = {}
            if getattr(suite.policy, "wants_control_scores", False):
                # a learned π reads S_0, F_0 and P_0 before it draws: one more (single-image) auditor call
                c = suite.auditor.score(view, prompt, region.mask.to(view.dtype))
                rc.auditor_calls += 1
                rc.auditor_images += 1
                control = {"control_S": float(c.S[0]), "control_F": float(c.F[0]),
                           "control_P": tuple(float(v) for v in c.P[0].reshape(-1).tolist())}
            signals = getattr(region, "signals", None) or {}
            state = PolicyState(
                step=step,
                n_steps=n_steps,
                t=t,
                sigma=float(sigmas[step]),
                region_area=float(lat_mask.mean()),
                region_score=float(region.score),
                audit_scale=float(scale),
                max_depth=step,
                signals=_signal_pairs(signals),
                **control,
            )
            pseed = policy_seed(suite.seed, step, b, r)
            actions, logp = suite.policy.propose(state, n, torch.Generator().manual_seed(pseed))
            if len(actions) != n or logp.shape != (n,):
                raise ValueError(f"the policy returned {len(actions)} actions for N={n}")
            ctx = EditContext(CountingDenoiser(denoiser, rc), param, sigmas, step, xb, x0b, cond, region_payload)
            res = suite.editor(ctx, lat_mask, actions)

            # decode only the crop around the edited support, with context, and compose it into the view
            box = context_box(_latent_bbox(res.masks), suite.crop_margin, (h, w))
            crops = suite.decoder(crop(res.x0, box), scale)
            rc.decode_calls += 1
            rc.decoded_images += n
            pix = latent_to_pixel(crop(res.masks, box), f, "bilinear").to(view.dtype)
            views = compose(view, crops.to(view.dtype), scale_box(box, f), pix)
            scores = suite.auditor.score(torch.cat([view, views]), prompt, region.mask.to(view.dtype))
            rc.auditor_calls += 1
            rc.auditor_images += n + 1
            if len(scores) != n + 1:
                raise ValueError(f"the auditor returned {len(scores)} rows for a tournament of {n + 1}")
            decision = suite.guard.select(scores, t)
            if decision.accepted and alpha > 0:
                k = decision.winner - 1
                z = latent_blend(z, res.latents[k : k + 1], res.masks[k : k + 1], alpha)

            costs.add(rc)
            records.append(
                TournamentRecord(
                    step=step,
                    n_steps=n_steps,
                    t=t,
                    sigma=float(sigmas[step]),
                    region={
                        "index": r,
                        "bbox": list(region.bbox),
                        "area": region.area,
                        "latent_bbox": list(_latent_bbox(lat_mask)),
                        "score": float(region.score),
                        "audit_scale": float(scale),
                        "view_factor": f,
                    },
                    state=state.to_dict(),
                    actions=[a.to_dict() for a in actions],
                    log_probs=logp.double().tolist(),
                    policy_seed=pseed,
                    seeds=[int(a.seed) for a in actions],
                    scores=TournamentRecord.scores_to_dict(scores),
                    utilities=decision.utilities.tolist(),
                    winner=decision.winner,
                    accepted=decision.accepted,
                    guard={"delta": decision.delta, "tau_P": decision.tau_P, "tau_F": decision.tau_F},
                    alpha=alpha,
                    costs=rc,
                    batch_index=b,
                )
            )
        if z is not xb:
            out = x.clone() if out is None else out
            out[b : b + 1] = z
    return out, records


@dataclass
class LoopResult:
    latent: torch.Tensor
    records: list[TournamentRecord]
    costs: Costs
    accepted_steps: list[int]


def sample_with_audits(
    denoiser: Denoiser,
    sigmas: torch.Tensor,
    x: torch.Tensor,
    cond: Conditioning | None,
    param: Parametrisation | str,
    prompt: str,
    suite: AuditSuite,
    sampler: str = "euler",
    user_mask: torch.Tensor | None = None,
    region_payload: Any = None,
) -> LoopResult:
    """``sampler.sample`` with ``audit_step`` at the steps of ``suite.schedule``.

    Returns the final latent, one TournamentRecord per audited region, the total extra costs
    (including one restart call at σ_i per step with an accepted edit) and those steps.
    """
    param = Parametrisation.parse(param)
    n_steps = sigmas.numel() - 1
    records: list[TournamentRecord] = []
    costs = Costs()
    accepted: list[int] = []

    def callback(i: int, xi: torch.Tensor, x0i: torch.Tensor) -> torch.Tensor | None:
        if not suite.schedule.is_audited(i, n_steps):
            return None
        new_x, recs = audit_step(
            xi, x0i, i, sigmas, denoiser=denoiser, param=param, cond=cond, prompt=prompt, suite=suite,
            user_mask=user_mask, region_payload=region_payload, costs=costs,
        )
        records.extend(recs)
        if new_x is not None:
            accepted.append(i)
            costs.denoiser_calls += 1  # sample() re-evaluates x̂0 at σ_i from the edited x
            costs.denoiser_evals += int(xi.shape[0])
        return new_x

    latent = sample(denoiser, sigmas, x, cond, param, sampler, callback)
    return LoopResult(latent, records, costs, accepted)
