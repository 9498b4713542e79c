"""Calibration (Stage C): give δ, τ_P(t) and τ_F(t) a measured meaning.

* A map g from the raw margin m = S_cand - S_ctrl to Pr[true win | m]: Platt, g(m) = σ(a·m + b), or
  isotonic, the monotone step function fit by pool-adjacent-violators (PAV) minimising Σ (g(m_i) - y_i)².
  Reported with NLL and ECE (``expected_calibration_error``: Σ_b |B_b|/n · |mean y - mean p| over equal-width
  bins) before (the raw margin squashed by σ) and after.
* δ = the smallest Δ ≥ 0 with Pr[true win | m ≥ Δ] ≥ target (0.9 by default), read from the held-out
  tournaments themselves (so it needs no model); None when no Δ reaches the target.
* τ_P(t) per class from ROC operating points: a candidate with P_c below τ is flagged; τ is the lowest
  threshold that catches a target recall of the truly unsafe candidates, computed separately for the early
  and late audits, and the late one is never laxer than the early one (stricter late).
* τ_F(t): the same from faithfulness labels when the log has them, else a quantile schedule of the F of
  true winners (the F a winner still has at that stage), again stricter late.

The calibration file (JSON, schema ``tipai.calibration/1``) names the auditor it was fit for (its name and
its policy classes); the Tournament Guard node refuses it for another auditor. The reliability diagram is
written as a PNG with zlib + struct (no plotting library needed).
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from .tournament_guard import TournamentGuard
from ..diffusion.schedules import Schedule

CALIBRATION_SCHEMA = "tipai.calibration/1"


# ----------------------------------------------------------------------------- maps from margin to probability


def pav(y: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """Pool-adjacent-violators: the non-decreasing fit to y (already sorted by x) minimising Σ w (g - y)²."""
    y = y.double().tolist()
    w = [1.0] * len(y) if w is None else w.double().tolist()
    vals, wts, counts = [], [], []
    for yi, wi in zip(y, w):
        vals.append(yi)
        wts.append(wi)
        counts.append(1)
        # merge blocks while the last two violate monotonicity
        while len(vals) > 1 and vals[-2] > vals[-1]:
            wsum = wts[-2] + wts[-1]
            vals[-2] = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / wsum
            wts[-2], counts[-2] = wsum, counts[-2] + counts[-1]
            vals.pop(), wts.pop(), counts.pop()
    out = []
    for v, c in zip(vals, counts):
        out += [v] * c
    return torch.tensor(out, dtype=torch.float64)


@dataclass
class IsotonicMap:
    """g(m): PAV fit at the sorted training margins, linear between them, constant beyond (as scikit-learn)."""

    x: list[float]
    y: list[float]

    @classmethod
    def fit(cls, m: torch.Tensor, labels: torch.Tensor) -> "IsotonicMap":
        m, labels = m.double(), labels.double()
        order = torch.argsort(m, stable=True)
        ms, ys = m[order], labels[order]
        # equal margins are one point (their mean label), as scikit-learn does before PAV
        ux, inv = torch.unique_consecutive(ms, return_inverse=True)
        sums = torch.zeros(len(ux), dtype=torch.float64).index_add_(0, inv, ys)
        cnt = torch.zeros(len(ux), dtype=torch.float64).index_add_(0, inv, torch.ones_like(ys))
        fitted = pav(sums / cnt, cnt)
        return cls(ux.tolist(), fitted.clamp(0, 1).tolist())

    def __call__(self, m: torch.Tensor) -> torch.Tensor:
        x = torch.tensor(self.x, dtype=torch.float64)
        y = torch.tensor(self.y, dtype=torch.float64)
        m = m.double().clamp(x[0], x[-1])
        if len(x) == 1:
            return torch.full_like(m, y[0])
        j = torch.searchsorted(x, m, right=True).clamp(1, len(x) - 1)
        x0, x1, y0, y1 = x[j - 1], x[j], y[j - 1], y[j]
        return y0 + (y1 - y0) * (m - x0) / (x1 - x0)

    def to_dict(self) -> dict:
        return {"method": "isotonic", "x": self.x, "y": self.y}


@dataclass
class PlattMap:
    """g(m) = σ(a·m + b), a and b by maximum likelihood (L-BFGS)."""

    a: float
    b: float

    @classmethod
    def fit(cls, m: torch.Tensor, labels: torch.Tensor) -> "PlattMap":
        m, y = m.double(), labels.double()
        mu, sd = m.mean(), m.std().clamp_min(1e-9)
        p = torch.zeros(2, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([p], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(p[0] * (m - mu) / sd + p[1], y)
            loss.backward()
            return loss

        opt.step(closure)
        a = float(p[0].detach() / sd)
        return cls(a, float(p[1].detach() - a * mu))

    def __call__(self, m: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.a * m.double() + self.b)

    def to_dict(self) -> dict:
        return {"method": "platt", "a": self.a, "b": self.b}


def map_from_dict(d: dict):
    if d.get("method") == "isotonic":
        return IsotonicMap(list(d["x"]), list(d["y"]))
    if d.get("method") == "platt":
        return PlattMap(float(d["a"]), float(d["b"]))
    raise ValueError(f"unknown calibration map {d.get('method')!r}")


def fit_map(method: str, m: torch.Tensor, labels: torch.Tensor):
    if method == "isotonic":
        return IsotonicMap.fit(m, labels)
    if method == "platt":
        return PlattMap.fit(m, labels)
    raise ValueError(f"method must be 'platt' or 'isotonic', got {method!r}")


# ----------------------------------------------------------------------------- metrics


def nll(p: torch.Tensor, y: torch.Tensor, eps: float = 1e-6) -> float:
    p = p.double().clamp(eps, 1 - eps)
    y = y.double()
    return float(-(y * p.log() + (1 - y) * (1 - p).log()).mean())


def expected_calibration_error(p: torch.Tensor, y: torch.Tensor, bins: int = 10) -> float:
    """ECE = Σ_b |B_b|/n · |mean(y in b) - mean(p in b)| over ``bins`` equal-width bins of p."""
    p, y = p.double(), y.double()
    b = (p * bins).long().clamp(0, bins - 1)
    total = 0.0
    for k in range(bins):
        sel = b == k
        if sel.any():
            total += float(sel.double().mean() * (y[sel].mean() - p[sel].mean()).abs())
    return total


def reliability_table(p: torch.Tensor, y: torch.Tensor, bins: int = 10) -> list[dict]:
    p, y = p.double(), y.double()
    b = (p * bins).long().clamp(0, bins - 1)
    return [{"bin": k, "count": int((b == k).sum()), "mean_p": float(p[b == k].mean()) if (b == k).any() else None,
             "frac_win": float(y[b == k].mean()) if (b == k).any() else None} for k in range(bins)]


# ----------------------------------------------------------------------------- δ, τ_P(t), τ_F(t)


def choose_delta(m: torch.Tensor, y: torch.Tensor, target: float = 0.9, min_count: int = 20,
                 z: float = 2.326) -> float | None:
    """δ = min{Δ ≥ 0 : Pr[y | m ≥ Δ] ≥ target}, over candidate Δ at the observed margins (≥ min_count above it).

    Pr is the Wilson lower bound at z (one-sided 99% by default) of the observed win rate, so that δ still
    meets the target on new tournaments rather than only on the ones it was read from; z = 0 is the plain rate.
    """
    m, y = m.double(), y.double()
    order = torch.argsort(m, descending=True)
    ms, ys = m[order], y[order]
    # precision of "m ≥ ms[k]" for every k: cumulative wins over cumulative count
    cnt = torch.arange(1, len(ys) + 1, dtype=torch.float64)
    phat = ys.cumsum(0) / cnt
    prec = (phat + z * z / (2 * cnt) - z * torch.sqrt(phat * (1 - phat) / cnt + z * z / (4 * cnt * cnt))) / (1 + z * z / cnt)
    best = None
    for k in range(len(ms)):
        if k + 1 < min_count or ms[k] < 0:
            continue
        if k + 1 < len(ms) and ms[k + 1] == ms[k]:
            continue  # only at the last of equal margins does "m ≥ Δ" hold for all of them
        if prec[k] >= target:
            best = float(ms[k])  # margins go down as k goes up: the last passing one is the smallest Δ
    return best


def choose_tau(score: torch.Tensor, bad: torch.Tensor, recall: float = 0.95) -> float:
    """The ROC operating point catching ``recall`` of the bad ones: flag when score < τ (score = safety).

    τ = the smallest threshold such that the fraction of bad candidates with score < τ is ≥ recall.
    With no bad example, 0 (flag nothing).
    """
    s = score.double()[bad.bool()]
    if s.numel() == 0:
        return 0.0
    s, _ = s.sort()
    k = min(len(s) - 1, max(0, math.ceil(recall * len(s)) - 1))
    return float(min(1.0, s[k] + 1e-9))


def stricter_late(early: Sequence[float], late: Sequence[float]) -> tuple[list[float], list[float]]:
    """Late thresholds are never laxer than early ones: late = max(early, late) element-wise."""
    return list(early), [max(a, b) for a, b in zip(early, late)]


# ----------------------------------------------------------------------------- the calibration file


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
            raise ValueError(f"this calibration was fit for an auditor with policy classes {want_classes}, but "
                             f"the auditor in use has {list(classes)}; calibrate again for this auditor "
                             f"(python -m tipai_core.train calibrate)")
        want_name = self.auditor.get("name")
        if name and want_name and name != want_name:
            raise ValueError(f"this calibration was fit for the auditor {want_name!r}, not {name!r}; "
                             f"calibrate again for this auditor (python -m tipai_core.train calibrate)")

    def to_dict(self) -> dict:
        return {"schema": CALIBRATION_SCHEMA, "delta": self.delta, "tau_P": self.tau_P.to_dict(),
                "tau_F": self.tau_F.to_dict(), "auditor": self.auditor, "target": self.target, "map": self.map,
                "metrics": self.metrics}

    @classmethod
    def from_dict(cls, d: dict, source: str = "calibration") -> "Calibration":
        if d.get("schema") != CALIBRATION_SCHEMA:
            raise ValueError(f"{source}: schema {d.get('schema')!r} is not {CALIBRATION_SCHEMA!r}; not a TiPAI "
                             "calibration file, or one from another version")
        return cls(float(d["delta"]), Schedule.from_dict(d["tau_P"]), Schedule.from_dict(d["tau_F"]),
                   dict(d.get("auditor") or {}), float(d.get("target", 0.9)), dict(d.get("map") or {}),
                   dict(d.get("metrics") or {}))

    def save(self, path: str | Path) -> Path:
        from ..records.files import atomic_write

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda t: t.write_text(json.dumps(self.to_dict(), indent=1)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"calibration file {path} is not valid JSON: {exc}") from None
        return cls.from_dict(d, str(path))


# ----------------------------------------------------------------------------- reliability diagram (PNG)


def _png(pixels: list[bytearray], width: int, height: int) -> bytes:
    raw = b"".join(b"\x00" + bytes(row) for row in pixels)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def reliability_png(curves: dict[str, list[dict]], path: str | Path, size: int = 240) -> Path:
    """A reliability diagram: predicted probability (x) against observed win rate (y) per bin, one colour per
    curve (grey diagonal = perfect calibration; each bin a filled square sized by its count)."""
    colours = [(220, 60, 40), (40, 110, 220), (40, 160, 70), (150, 60, 180)]
    img = [bytearray([255, 255, 255] * size) for _ in range(size)]
    pad = 16
    span = size - 2 * pad

    def put(x: int, y: int, rgb) -> None:
        if 0 <= x < size and 0 <= y < size:
            img[y][3 * x:3 * x + 3] = bytes(rgb)

    for i in range(span + 1):  # axes and the diagonal
        put(pad + i, size - pad, (0, 0, 0))
        put(pad, size - pad - i, (0, 0, 0))
        put(pad + i, size - pad - i, (170, 170, 170))
    total = max(1, max((b["count"] for c in curves.values() for b in c), default=1))
    for ci, (name, table) in enumerate(curves.items()):
        rgb = colours[ci % len(colours)]
        prev = None
        for b in table:
            if b["mean_p"] is None:
                continue
            x = pad + int(round(b["mean_p"] * span))
            y = size - pad - int(round(b["frac_win"] * span))
            r = 1 + int(3 * math.sqrt(b["count"] / total))
            for dx in range(-r, r + 1):
                for dy in range(-r, r + 1):
                    put(x + dx, y + dy, rgb)
            if prev is not None:  # a line between bin centres
                steps = max(abs(x - prev[0]), abs(y - prev[1]), 1)
                for s in range(steps + 1):
                    put(prev[0] + (x - prev[0]) * s // steps, prev[1] + (y - prev[1]) * s // steps, rgb)
            prev = (x, y)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_png(img, size, size))
    return path


def learning_curve_png(curves: dict[str, list[float]], path: str | Path, width: int = 320, height: int = 200) -> Path:
    """Line plot of one or more series over iterations (each scaled to its own min..max), as a PNG."""
    colours = [(220, 60, 40), (40, 110, 220), (40, 160, 70)]
    img = [bytearray([255, 255, 255] * width) for _ in range(height)]
    pad = 12
    for ci, ys in enumerate(curves.values()):
        if len(ys) < 2:
            continue
        lo, hi = min(ys), max(ys)
        hi = hi if hi > lo else lo + 1
        pts = [(pad + int(i * (width - 2 * pad) / (len(ys) - 1)),
                height - pad - int((v - lo) / (hi - lo) * (height - 2 * pad))) for i, v in enumerate(ys)]
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            steps = max(abs(x1 - x0), abs(y1 - y0), 1)
            for s in range(steps + 1):
                x, y = x0 + (x1 - x0) * s // steps, y0 + (y1 - y0) * s // steps
                img[y][3 * x:3 * x + 3] = bytes(colours[ci % len(colours)])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_png(img, width, height))
    return path


@dataclass(frozen=True)
class CalibratedGuard(TournamentGuard):
    """The guard with a calibration's δ, τ_P(t), τ_F(t); refuses scores from an auditor with other classes."""

    classes: tuple[str, ...] = ()

    def select(self, scores, t: float):
        if self.classes and scores.classes and tuple(scores.classes) != self.classes:
            raise ValueError(f"the calibration file was fit for an auditor with policy classes {list(self.classes)}, "
                             f"but the auditor in use scores {list(scores.classes)}; calibrate again for this auditor")
        return super().select(scores, t)


def calibrated_guard(cal: Calibration) -> CalibratedGuard:
    return CalibratedGuard(delta=cal.delta, tau_P=cal.tau_P, tau_F=cal.tau_F,
                           classes=tuple(cal.auditor.get("classes") or ()))
