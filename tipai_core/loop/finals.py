"""A late look: the global tournament's best previews are finished, and a final tournament decides.

The global tournament at step g judges its candidates on x̂0 previews, which are not always what
the images become. ``sample_with_finals`` keeps the judge's cheap preview ranking but moves the
decision to the end ("coarse scales early, fine scales late"):

    step g      the control's x̂0 and N re-noised candidates (the suite's editor and actions) are
                judged on their previews, as in ``audit_step``; nothing is accepted yet
    finalists   the m candidates with the highest preview S are carried on from step g, one batch
                of m rows; their first step reuses the editor's x̂0 at σ_g, so it costs no call
    the end     the control (the plain trajectory, untouched) and the m finished images are judged
                on their final images, and the guard keeps the control unless a finalist beats it
                (with ``preview_win``, only a finalist whose preview also beat the control's may win)

Evaluations per image: ``n + N·(g + 1) + m·(n − g − 1)`` for the renoise editor at d = g (n steps).
With a guard that accepts nothing the result is the plain sampler's latent, bit for bit: the control
trajectory is the plain run, and the finalists run in their own batch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .. import interrupt
from ..diffusion.conditioning import Conditioning
from ..diffusion.ddim import ddim_step, euler_step
from ..diffusion.decode import view_factor
from ..diffusion.parametrisation import Parametrisation
from ..diffusion.sampler import sample
from ..diffusion.schedules import progress
from ..mining.masks import pixel_to_latent
from ..mining.regions import Region
from ..protocols import Denoiser, EditContext, GuardDecision
from ..records.costs import Costs, CountingDenoiser
from ..records.tournament_record import TournamentRecord
from .audit_step import AuditSuite, StepContext, decode_view, draw_actions, policy_seed, policy_state, score_candidates
from .audit_step import tournament_record as make_record
from .sampling import LoopResult


@dataclass(frozen=True)
class FinalsPlan:
    """Where the preview tournament runs (step g), and how many candidates are finished (m)."""

    step: int
    finalists: int = 1
    # "two looks": a finalist may win the final tournament only if its preview also beat the control's
    preview_win: bool = False

    def __post_init__(self) -> None:
        if self.step < 1:
            raise ValueError(f"the preview step g must be >= 1, got {self.step}")
        if self.finalists < 1:
            raise ValueError(f"finalists (m) must be >= 1, got {self.finalists}")


def finals_evals(n_steps: int, g: int, n: int, m: int) -> int:
    """Denoiser evaluations per image: the plain run, N candidates of g + 1, m finalists of n − g − 1."""
    return n_steps + n * (g + 1) + m * (n_steps - g - 1)


def finals_candidates(budget: int, n_steps: int, g: int, m: int) -> int:
    """The largest N with ``finals_evals(n_steps, g, N, m) ≤ budget·n_steps`` and N ≥ m (else 0)."""
    n = (n_steps * (budget - 1) - m * (n_steps - g - 1)) // (g + 1)
    return n if n >= m else 0


def top_finalists(S: torch.Tensor, m: int) -> list[int]:
    """Indices (into the N candidates, 0-based) of the m highest preview scores; ties: the lower index."""
    s = S.double()
    order = sorted(range(s.numel()), key=lambda j: (-float(s[j]), j))
    return order[:m]


def _two_looks(decision: GuardDecision, preview_S: torch.Tensor, keep_order: list[int]) -> GuardDecision:
    """The final decision restricted to finalists whose preview S beat the control's preview S:
    their utilities stay, the others' become 0, and the best remaining one wins if its u > 0."""
    u = decision.utilities.clone()
    for j, k in enumerate(keep_order):  # final row j + 1 is candidate k (preview row k + 1)
        if not preview_S[k + 1] > preview_S[0]:
            u[j + 1] = 0.0
    best = 1 + int(torch.argmax(u[1:]))
    accepted = bool(u[best] > 0)
    return GuardDecision(best if accepted else 0, accepted, u, decision.delta, decision.tau_P, decision.tau_F)


def finish_from(
    denoiser: Denoiser,
    sigmas: torch.Tensor,
    i: int,
    x: torch.Tensor,
    x0: torch.Tensor,
    cond: Conditioning | None,
    param: Parametrisation,
    sampler: str,
) -> torch.Tensor:
    """Step i from a known (x, x̂0) pair without a call, then the plain sampler to the end."""
    step = (
        euler_step(x, x0, sigmas[i], sigmas[i + 1])
        if sampler == "euler"
        else ddim_step(param, x, x0, sigmas[i], sigmas[i + 1])
    )
    if i + 1 == sigmas.numel() - 1:
        return step
    return sample(denoiser, sigmas[i + 1 :], step, cond, param, sampler)


def _batched(cond: Conditioning | None, m: int) -> Conditioning | None:
    """The base conditioning for m rows (a tensor CFG map of batch 1 is repeated)."""
    if cond is None or not isinstance(cond.cfg, torch.Tensor) or cond.cfg.dim() < 4 or cond.cfg.shape[0] != 1:
        return cond
    return replace(cond, cfg=cond.cfg.expand(m, *cond.cfg.shape[1:]))


def _check_plan(x: torch.Tensor, n_steps: int, plan: FinalsPlan, suite: AuditSuite) -> None:
    if x.shape[0] != 1:
        raise ValueError(f"sample_with_finals takes one image, x has batch {x.shape[0]}")
    if not 1 <= plan.step <= n_steps - 2:
        raise ValueError(f"the preview step g={plan.step} must lie in [1, {n_steps - 2}] for {n_steps} steps")
    if plan.finalists > suite.n_candidates:
        raise ValueError(f"finalists m={plan.finalists} exceeds the tournament's N={suite.n_candidates}")


def sample_with_finals(
    denoiser: Denoiser,
    sigmas: torch.Tensor,
    x: torch.Tensor,
    cond: Conditioning | None,
    param: Parametrisation | str,
    prompt: str,
    suite: AuditSuite,
    plan: FinalsPlan,
    sampler: str = "euler",
) -> LoopResult:
    """The plain run with a preview tournament at ``plan.step`` and a final tournament at the end.

    x is one image ``[1, C, h, w]``. Returns the chosen latent, two records (the preview tournament,
    never accepted, and the final one, accepted when a finalist wins), the extra costs and, when a
    finalist won, ``accepted_steps == [n − 1]``.
    """
    param = Parametrisation.parse(param)
    n_steps = sigmas.numel() - 1
    g, m = plan.step, plan.finalists
    _check_plan(x, n_steps, plan, suite)
    costs = Costs()
    records: list[TournamentRecord] = []
    held: dict = {}
    h, w = x.shape[-2:]
    scale = suite.schedule.scale(g, n_steps)
    sc = StepContext(
        g, n_steps, progress(g, n_steps), float(sigmas[g]), scale, view_factor(suite.decoder.factor, scale), (h, w)
    )

    def preview(i: int, xi: torch.Tensor, x0i: torch.Tensor) -> None:
        if i != g:
            return None
        view = decode_view(suite, x0i, sc, costs)
        region = Region.from_mask(torch.ones_like(view[:, :1]), score=1.0)
        rc = Costs()
        lat_mask = pixel_to_latent(region.mask.to(x.dtype), sc.factor, "max")
        state = policy_state(suite, sc, view, region, lat_mask, prompt, rc)
        pseed = policy_seed(suite.seed, g, 0, 0)
        actions, logp = draw_actions(suite, state, pseed)
        ctx = EditContext(CountingDenoiser(denoiser, rc), param, sigmas, g, xi, x0i, cond, None, prompt)
        res = suite.editor(ctx, lat_mask, actions)
        if res.costs is not None:
            rc.add(res.costs)
        scores, judged = score_candidates(suite, sc, view, region, res, prompt, rc)
        keep = top_finalists(scores.S[1:], m)
        u = torch.zeros(len(scores), dtype=torch.float64)
        decision = GuardDecision(0, False, u, float(getattr(suite.guard, "delta", 0.0)), [], 0.0)
        costs.add(rc)
        rec = make_record(sc, 0, 0, region, lat_mask, state, actions, logp, pseed, scores, decision, 1.0, rc)
        rec.region["finalists"] = [k + 1 for k in keep]
        records.append(rec)
        if suite.on_tournament is not None:
            suite.on_tournament(rec, judged)
        idx = torch.tensor(keep)
        held.update(x=res.latents[idx], x0=res.x0[idx], actions=[actions[k] for k in keep], logp=logp[idx], seed=pseed)
        held.update(region=region, lat_mask=lat_mask, state=state, preview_S=scores.S.double(), keep=keep)
        return None  # the control trajectory goes on untouched: it stays the plain run

    control = sample(denoiser, sigmas, x, cond, param, sampler, preview)
    if not held:  # cannot happen for 1 <= g <= n - 2; kept as a guard against a changed sampler
        raise RuntimeError(f"the preview step {g} was never reached")
    interrupt.check()
    rc = Costs()
    fin = finish_from(
        CountingDenoiser(denoiser, rc), sigmas, g, held["x"], held["x0"], _batched(cond, m), param, sampler
    )
    sc_end = StepContext(
        n_steps - 1, n_steps, 1.0, float(sigmas[-1]), 1.0, view_factor(suite.decoder.factor, 1.0), (h, w)
    )
    images = torch.cat([suite.decoder(control, 1.0), suite.decoder(fin, 1.0)])
    rc.decode_calls += 2
    rc.decoded_images += 1 + m
    scores = suite.auditor.score(images, prompt, torch.ones_like(images[:1, :1]))  # the whole image
    rc.auditor_calls += 1
    rc.auditor_images += 1 + m
    if len(scores) != m + 1:
        raise ValueError(f"the auditor returned {len(scores)} rows for a final tournament of {m + 1}")
    decision = suite.guard.select(scores, 1.0)
    if plan.preview_win:
        decision = _two_looks(decision, held["preview_S"], keep_order=held["keep"])
    costs.add(rc)
    pseed = held["seed"]
    final = make_record(
        sc_end,
        0,
        0,
        held["region"],
        held["lat_mask"],
        held["state"],
        held["actions"],
        held["logp"],
        pseed,
        scores,
        decision,
        1.0,
        rc,
    )
    final.region["finals_of"] = records[0].region["finalists"]
    records.append(final)
    if suite.on_tournament is not None:
        suite.on_tournament(final, images)
    if decision.accepted:
        return LoopResult(fin[decision.winner - 1 : decision.winner], records, costs, [n_steps - 1])
    return LoopResult(control, records, costs, [])
