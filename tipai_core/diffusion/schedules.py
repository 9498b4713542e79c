"""Schedules over sampling progress t: α(t), τ_P(t), τ_F(t).

Convention: at step i of a schedule with n steps (``len(sigmas) - 1``), ``t = i / n``, so
t = 0 at the first (noisiest) step and t -> 1 at the end. A ``Schedule`` interpolates its knots
linearly in t and is constant beyond the first and last knot. Values may be vectors (τ_P(t) has
one threshold per policy class).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


def progress(i: int, n_steps: int) -> float:
    """t = i / n: sampling progress of step i."""
    if n_steps < 1 or not 0 <= i <= n_steps:
        raise ValueError(f"need 0 <= i <= n_steps and n_steps >= 1, got i={i}, n_steps={n_steps}")
    return i / n_steps


@dataclass(frozen=True)
class Schedule:
    """Piecewise-linear s(t) through ``(knots[j], values[j])``; knots strictly increasing."""

    knots: tuple[float, ...]
    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        # store plain floats / tuples of floats, so schedules compare, hash and serialise alike
        norm = tuple(
            tuple(float(u) for u in torch.as_tensor(v).reshape(-1).tolist()) if torch.as_tensor(v).dim() else float(v)
            for v in self.values
        )
        object.__setattr__(self, "values", norm)
        object.__setattr__(self, "knots", tuple(float(k) for k in self.knots))
        if len(self.knots) < 1 or len(self.knots) != len(self.values):
            raise ValueError("a Schedule needs as many values as knots, at least one")
        if any(b <= a for a, b in zip(self.knots, self.knots[1:])):
            raise ValueError(f"knots must be strictly increasing, got {self.knots}")
        shapes = {torch.as_tensor(v).shape for v in self.values}
        if len(shapes) != 1:
            raise ValueError("all values of a Schedule must have the same shape")

    @classmethod
    def constant(cls, value: float | Sequence[float]) -> "Schedule":
        return cls((0.0,), (value,))

    @classmethod
    def linear(cls, start: float | Sequence[float], end: float | Sequence[float]) -> "Schedule":
        return cls((0.0, 1.0), (start, end))

    def __call__(self, t: float) -> torch.Tensor:
        vals = torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in self.values])
        if t <= self.knots[0]:
            return vals[0]
        if t >= self.knots[-1]:
            return vals[-1]
        j = max(k for k in range(len(self.knots)) if self.knots[k] <= t)
        t0, t1 = self.knots[j], self.knots[j + 1]
        w = (t - t0) / (t1 - t0)
        return vals[j] + w * (vals[j + 1] - vals[j])

    def to_dict(self) -> dict:
        return {"knots": list(self.knots), "values": [list(v) if isinstance(v, tuple) else v for v in self.values]}

    @classmethod
    def from_dict(cls, d: dict) -> "Schedule":
        return cls(tuple(d["knots"]), tuple(d["values"]))
