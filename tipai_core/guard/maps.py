"""Maps g from the raw margin m = S_cand - S_ctrl to Pr[true win | m] (Stage C).

* Platt: g(m) = σ(a·m + b), a and b by maximum likelihood.
* Isotonic: the non-decreasing step function fit by pool-adjacent-violators (PAV), minimising
  Σ_i (g(m_i) - y_i)², linear between the fitted margins and constant beyond them.

Both serialise to a small dict (``to_dict``) that the calibration file keeps under "map".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def pav(y: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """Pool-adjacent-violators: the non-decreasing fit to y (already sorted by x) minimising Σ w (g - y)²."""
    ys = y.double().tolist()
    ws = [1.0] * len(ys) if w is None else w.double().tolist()
    vals: list[float] = []
    wts: list[float] = []
    counts: list[int] = []
    for yi, wi in zip(ys, ws):
        vals.append(yi)
        wts.append(wi)
        counts.append(1)
        # merge blocks while the last two violate monotonicity
        while len(vals) > 1 and vals[-2] > vals[-1]:
            wsum = wts[-2] + wts[-1]
            vals[-2] = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / wsum
            wts[-2], counts[-2] = wsum, counts[-2] + counts[-1]
            vals.pop(), wts.pop(), counts.pop()
    out: list[float] = []
    for v, c in zip(vals, counts):
        out += [v] * c
    return torch.tensor(out, dtype=torch.float64)


@dataclass
class IsotonicMap:
    """g(m): PAV fit at the sorted training margins, linear between them, constant beyond (as scikit-learn)."""

    x: list[float]
    y: list[float]

    @classmethod
    def fit(cls, m: torch.Tensor, labels: torch.Tensor) -> IsotonicMap:
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
            return torch.full_like(m, float(y[0]))
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
    def fit(cls, m: torch.Tensor, labels: torch.Tensor) -> PlattMap:
        m, y = m.double(), labels.double()
        # fit on standardised margins (better conditioned), then fold the scaling back into a and b
        mu, sd = m.mean(), m.std().clamp_min(1e-9)
        p = torch.zeros(2, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([p], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
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


MarginMap = IsotonicMap | PlattMap


def map_from_dict(d: dict) -> MarginMap:
    """The map a calibration file's "map" entry describes."""
    if d.get("method") == "isotonic":
        return IsotonicMap(list(d["x"]), list(d["y"]))
    if d.get("method") == "platt":
        return PlattMap(float(d["a"]), float(d["b"]))
    raise ValueError(f"unknown calibration map {d.get('method')!r}")


def fit_map(method: str, m: torch.Tensor, labels: torch.Tensor) -> MarginMap:
    """Fit the ``method`` ("platt" or "isotonic") map from margins ``m`` to the 0/1 ``labels``."""
    if method == "isotonic":
        return IsotonicMap.fit(m, labels)
    if method == "platt":
        return PlattMap.fit(m, labels)
    raise ValueError(f"method must be 'platt' or 'isotonic', got {method!r}")
