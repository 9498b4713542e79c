"""The guard: the guarded margin utility u_i, and select/accept (step 6 of the loop; docs/architecture.md).

    u_i = (S_i - S_0 - δ)_+ · 1[P_i ≥ τ_P(t)] · 1[F_i ≥ τ_F(t)] · B_i

S global score, F faithfulness, P policy safety per class (``1[P_i ≥ τ_P(t)]`` means every
class passes its own threshold), B seam quality, δ ≥ 0 the calibrated margin, τ_P(t) and τ_F(t)
schedules over sampling progress t. Index 0 is the control C_0, whose utility is 0. The guard
picks ``i* = argmax_{i ≥ 1} u_i`` and accepts it only if ``u_{i*} > 0``; otherwise it keeps the
control. So an accepted candidate has ``S ≥ S_0 + δ`` and passes every threshold (the margin is
tested as a comparison too, so rounding cannot break the promise). Computed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..diffusion.schedules import Schedule
from ..protocols import AuditScores, GuardDecision


def guarded_utility(
    scores: AuditScores, delta: float, tau_P: torch.Tensor | float, tau_F: torch.Tensor | float
) -> torch.Tensor:
    """u ``[N+1]`` (float64) for a tournament whose index 0 is the control."""
    if not delta >= 0:
        raise ValueError(f"delta must be >= 0, got {delta}")
    S = scores.S.double()
    P, F, B = scores.P.double(), scores.F.double(), scores.B.double()
    tau_P = torch.as_tensor(tau_P, dtype=torch.float64).to(P.device)
    if tau_P.dim() == 1 and tau_P.numel() not in (1, P.shape[1]):
        raise ValueError(f"tau_P has {tau_P.numel()} thresholds but P has {P.shape[1]} classes")
    for name, t in (("S", S), ("P", P), ("F", F), ("B", B)):
        if torch.isnan(t).any():
            raise ValueError(f"scores.{name} contains NaN")
    s0 = S[0]
    margin_ok = s0 + delta <= S
    gain = torch.where(margin_ok, S - s0 - delta, torch.zeros_like(S)).clamp_min(0.0)
    passes = (tau_P <= P).all(dim=1) & (float(tau_F) <= F)
    u = gain * passes.double() * B.clamp_min(0.0)
    u[0] = 0.0  # the control never beats itself
    return u


@dataclass(frozen=True)
class TournamentGuard:
    """δ, τ_P(t) (per class, or one value for all), τ_F(t); ``select`` implements ``protocols.Guard``."""

    delta: float = 0.0
    tau_P: Schedule = Schedule.constant(0.0)
    tau_F: Schedule = Schedule.constant(0.0)

    def __post_init__(self) -> None:
        if not self.delta >= 0:
            raise ValueError(f"delta must be >= 0, got {self.delta}")

    def select(self, scores: AuditScores, t: float) -> GuardDecision:
        if len(scores) < 2:
            raise ValueError(f"a tournament needs the control and N >= 1 candidates, got {len(scores)} rows")
        tp, tf = self.tau_P(t), float(self.tau_F(t))
        u = guarded_utility(scores, self.delta, tp, tf)
        best = 1 + int(torch.argmax(u[1:]))
        accepted = bool(u[best] > 0)
        tp_list = tp.reshape(-1).tolist()
        return GuardDecision(best if accepted else 0, accepted, u, float(self.delta), tp_list, tf)

    def to_dict(self) -> dict:
        return {"delta": self.delta, "tau_P": self.tau_P.to_dict(), "tau_F": self.tau_F.to_dict()}


@dataclass(frozen=True)
class ObservingGuard:
    """The inner guard's utilities, logged as usual, but never an acceptance: for a sampler whose
    current latent cannot be restarted from exactly, the audit runs and the latent stays the control's."""

    inner: TournamentGuard
    reason: str = ""

    def select(self, scores: AuditScores, t: float) -> GuardDecision:
        d = self.inner.select(scores, t)
        return GuardDecision(0, False, d.utilities, d.delta, d.tau_P, d.tau_F)
