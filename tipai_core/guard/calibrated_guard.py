"""The Tournament Guard with a calibration file's δ, τ_P(t), τ_F(t), tied to the auditor it was fit for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..protocols import AuditScores, GuardDecision
from .tournament_guard import TournamentGuard

if TYPE_CHECKING:
    from .calibration_file import Calibration


@dataclass(frozen=True)
class CalibratedGuard(TournamentGuard):
    """The guard with a calibration's δ, τ_P(t), τ_F(t); refuses scores from an auditor with other classes."""

    classes: tuple[str, ...] = ()

    def select(self, scores: AuditScores, t: float) -> GuardDecision:
        # thresholds per class mean nothing for another auditor's classes: refuse rather than guard wrongly
        if self.classes and scores.classes and tuple(scores.classes) != self.classes:
            raise ValueError(
                f"the calibration file was fit for an auditor with policy classes {list(self.classes)}, "
                f"but the auditor in use scores {list(scores.classes)}; calibrate again for this auditor"
            )
        return super().select(scores, t)


def calibrated_guard(cal: Calibration) -> CalibratedGuard:
    """The guard a calibration file describes, bound to its auditor's policy classes."""
    return CalibratedGuard(
        delta=cal.delta, tau_P=cal.tau_P, tau_F=cal.tau_F, classes=tuple(cal.auditor.get("classes") or ())
    )
