"""The calibration file (JSON, schema ``tipai.calibration/1``): what Stage C hands the Tournament Guard.

It holds δ, τ_P(t), τ_F(t), the margin map and its metrics, and names the auditor it was fit for (its
name and its policy classes); the Tournament Guard node refuses it for another auditor.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..diffusion.schedules import Schedule
from ..records.files import atomic_write
from .tournament_guard import TournamentGuard

CALIBRATION_SCHEMA = "tipai.calibration/1"


@dataclass
class Calibration:
    """What the Tournament Guard loads: δ, τ_P(t), τ_F(t), the margin map and the auditor it belongs to."""

    delta: float
    tau_P: Schedule
    tau_F: Schedule
    auditor: dict  # {"name": str | None, "classes": [...]}
    target: float = 0.9
    map: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    def guard(self) -> TournamentGuard:
        return TournamentGuard(delta=self.delta, tau_P=self.tau_P, tau_F=self.tau_F)

    def check_auditor(self, name: str | None, classes: Sequence[str] | None) -> None:
        """Raise ValueError when the calibration was fit for another auditor (other classes or name)."""
        want_classes = list(self.auditor.get("classes") or [])
        if classes is not None and want_classes and list(classes) != want_classes:
            raise ValueError(
                f"this calibration was fit for an auditor with policy classes {want_classes}, but "
                f"the auditor in use has {list(classes)}; calibrate again for this auditor "
                f"(python -m tipai_core.train calibrate)"
            )
        want_name = self.auditor.get("name")
        if name and want_name and name != want_name:
            raise ValueError(
                f"this calibration was fit for the auditor {want_name!r}, not {name!r}; "
                f"calibrate again for this auditor (python -m tipai_core.train calibrate)"
            )

    def to_dict(self) -> dict:
        return {
            "schema": CALIBRATION_SCHEMA,
            "delta": self.delta,
            "tau_P": self.tau_P.to_dict(),
            "tau_F": self.tau_F.to_dict(),
            "auditor": self.auditor,
            "target": self.target,
            "map": self.map,
            "metrics": self.metrics,
        }

    @classmethod
    def from_dict(cls, d: dict, source: str = "calibration") -> Calibration:
        if d.get("schema") != CALIBRATION_SCHEMA:
            raise ValueError(
                f"{source}: schema {d.get('schema')!r} is not {CALIBRATION_SCHEMA!r}; not a TiPAI "
                "calibration file, or one from another version"
            )
        return cls(
            float(d["delta"]),
            Schedule.from_dict(d["tau_P"]),
            Schedule.from_dict(d["tau_F"]),
            dict(d.get("auditor") or {}),
            float(d.get("target", 0.9)),
            dict(d.get("map") or {}),
            dict(d.get("metrics") or {}),
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda t: t.write_text(json.dumps(self.to_dict(), indent=1)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"calibration file {path} is not valid JSON: {exc}") from None
        return cls.from_dict(d, str(path))
