"""The learned editor's file: ``<name>.safetensors`` (weights) and ``<name>.json`` (its identity).

The identity says what the weights are for, so that a file is never applied where it was not trained:

* ``arch``: the network's shape (``learned_net.EditorArch``);
* ``space``: ``"rgb"``: the editor sees and predicts images in [0, 1], and the loop maps its output back
  into the model's space (the VAE's encoder for a latent model; ``2·y − 1`` for a pixel-space one);
* ``family``: the base model family it was trained for (``"shapes"``, ``"sd15"``, ``"sdxl"``, ...),
  or ``"any"`` for an RGB editor trained on images of no one model;
* ``text_encoder``: the identity of the text features it reads (the auditor backbone's), refused
  when the auditor at hand encodes text differently;
* ``t_band``: the band of t ∈ [0, 1] it was trained on; t outside it is clamped into it, with a warning.

Both files are written to temporary names and renamed, weights first, so a reader never sees half.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..records.files import atomic_write
from .learned_net import EditorArch, EditorNet

EDITOR_FORMAT = "tipai.learned_editor/1"
SPACES = ("rgb",)  # the trainer learns from images; a latent model reaches it through its VAE


@dataclass(frozen=True)
class EditorIdentity:
    arch: EditorArch = field(default_factory=EditorArch)
    space: str = "rgb"
    family: str = "any"
    text_encoder: dict[str, Any] = field(default_factory=dict)
    t_band: tuple[float, float] = (0.0, 1.0)
    trained: dict[str, Any] = field(default_factory=dict)  # what the trainer wants a reader to know

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"editor space must be one of {SPACES}, got {self.space!r}")
        lo, hi = self.t_band
        if not (0.0 <= lo <= hi <= 1.0):
            raise ValueError(f"t_band must satisfy 0 <= lo <= hi <= 1, got {self.t_band}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": EDITOR_FORMAT,
            "arch": self.arch.to_dict(),
            "space": self.space,
            "family": self.family,
            "text_encoder": self.text_encoder,
            "t_band": list(self.t_band),
            "trained": self.trained,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "the editor file") -> "EditorIdentity":
        if d.get("format") != EDITOR_FORMAT:
            raise ValueError(
                f"{where} is not a TiPAI learned editor (format={d.get('format')!r}, want {EDITOR_FORMAT})"
            )
        return cls(
            EditorArch(**d["arch"]),
            d["space"],
            d["family"],
            dict(d.get("text_encoder", {})),
            (float(d["t_band"][0]), float(d["t_band"][1])),
            dict(d.get("trained", {})),
        )

    def clamp_t(self, t: float) -> float:
        """t inside the trained band; outside it, the band's nearest end and a warning (not a refusal: an
        audit schedule may reach a step or two past the band, and the nearest trained t is the best guess)."""
        lo, hi = self.t_band
        if lo <= t <= hi:
            return t
        warnings.warn(f"learned editor: t={t:.3f} is outside its trained band [{lo}, {hi}]; clamped", stacklevel=2)
        return min(max(t, lo), hi)

    def check_family(self, family: str) -> None:
        """Refuse a model of another family, naming both (an ``"any"`` RGB editor fits every family)."""
        if self.family != "any" and family != self.family:
            raise ValueError(
                f"this learned editor was trained for the {self.family!r} model family; the model here is "
                f"{family!r}. Train one for {family!r} (python -m tipai_core.train editor --family {family})"
            )

    def check_text_encoder(self, identity: dict[str, Any]) -> None:
        """Refuse text features of another encoder: the FiLM weights read the trained encoder's space."""
        mine = {k: self.text_encoder.get(k) for k in ("name", "embed_dim") if k in self.text_encoder}
        theirs = {k: identity.get(k) for k in mine}
        if mine != theirs:
            raise ValueError(
                f"this learned editor reads the text features of {mine}; the auditor here encodes text as "
                f"{theirs}. Use the auditor it was trained with"
            )


def json_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_editor(path: str | Path, net: EditorNet, identity: EditorIdentity) -> Path:
    """Write the weights and, last, the identity JSON (which marks the file complete)."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"a learned editor is saved as .safetensors, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_write(path, lambda t: save_file(tensors, str(t), metadata={"format": EDITOR_FORMAT}))
    atomic_write(json_path(path), lambda t: t.write_text(json.dumps(identity.to_dict(), indent=1)))
    return path


def load_editor(path: str | Path, device: str | torch.device = "cpu") -> tuple[EditorNet, EditorIdentity]:
    """(net in eval mode, identity); a missing or mismatched file is refused, naming it."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"learned editor files are .safetensors (with a .json beside them), got {path.name}")
    if not path.is_file():
        raise FileNotFoundError(f"learned editor weights not found: {path}")
    if not json_path(path).is_file():
        raise FileNotFoundError(f"learned editor {path.name} has no identity file {json_path(path).name} beside it")
    identity = EditorIdentity.from_dict(json.loads(json_path(path).read_text()), str(json_path(path)))
    net = EditorNet(identity.arch)
    state = load_file(str(path), device="cpu")
    missing = set(net.state_dict()) ^ set(state)
    if missing:
        raise ValueError(f"{path.name} does not match its identity's architecture (keys differ: {sorted(missing)[:4]})")
    net.load_state_dict(state, strict=True)
    return net.to(device).eval(), identity


__all__ = ["EDITOR_FORMAT", "EditorIdentity", "load_editor", "save_editor"]
