"""The small protocols the TiPAI loop takes (DESIGN.md, "The boundary that keeps the core testable").

Whoever calls the loop supplies these objects: the ComfyUI glue adapts the model, VAE and
nodes to them; the core's tests supply the analytic ones (``analytic.py``, ``synthetic.py``).
They are structural (``typing.Protocol``): no base class to inherit.

Shapes: latents are ``[B, C, h, w]``; audit views are RGB ``[B, 3, H, W]`` in [0, 1] with
``H = f·h`` where ``f`` is the decoder's VAE factor times the audit scale.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

import torch

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .actions import Action, PolicyState
    from .diffusion import Conditioning
    from .editor import EditContext, EditResult
    from .guard import GuardDecision
    from .regions import Region
    from .scores import AuditScores


@runtime_checkable
class Denoiser(Protocol):
    """x0 prediction D(x, σ, cond) of a noisy latent.

    ``x`` lives in the model's sigma space (see ``diffusion.Parametrisation``); ``sigma`` is a
    0-d tensor or one value per batch row. ``cond`` carries CFG as a per-pixel scale map, so the
    guidance inside a mask can differ from the guidance outside it.
    """

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: "Conditioning | None") -> torch.Tensor: ...


@runtime_checkable
class AuditDecoder(Protocol):
    """Latent (or a crop of it) -> RGB in [0, 1] at ``factor · scale`` pixels per latent pixel.

    ``factor`` is the VAE factor (8 for SD). ``scale`` is the audit resolution of this step
    (coarse early, fine late); ``factor · scale`` must be a whole number.
    """

    factor: int

    def __call__(self, latent: torch.Tensor, scale: float = 1.0) -> torch.Tensor: ...


@runtime_checkable
class Miner(Protocol):
    """Suspect regions of one audit view ``image [1, 3, H, W]``, best first (at most its K)."""

    def __call__(
        self, image: torch.Tensor, prompt: str, user_mask: torch.Tensor | None = None
    ) -> "list[Region]": ...


@runtime_checkable
class Auditor(Protocol):
    """A_s: scores a tournament in one batched call. Index 0 is the unedited control C_0.

    ``images [B, 3, H, W]`` in [0, 1]; ``mask [1 or B, 1, H, W]`` is the region, or None for a
    global audit. Returns S, S_R, F ``[B]``, P ``[B, C]``, B ``[B]`` (``scores.AuditScores``).
    """

    def score(self, images: torch.Tensor, prompt: str, mask: torch.Tensor | None = None) -> "AuditScores": ...


@runtime_checkable
class Editor(Protocol):
    """A_g: N candidates for one region, in one batch, each equal to the control outside its mask."""

    def __call__(self, ctx: "EditContext", region_mask: torch.Tensor, actions: "Sequence[Action]") -> "EditResult": ...


@runtime_checkable
class Policy(Protocol):
    """π: draws N actions for a tournament and returns their log-probabilities ``[N]``."""

    def propose(
        self, state: "PolicyState", n: int, generator: torch.Generator
    ) -> "tuple[list[Action], torch.Tensor]": ...


@runtime_checkable
class Guard(Protocol):
    """Computes u_0..u_N and picks the winner (0 = keep the control) at sampling progress t."""

    def select(self, scores: "AuditScores", t: float) -> "GuardDecision": ...
