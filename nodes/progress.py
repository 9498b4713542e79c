"""One progress bar per TiPAI run that only moves forward.

ComfyUI shows one bar per node, fed by every ``ProgressBar`` update sent while the node runs. A
TiPAI run has two sources: the sampler's own step callback (``latent_preview``'s bar, which also
carries the preview image) and the tournaments' extra model calls. If each kept its own count the
bar would jump back at every audit. So the run plans its whole total up front,

    total = steps + Σ_audited-steps reserve(step),   reserve = the most model calls an audit can make,

and maps both sources onto it: step s sampled counts ``s + 1`` plus the reserves of the audits
before s; an audit at s counts its calls so far (up to its reserve) on top of that, and ends at
its full reserve however few calls it made. Every value sent is at least the last one sent, so a
restart after an accepted edit (which replays step s) never moves the bar back.
"""

from __future__ import annotations

from collections.abc import Callable


class RunProgress:
    """``send(value, total)`` is given a non-decreasing value and one fixed total for the whole run."""

    def __init__(self, n_steps: int, reserves: dict[int, int], send: Callable[[int, int], None] | None = None):
        if n_steps < 0 or any(r < 0 for r in reserves.values()):
            raise ValueError("steps and reserves must be >= 0")
        self.n_steps = int(n_steps)
        self.reserves = {int(s): int(r) for s, r in reserves.items() if 0 <= s < n_steps}
        self.total = max(1, self.n_steps + sum(self.reserves.values()))
        self.sent = 0
        self._send = send

    def _before(self, step: int) -> int:
        return sum(r for s, r in self.reserves.items() if s < step)

    def _forward(self, value: int) -> int:
        self.sent = max(self.sent, min(int(value), self.total))
        return self.sent

    def at_step(self, step: int) -> int:
        """The value once sampling step ``step`` is done (what the sampler's own callback shows)."""
        return self._forward(step + 1 + self._before(step))

    def in_audit(self, step: int, calls: int) -> None:
        """An audit at ``step`` has made ``calls`` model calls: show them, within its reserve."""
        reserve = self.reserves.get(step, 0)
        self._report(step + 1 + self._before(step) + min(max(0, calls), reserve))

    def audit_done(self, step: int) -> None:
        self._report(step + 1 + self._before(step) + self.reserves.get(step, 0))

    def _report(self, value: int) -> None:
        before = self.sent
        self._forward(value)
        if self._send is not None and self.sent != before:
            self._send(self.sent, self.total)
