"""Coarse scales early, fine scales late: one policy for the early audits and another for the late ones.

The design's schedule in policy form. ``CoarseToFinePolicy(coarse, fine, until_step)`` draws from
``coarse`` at audits of step < ``until_step`` (typically global candidates that re-noise the whole
trajectory) and from ``fine`` afterwards (local repairs). Its log-prob is the drawing policy's, so
TSPO's records stay exact; a learned ``PolicyNet`` with the ``scope`` knob can replace the pair and
learn the switch from the state's t.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..policy.actions import Action, PolicyState


@dataclass(frozen=True)
class CoarseToFinePolicy:
    coarse: Any  # protocols.Policy
    fine: Any
    until_step: int

    def __post_init__(self) -> None:
        if self.until_step < 0:
            raise ValueError(f"until_step must be >= 0, got {self.until_step}")

    @property
    def wants_control_scores(self) -> bool:
        return any(getattr(p, "wants_control_scores", False) for p in (self.coarse, self.fine))

    def _at(self, state: PolicyState):
        return self.coarse if state.step < self.until_step else self.fine

    def propose(self, state: PolicyState, n: int, generator: torch.Generator) -> tuple[list[Action], torch.Tensor]:
        return self._at(state).propose(state, n, generator)

    def log_prob(self, action: Action, state: PolicyState) -> float:
        return float(self._at(state).log_prob(action, state))
