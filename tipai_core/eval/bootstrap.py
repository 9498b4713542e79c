"""Bootstrap intervals over prompts: what says who wins when one standard error is ~0.05.

``interval(values)`` resamples the prompts with replacement and returns the mean and the percentile
95% interval of the mean. ``paired(a, b)`` resamples the *same* prompts for both methods, so the
interval of the difference a − b keeps the pairing (both methods saw the same prompt and seed).
Fixed seeds: a rerun gives the same intervals.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

N_BOOT = 2000
LEVEL = 0.95


def _indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    if n < 1:
        raise ValueError("a bootstrap needs at least one value")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def interval(values: Sequence[float] | np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of the mean of ``values``, percentile interval at ``LEVEL``."""
    v = np.asarray(values, dtype=np.float64)
    means = v[_indices(len(v), n_boot, seed)].mean(axis=1)
    a = (1 - LEVEL) / 2
    return float(v.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def paired(a: Sequence[float], b: Sequence[float], n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float, float]:
    """(mean of a − b, low, high): the difference of two methods on the same prompts."""
    if len(a) != len(b):
        raise ValueError(f"paired values need the same prompts, got {len(a)} and {len(b)}")
    return interval(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), n_boot, seed)
