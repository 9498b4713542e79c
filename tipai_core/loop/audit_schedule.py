"""The audit schedule: which steps are audited, and at which resolution (coarse early, fine late).

Step i of n is audited when ``first <= i <= n - 1 - skip_last`` and ``(i - first) % every == 0``.
The audit scale (decode resolution relative to the VAE's full size) grows with progress
t = i / n: ``scales[j]`` is used on the j-th equal slice of t ∈ [0, 1), so early audits are
coarse (cheap latent-to-RGB or a downscaled decode) and late audits are fine.

``global_until`` makes the coarsest scale spatial too: an audited step i < global_until holds one
tournament over the whole image (no miner), whose candidates re-noise whole trajectories; later
audits repair the mined regions locally.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..diffusion.schedules import progress

MAX_SCALE = 4.0  # an audit view at most 4x the decoder's resolution: memory grows with scale²


@dataclass(frozen=True)
class AuditSchedule:
    every: int = 3
    first: int = 1
    skip_last: int = 1
    scales: tuple[float, ...] = (0.5, 1.0)
    global_until: int = 0

    def __post_init__(self) -> None:
        if self.global_until < 0:
            raise ValueError(f"global_until must be >= 0, got {self.global_until}")
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        if self.first < 0 or self.skip_last < 0:
            raise ValueError(f"first and skip_last must be >= 0, got {self.first}, {self.skip_last}")
        if not self.scales or any(not 0 < s <= MAX_SCALE for s in self.scales):
            raise ValueError(f"scales must lie in (0, {MAX_SCALE}], got {self.scales}")
        if any(b < a for a, b in zip(self.scales, self.scales[1:])):
            raise ValueError(f"scales must not decrease (coarse early, fine late), got {self.scales}")

    def is_audited(self, i: int, n_steps: int) -> bool:
        if not self.first <= i <= n_steps - 1 - self.skip_last:
            return False
        return (i - self.first) % self.every == 0

    def is_global(self, i: int) -> bool:
        """An audit at step i holds one whole-image tournament instead of the miner's regions."""
        return i < self.global_until

    def steps(self, n_steps: int) -> list[int]:
        return [i for i in range(n_steps) if self.is_audited(i, n_steps)]

    def scale(self, i: int, n_steps: int) -> float:
        t = progress(i, n_steps)
        j = min(int(t * len(self.scales)), len(self.scales) - 1)
        return self.scales[j]

    def to_dict(self) -> dict:
        return {
            "every": self.every,
            "first": self.first,
            "skip_last": self.skip_last,
            "scales": list(self.scales),
            "global_until": self.global_until,
        }
