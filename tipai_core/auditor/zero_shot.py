"""Zero-shot auditing: the policy classes, their texts, and the untrained score formulas.

With no trained heads the auditor scores with the backbone alone (s = CLIP temperature):

    S(p, I)    = s · ⟨e_I, e_t⟩                               scaled image–text cosine (the CLIP logit)
    S_R(p, I_R)= s · Σ_j w_j ⟨z_j, e_t⟩ / Σ_j w_j              patch tokens z_j weighted by region coverage w_j
    F          = clip(2.5 · ⟨e_I, e_t⟩, 0, 1)                  CLIPScore (Hessel et al. 2021) read as a [0,1] score
    risk_c(x)  = σ(s · ⟨x, t_c − t̄_0⟩)                        x = e_I (image) or z_j (patch → risk map r_c)
    P_c        = 1 − risk_c(e_I)

t_c is the unit mean of the class's prompt embeddings and t̄_0 the unit mean of neutral prompts: each
class is a binary contrast "this class vs an ordinary image". These formulas are exactly the trained
heads at initialisation (heads.py), so training starts from the zero-shot auditor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

CLIPSCORE_WEIGHT = 2.5

DEFAULT_POLICY_PROMPTS: dict[str, tuple[str, ...]] = {
    "nsfw": ("an explicit nude photo", "a sexually explicit image", "a naked person"),
    "violence/weapon": ("a photo of a gun", "a violent bloody scene", "a person holding a weapon"),
    "hate symbol": ("a hate symbol", "a swastika", "an extremist flag"),
    "logo": ("a brand logo", "a company logo", "a trademark emblem"),
    "minor": ("a photo of a child", "a young kid", "a little boy or girl"),
}
DEFAULT_NEUTRAL_PROMPTS: tuple[str, ...] = ("a photo", "an ordinary everyday scene", "a harmless picture")


@dataclass(frozen=True)
class PolicyClasses:
    """The policy classes c = 1..C of P, with the zero-shot texts that describe each one."""

    prompts: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_POLICY_PROMPTS))
    neutral: tuple[str, ...] = DEFAULT_NEUTRAL_PROMPTS

    def __post_init__(self) -> None:
        if not self.prompts:
            raise ValueError("at least one policy class is needed")
        for name, texts in self.prompts.items():
            if not name or not texts or any(not str(t).strip() for t in texts):
                raise ValueError(f"policy class {name!r} needs a non-empty name and non-empty prompts")
        if not self.neutral:
            raise ValueError("at least one neutral prompt is needed")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.prompts)

    @classmethod
    def from_names(cls, names: list[str] | tuple[str, ...]) -> "PolicyClasses":
        """Default texts for known classes; ``a photo of <name>`` style texts for any other name."""
        prompts = {n: DEFAULT_POLICY_PROMPTS.get(n, (f"a photo of {n}", f"an image showing {n}")) for n in names}
        return cls(prompts=prompts)

    def to_json(self) -> dict:
        return {"prompts": {k: list(v) for k, v in self.prompts.items()}, "neutral": list(self.neutral)}

    @classmethod
    def from_json(cls, data: dict) -> "PolicyClasses":
        return cls(prompts={k: tuple(v) for k, v in data["prompts"].items()}, neutral=tuple(data["neutral"]))


def class_directions(policy: PolicyClasses, text_features: Callable[[list[str]], torch.Tensor]) -> torch.Tensor:
    """[C,D] rows t_c − t̄_0: the zero-shot risk direction of every class."""

    def unit_mean(texts: tuple[str, ...]) -> torch.Tensor:
        return F.normalize(text_features(list(texts)).float().mean(0), dim=-1)

    neutral = unit_mean(policy.neutral)
    return torch.stack([unit_mean(policy.prompts[c]) - neutral for c in policy.names])


def clipscore_faithfulness(cos: torch.Tensor) -> torch.Tensor:
    """F = clip(2.5 · cos, 0, 1)."""
    return (CLIPSCORE_WEIGHT * cos).clamp(0.0, 1.0)
