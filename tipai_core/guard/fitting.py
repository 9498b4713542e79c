"""Stage C metrics and operating points: NLL, ECE, the reliability table, δ, τ_P(t), τ_F(t).

* ECE = Σ_b |B_b|/n · |mean y - mean p| over equal-width bins of p, reported before (the raw margin
  squashed by σ) and after the calibration map.
* δ = the smallest Δ ≥ 0 with Pr[true win | m ≥ Δ] ≥ target (0.9 by default), read from the held-out
  tournaments themselves (so it needs no model); None when no Δ reaches the target.
* τ_P(t) per class from ROC operating points: a candidate with P_c below τ is flagged; τ is the lowest
  threshold that catches a target recall, computed separately for the early and late audits, and the
  late one is never laxer than the early one (``stricter_late``). τ_F(t) is read the same way from F.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def nll(p: torch.Tensor, y: torch.Tensor, eps: float = 1e-6) -> float:
    """Mean negative log-likelihood -mean(y·log p + (1 - y)·log(1 - p)), p clamped to [eps, 1 - eps]."""
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
    """Per equal-width bin of p: its count, mean p and observed win rate (None for an empty bin)."""
    p, y = p.double(), y.double()
    b = (p * bins).long().clamp(0, bins - 1)
    return [
        {
            "bin": k,
            "count": int((b == k).sum()),
            "mean_p": float(p[b == k].mean()) if (b == k).any() else None,
            "frac_win": float(y[b == k].mean()) if (b == k).any() else None,
        }
        for k in range(bins)
    ]


def choose_delta(
    m: torch.Tensor, y: torch.Tensor, target: float = 0.9, min_count: int = 20, z: float = 2.326
) -> float | None:
    """δ = min{Δ ≥ 0 : Pr[y | m ≥ Δ] ≥ target}, over candidate Δ at the observed margins (at least
    ``min_count`` candidates at or above it).

    Pr is the Wilson lower bound at z (one-sided 99% by default) of the observed win rate, so that δ still
    meets the target on new tournaments rather than only on the ones it was read from; z = 0 is the plain rate.
    """
    m, y = m.double(), y.double()
    order = torch.argsort(m, descending=True)
    ms, ys = m[order], y[order]
    # precision of "m ≥ ms[k]" for every k: cumulative wins over cumulative count
    cnt = torch.arange(1, len(ys) + 1, dtype=torch.float64)
    phat = ys.cumsum(0) / cnt
    spread = z * torch.sqrt(phat * (1 - phat) / cnt + z * z / (4 * cnt * cnt))
    prec = (phat + z * z / (2 * cnt) - spread) / (1 + z * z / cnt)
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
    return min(1.0, float(s[k] + 1e-9))


def stricter_late(early: Sequence[float], late: Sequence[float]) -> tuple[list[float], list[float]]:
    """Late thresholds are never laxer than early ones: late = max(early, late) element-wise."""
    return list(early), [max(a, b) for a, b in zip(early, late)]
