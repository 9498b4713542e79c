"""The small protocols the TiPAI loop takes: the boundary that keeps the core testable without ComfyUI.

Whoever calls the loop supplies these objects: the ComfyUI glue adapts the model, VAE and
nodes to them; the core's tests supply the analytic ones (``analytic.py``, ``synthetic.py``).
They are structural (``typing.Protocol``): no base class to inherit. The records they speak
(``AuditScores``, ``EditContext``, ``EditResult``, ``GuardDecision``) live here too, so the interface
depends on no implementation.

Shapes: latents are ``[B, C, h, w]``; audit views are RGB ``[B, 3, H, W]`` in [0, 1] with
``H = f·h`` where ``f`` is the decoder's VAE factor times the audit scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from .diffusion.conditioning import Conditioning
from .diffusion.parametrisation import Parametrisation

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .mining.regions import Region
    from .policy.actions import Action, PolicyState


# --- the records the protocols speak ---------------------------------------------------------


@dataclass
class AuditScores:
    """The auditor's answer for one tournament; index 0 of the batch is the unedited control C_0.

    Symbols (TiPAI paper):
        S   global image–text score S(p, I)           shape [B]
        S_R patch score S_R(p, I_R) on the region     shape [B]
        F   faithfulness                               shape [B]
        P   policy safety per class, P = 1 - risk      shape [B, C]
        B   seam quality exp(-κ · LPIPS on a ring)     shape [B]
    """

    S: torch.Tensor
    S_R: torch.Tensor
    F: torch.Tensor
    P: torch.Tensor
    B: torch.Tensor
    classes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        n = self.S.shape[0]
        for name in ("S_R", "F", "B"):
            t = getattr(self, name)
            if t.shape != (n,):
                raise ValueError(f"AuditScores.{name} must have shape ({n},), got {tuple(t.shape)}")
        if self.P.dim() != 2 or self.P.shape[0] != n:
            raise ValueError(f"AuditScores.P must have shape ({n}, C), got {tuple(self.P.shape)}")
        if self.classes and len(self.classes) != self.P.shape[1]:
            raise ValueError(f"AuditScores.classes names {len(self.classes)} classes but P has {self.P.shape[1]}")

    def __len__(self) -> int:
        return int(self.S.shape[0])


@dataclass(frozen=True)
class EditContext:
    """The control state the editor starts from: x at ``sigmas[step]`` and its x̂0 (batch 1)."""

    denoiser: Denoiser
    param: Parametrisation
    sigmas: torch.Tensor
    step: int
    x: torch.Tensor
    x0: torch.Tensor
    cond: Conditioning | None
    region_payload: Any = None
    prompt: str = ""  # the text the auditor judges (what the referee editor optimises towards)


@dataclass(frozen=True)
class EditResult:
    latents: torch.Tensor  # [N, C, h, w] candidates at σ_i, equal to the control where masks == 0
    x0: torch.Tensor  # [N, C, h, w] their x̂0 at σ_i (the audit view)
    masks: torch.Tensor  # [N, 1, h, w] soft blend masks m_n
    costs: Any = None  # records.Costs the editor spent besides denoiser calls (the referee's auditor passes)


@dataclass(frozen=True)
class GuardDecision:
    winner: int  # 0 = control kept
    accepted: bool
    utilities: torch.Tensor  # [N+1] float64
    delta: float
    tau_P: list[float]
    tau_F: float


# --- the protocols -------------------------------------------------------------------------------


@runtime_checkable
class Denoiser(Protocol):
    """x0 prediction D(x, σ, cond) of a noisy latent.

    ``x`` lives in the model's sigma space (see ``diffusion.Parametrisation``); ``sigma`` is a
    0-d tensor or one value per batch row. ``cond`` carries CFG as a per-pixel scale map, so the
    guidance inside a mask can differ from the guidance outside it.
    """

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning | None) -> torch.Tensor: ...


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

    def __call__(self, image: torch.Tensor, prompt: str, user_mask: torch.Tensor | None = None) -> "list[Region]": ...


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
