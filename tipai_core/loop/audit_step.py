"""One audited step of the TiPAI loop, reusable from ComfyUI's step callback.

The callback hands over x at σ_i and x̂0 (``denoised``) with no extra model call. Per image of the
batch, in named phases:

    decode_view        decode x̂0 at the step's audit scale
    (miner)            mine the suspect regions of the view (a global step: the whole image, one region)
    per region:
      policy_state     the state s the policy reads
      (region text)    the region's prompt, encoded by ``suite.region_encoder``, conditions its edit
      draw_actions     π draws N actions (its own seeded generator)
      (editor)         A_g makes N candidates in one batch
      score_candidates compose their decoded crops into the view; A_s scores control + N in one call
      (guard)          u_i = (S_i - S_0 - δ)_+ · 1[P_i ≥ τ_P(t)] · 1[F_i ≥ τ_F(t)] · B_i, accept argmax if > 0
      latent_blend     z ← (1 - α(t)·m)·z_ctrl + α(t)·m·z_edit, only for an accepted winner
      tournament_record what happened, for TSPO and calibration

``audit_step`` returns ``(new x, records)``, or ``(None, records)`` when nothing was accepted. It
never writes into x or x̂0, so a run where the guard accepts nothing is the plain run bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import interrupt
from ..diffusion.conditioning import Conditioning
from ..diffusion.ddim import check_latent
from ..diffusion.decode import view_factor
from ..diffusion.parametrisation import Parametrisation
from ..diffusion.schedules import Schedule, progress
from ..mining.masks import check_user_mask, latent_to_pixel, pixel_to_latent
from ..mining.regions import Region, compose, context_box, crop, scale_box
from ..policy.actions import Action, PolicyState
from ..protocols import (
    AuditDecoder,
    Auditor,
    AuditScores,
    Denoiser,
    EditContext,
    Editor,
    EditResult,
    Guard,
    GuardDecision,
    Miner,
    Policy,
)
from ..records.costs import Costs, CountingDenoiser
from ..records.tournament_record import TournamentRecord
from .audit_schedule import AuditSchedule
from .blend import alpha_at, latent_blend


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
    # called with each tournament's record and its N+1 judged views [N+1, 3, H, W] (control first),
    # for whoever wants to show the tournament; it must not change them
    on_tournament: Callable[[TournamentRecord, torch.Tensor], None] | None = None
    # a region's text (``Region.prompt``) -> the denoiser's region payload, so the candidates are
    # conditioned on it inside the mask; None: every region is edited under the run's region payload
    region_encoder: Callable[[str], Any] | None = None

    def __post_init__(self) -> None:
        if self.n_candidates < 1:
            raise ValueError(f"N (n_candidates) must be >= 1, got {self.n_candidates}")
        if self.crop_margin < 0:
            raise ValueError(f"crop_margin must be >= 0, got {self.crop_margin}")


@dataclass(frozen=True)
class StepContext:
    """What every phase of one audited step shares: where we are and at which audit resolution."""

    step: int
    n_steps: int
    t: float
    sigma: float
    scale: float
    factor: int  # view pixels per latent pixel, f = VAE factor · scale
    latent_size: tuple[int, int]


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


def _user_mask_view(user_mask: torch.Tensor | None, b: int, size: tuple[int, int]) -> torch.Tensor | None:
    """Image b's user mask (already checked) at the audit view's size."""
    if user_mask is None:
        return None
    m = user_mask[b : b + 1] if user_mask.shape[0] > 1 else user_mask
    return torch.nn.functional.interpolate(m, size=size, mode="nearest") if tuple(m.shape[-2:]) != size else m


def decode_view(suite: AuditSuite, x0b: torch.Tensor, sc: StepContext, costs: Costs) -> torch.Tensor:
    """The audit view of one image: its x̂0 decoded once at the step's scale, ``[1, 3, f·h, f·w]``."""
    view = suite.decoder(x0b, sc.scale)
    costs.decode_calls += 1
    costs.decoded_images += 1
    h, w = sc.latent_size
    if view.shape != (1, 3, sc.factor * h, sc.factor * w):
        raise ValueError(
            f"the audit decoder returned {tuple(view.shape)}, expected (1, 3, {sc.factor * h}, {sc.factor * w})"
        )
    return view


def policy_state(
    suite: AuditSuite,
    sc: StepContext,
    view: torch.Tensor,
    region: Region,
    lat_mask: torch.Tensor,
    prompt: str,
    rc: Costs,
) -> PolicyState:
    """The state s the policy reads; a learned π also reads S_0, F_0 and P_0 (one more auditor call)."""
    control: dict[str, Any] = {}
    if getattr(suite.policy, "wants_control_scores", False):
        c = suite.auditor.score(view, prompt, region.mask.to(view.dtype))
        rc.auditor_calls += 1
        rc.auditor_images += 1
        control = {
            "control_S": float(c.S[0]),
            "control_F": float(c.F[0]),
            "control_P": tuple(float(v) for v in c.P[0].reshape(-1).tolist()),
        }
    return PolicyState(
        step=sc.step,
        n_steps=sc.n_steps,
        t=sc.t,
        sigma=sc.sigma,
        region_area=float(lat_mask.mean()),
        region_score=float(region.score),
        audit_scale=float(sc.scale),
        max_depth=sc.step,
        signals=_signal_pairs(getattr(region, "signals", None) or {}),
        **control,
    )


def draw_actions(suite: AuditSuite, state: PolicyState, pseed: int) -> tuple[list[Action], torch.Tensor]:
    """π draws N actions from its own generator, seeded per (run, step, image, region)."""
    n = suite.n_candidates
    actions, logp = suite.policy.propose(state, n, torch.Generator().manual_seed(pseed))
    if len(actions) != n or logp.shape != (n,):
        raise ValueError(f"the policy returned {len(actions)} actions for N={n}")
    return actions, logp


def region_text_payload(suite: AuditSuite, region: Region, default: Any) -> Any:
    """The region prompt's conditioning when the region carries a text and the suite can encode it."""
    text = region.prompt.strip() if isinstance(region.prompt, str) else ""
    if not text or suite.region_encoder is None:
        return default
    return suite.region_encoder(text)


def score_candidates(
    suite: AuditSuite, sc: StepContext, view: torch.Tensor, region: Region, res: EditResult, prompt: str, rc: Costs
) -> tuple[AuditScores, torch.Tensor]:
    """Decode only the crop around the edited support (with context), compose it into the view, and
    score the control and the N candidates in one auditor call; returns the scores and the N+1 views."""
    n = suite.n_candidates
    box = context_box(_latent_bbox(res.masks), suite.crop_margin, sc.latent_size)
    crops = suite.decoder(crop(res.x0, box), sc.scale)
    rc.decode_calls += 1
    rc.decoded_images += n
    pix = latent_to_pixel(crop(res.masks, box), sc.factor, "bilinear").to(view.dtype)
    views = compose(view, crops.to(view.dtype), scale_box(box, sc.factor), pix)
    judged = torch.cat([view, views])
    scores = suite.auditor.score(judged, prompt, region.mask.to(view.dtype))
    rc.auditor_calls += 1
    rc.auditor_images += n + 1
    if len(scores) != n + 1:
        raise ValueError(f"the auditor returned {len(scores)} rows for a tournament of {n + 1}")
    return scores, judged


def tournament_record(
    sc: StepContext,
    b: int,
    r: int,
    region: Region,
    lat_mask: torch.Tensor,
    state: PolicyState,
    actions: list[Action],
    logp: torch.Tensor,
    pseed: int,
    scores: AuditScores,
    decision: GuardDecision,
    alpha: float,
    rc: Costs,
) -> TournamentRecord:
    return TournamentRecord(
        step=sc.step,
        n_steps=sc.n_steps,
        t=sc.t,
        sigma=sc.sigma,
        region={
            "index": r,
            "bbox": list(region.bbox),
            "area": region.area,
            "latent_bbox": list(_latent_bbox(lat_mask)),
            "score": float(region.score),
            "audit_scale": float(sc.scale),
            "view_factor": sc.factor,
            "prompt": region.prompt,  # its own text (None: none); conditions candidates with region_text "region"
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


def _check_step(x: torch.Tensor, x0: torch.Tensor, step: int, sigmas: torch.Tensor, suite: AuditSuite) -> None:
    check_latent(x, "x")
    check_latent(x0, "x0")
    if x0.shape != x.shape:
        raise ValueError(f"x0 of shape {tuple(x0.shape)} does not match x {tuple(x.shape)}")
    n_steps = sigmas.numel() - 1
    if not 0 <= step < n_steps:
        raise ValueError(f"step={step} outside the schedule of {n_steps} steps")
    if suite.n_candidates < 1:
        raise ValueError(f"N (n_candidates) must be >= 1, got {suite.n_candidates}")


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
    _check_step(x, x0, step, sigmas, suite)
    costs = Costs() if costs is None else costs
    n_steps = sigmas.numel() - 1
    h, w = x.shape[-2:]
    if user_mask is not None:
        check_user_mask(user_mask, x.shape[0], (suite.decoder.factor * h, suite.decoder.factor * w))
    scale = suite.schedule.scale(step, n_steps)
    sc = StepContext(
        step,
        n_steps,
        progress(step, n_steps),
        float(sigmas[step]),
        scale,
        view_factor(suite.decoder.factor, scale),
        (h, w),
    )
    alpha = alpha_at(suite.alpha, sc.t)
    records: list[TournamentRecord] = []
    out: torch.Tensor | None = None

    for b in range(x.shape[0]):
        xb, x0b = x[b : b + 1], x0[b : b + 1]
        view = decode_view(suite, x0b, sc, costs)
        if suite.schedule.is_global(step):  # coarse and early: one tournament over the whole image
            regions = [Region.from_mask(torch.ones_like(view[:, :1]), score=1.0)]
        else:
            regions = suite.miner(view, prompt, _user_mask_view(user_mask, b, (sc.factor * h, sc.factor * w)))
        z = xb
        for r, region in enumerate(regions):
            interrupt.check()  # between tournaments
            rc = Costs()
            lat_mask = pixel_to_latent(region.mask.to(x.dtype), sc.factor, "max")
            state = policy_state(suite, sc, view, region, lat_mask, prompt, rc)
            pseed = policy_seed(suite.seed, step, b, r)
            actions, logp = draw_actions(suite, state, pseed)
            payload = region_text_payload(suite, region, region_payload)
            ctx = EditContext(CountingDenoiser(denoiser, rc), param, sigmas, step, xb, x0b, cond, payload, prompt)
            res = suite.editor(ctx, lat_mask, actions)
            if res.costs is not None:  # what the editor spent besides denoiser calls (referee: auditor passes)
                rc.add(res.costs)
            scores, judged = score_candidates(suite, sc, view, region, res, prompt, rc)
            decision = suite.guard.select(scores, sc.t)
            if decision.accepted and alpha > 0:
                k = decision.winner - 1
                z = latent_blend(z, res.latents[k : k + 1], res.masks[k : k + 1], alpha)
            costs.add(rc)
            records.append(
                tournament_record(sc, b, r, region, lat_mask, state, actions, logp, pseed, scores, decision, alpha, rc)
            )
            if suite.on_tournament is not None:
                suite.on_tournament(records[-1], judged)
        if z is not xb:
            out = x.clone() if out is None else out
            out[b : b + 1] = z
    return out, records
