"""Sampling with audits: the plain sampler with ``audit_step`` as its step callback.

The same code as ``diffusion.sampler.sample``, plus a restart of step i from the edited x when an
edit is accepted; with nothing accepted the result is the plain sampler's, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..diffusion.conditioning import Conditioning
from ..diffusion.parametrisation import Parametrisation
from ..diffusion.sampler import sample
from ..protocols import Denoiser
from ..records.costs import Costs, restart_costs
from ..records.tournament_record import TournamentRecord
from .audit_step import AuditSuite, audit_step


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
            xi,
            x0i,
            i,
            sigmas,
            denoiser=denoiser,
            param=param,
            cond=cond,
            prompt=prompt,
            suite=suite,
            user_mask=user_mask,
            region_payload=region_payload,
            costs=costs,
        )
        records.extend(recs)
        if new_x is not None:
            accepted.append(i)
            costs.add(restart_costs(xi.shape[0]))  # sample() re-evaluates x̂0 at σ_i from the edited x
        return new_x

    latent = sample(denoiser, sigmas, x, cond, param, sampler, callback)
    return LoopResult(latent, records, costs, accepted)
