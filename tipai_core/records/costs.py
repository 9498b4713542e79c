"""Cost accounting: extra denoiser evaluations, decodes and auditor calls of the audits.

The cost of one audited step is ``O(K · (N·C_Ag + C_As + d·C_inv))`` (the TiPAI design). Counted exactly,
with the ``DiffusionEditor`` and K regions that each hold N candidates of the same (editor, d):

    denoiser calls  = K · (d·(1 + r)·[invert] + d + 1)      r = refine_iters
    denoiser evals  = N · denoiser calls                     (batch rows)
    decode calls    = 1 + K                                  (the control view, then one batched crop decode per region)
    decoded images  = 1 + K·N
    auditor calls   = K,  auditor images = K·(N + 1)

and the loop adds one denoiser call (batch 1) at each step where an edit was accepted, because
sampling restarts from the edited x at σ_i. The control's own x̂0 is free (the sampler made it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch


@dataclass
class Costs:
    denoiser_calls: int = 0
    denoiser_evals: int = 0
    decode_calls: int = 0
    decoded_images: int = 0
    auditor_calls: int = 0
    auditor_images: int = 0
    editor_calls: int = 0  # forwards of a learned editor's network (each on a batch of candidates)
    editor_images: int = 0  # the candidate rows of those forwards

    def __add__(self, other: "Costs") -> "Costs":
        return Costs(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def add(self, other: "Costs") -> "Costs":
        """In-place sum; returns self."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Costs":
        return cls(**{f.name: int(d.get(f.name, 0)) for f in fields(cls)})  # logs from before a field read 0


def editor_calls(editor: str, d: int, refine_iters: int = 0) -> int:
    """Denoiser calls for one (editor, d) group: ``d·(1 + r)·[invert] + d + 1`` for the diffusion editor;
    1 for the learned editor (its audit call: its own network's forwards are ``Costs.editor_calls``)."""
    if editor == "learned":
        return 1
    return (d * (1 + refine_iters) if editor == "invert" else 0) + d + 1


def restart_costs(batch: int) -> Costs:
    """An accepted edit restarts sampling at σ_i from the edited x: one more call over the batch."""
    return Costs(denoiser_calls=1, denoiser_evals=int(batch))


def expected_step_costs(k: int, n: int, d: int, editor: str = "invert", refine_iters: int = 0) -> Costs:
    """The formula above for one audited step with K regions (nothing accepted)."""
    calls = k * editor_calls(editor, d, refine_iters)
    return Costs(
        denoiser_calls=calls,
        denoiser_evals=n * calls,
        decode_calls=1 + k,
        decoded_images=1 + k * n,
        auditor_calls=k,
        auditor_images=k * (n + 1),
    )


class CountingDenoiser:
    """Wraps a Denoiser and adds each call (and its batch rows) to ``costs``."""

    def __init__(self, inner, costs: Costs):
        self.inner, self.costs = inner, costs

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond) -> torch.Tensor:
        self.costs.denoiser_calls += 1
        self.costs.denoiser_evals += int(x.shape[0])
        return self.inner(x, sigma, cond)
