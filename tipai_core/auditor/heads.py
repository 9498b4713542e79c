"""Trained heads of the auditor: h_θ (global score), the patch head, the risk decoder and the policy logits.

With e_I the global image embedding, z_j the patch tokens, e_t the prompt embedding (all unit norm, joint
space of width D) and s the learned temperature:

    u(I)         = [mean_j z_j, max_j z_j]                                  patch context (max finds small cues)
    S(p, I)      = s · ⟨e_I, e_t⟩ + h_θ([e_I, e_t, e_I ⊙ e_t, u(I)])
    s_j(p)       = s · ⟨z_j, e_t⟩ + h_patch([z_j, e_t, z_j ⊙ e_t])          per-patch score
    S_R(p, I_R)  = Σ_j w_j s_j / Σ_j w_j                                    w_j = region coverage of patch j
    r_c(j)       = σ(W_r z_j + g_r(z_j))_c                                   risk decoder, upsampled to H×W
    P_c          = 1 − σ(W_p e_I + g_p([e_I, u(I)]))_c                       policy logits
    F            = σ(a · S + b)  after calibration, else clip(2.5 · ⟨e_I, e_t⟩, 0, 1)

The residual MLPs h_θ, h_patch, g_r, g_p start at zero and W_r = W_p = s · (t_c − t̄_0), so untrained heads
are the zero-shot auditor (zero_shot.py) exactly. Files: ``<stem>.safetensors`` (tensors) and
``<stem>.json`` (backbone identity, classes and their texts, sizes, schema version). Loading checks the
JSON against the backbone and refuses a mismatch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from ..records.files import atomic_write
from .zero_shot import PolicyClasses, class_directions, clipscore_faithfulness

SCHEMA_VERSION = 1
FORMAT_NAME = "tipai-auditor-heads"


@dataclass
class HeadsConfig:
    backbone: dict[str, Any]
    policy: dict[str, Any]
    embed_dim: int
    hidden: int = 256
    trained: bool = False
    f_calibrated: bool = False
    schema_version: int = SCHEMA_VERSION
    format: str = FORMAT_NAME
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.policy["prompts"])


def _residual_mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    mlp = nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, n_out))
    last = cast(nn.Linear, mlp[2])
    nn.init.zeros_(last.weight)  # zero residual: the head starts as the zero-shot formula
    nn.init.zeros_(last.bias)
    return mlp


class AuditorHeads(nn.Module):
    f_platt: torch.Tensor

    def __init__(self, config: HeadsConfig, logit_scale: float = 100.0, directions: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        d, h, c = config.embed_dim, config.hidden, len(config.classes)
        self.log_scale = nn.Parameter(torch.tensor(math.log(float(logit_scale))))
        self.score_mlp = _residual_mlp(5 * d, h, 1)
        self.patch_mlp = _residual_mlp(3 * d, h, 1)
        self.risk_linear = nn.Linear(d, c)
        self.risk_mlp = _residual_mlp(d, h, c)
        self.policy_linear = nn.Linear(d, c)
        self.policy_mlp = _residual_mlp(3 * d, h, c)
        self.register_buffer("f_platt", torch.tensor([1.0, 0.0]))
        init = torch.zeros(c, d) if directions is None else float(logit_scale) * directions.float()
        with torch.no_grad():
            for lin in (self.risk_linear, self.policy_linear):
                lin.weight.copy_(init)
                lin.bias.zero_()

    @classmethod
    def zero_shot(
        cls,
        identity: dict[str, Any],
        policy: PolicyClasses,
        logit_scale: float,
        text_features: Callable[[list[str]], torch.Tensor],
        hidden: int = 256,
    ) -> "AuditorHeads":
        dirs = class_directions(policy, text_features)
        config = HeadsConfig(
            backbone=dict(identity), policy=policy.to_json(), embed_dim=int(dirs.shape[1]), hidden=hidden
        )
        return cls(config, logit_scale, dirs.cpu())

    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.classes

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=100.0)

    def _cast(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.log_scale.dtype)

    def _pair_features(self, x: torch.Tensor, e_t: torch.Tensor) -> torch.Tensor:
        e_t = e_t.expand_as(x)
        return torch.cat([x, e_t, x * e_t], dim=-1)

    def context(self, tokens: torch.Tensor) -> torch.Tensor:
        """u(I) = [mean_j z_j, max_j z_j]: [B,h,w,D] -> [B,2D]."""
        flat = self._cast(tokens).flatten(1, 2)
        return torch.cat([flat.mean(1), flat.amax(1)], dim=-1)

    def global_score(self, e_img: torch.Tensor, e_txt: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """S = s·⟨e_I, e_t⟩ + h_θ(...); e_img [B,D], e_txt [D] or [B,D], tokens [B,h,w,D] -> [B]."""
        e_img, e_txt = self._cast(e_img), self._cast(e_txt)
        cos = (e_img * e_txt).sum(-1)
        x = torch.cat([self._pair_features(e_img, e_txt), self.context(tokens)], dim=-1)
        return self.scale * cos + self.score_mlp(x).squeeze(-1)

    def patch_scores(self, tokens: torch.Tensor, e_txt: torch.Tensor) -> torch.Tensor:
        """s_j for every patch; tokens [B,h,w,D], e_txt [D] or [B,D] -> [B,h,w]."""
        tokens, e_txt = self._cast(tokens), self._cast(e_txt)
        if e_txt.dim() == 2:
            e_txt = e_txt[:, None, None, :]
        cos = (tokens * e_txt).sum(-1)
        return self.scale * cos + self.patch_mlp(self._pair_features(tokens, e_txt)).squeeze(-1)

    @staticmethod
    def pool_region(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        """Σ_j w_j v_j / Σ_j w_j over the grid (plain mean where w is None or empty); [B,h,w] -> [B]."""
        if weights is None:
            return values.flatten(1).mean(1)
        w = weights.to(values).expand_as(values).flatten(1)
        v = values.flatten(1)
        total = w.sum(1)
        pooled = (w * v).sum(1) / total.clamp_min(1e-8)
        return torch.where(total > 1e-8, pooled, v.mean(1))

    def risk_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Risk decoder on patch tokens [B,h,w,D] -> logits [B,C,h,w]."""
        tokens = self._cast(tokens)
        return (self.risk_linear(tokens) + self.risk_mlp(tokens)).permute(0, 3, 1, 2)

    def policy_logits(self, e_img: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Policy logits [B,C] from e_I [B,D] and patch tokens [B,h,w,D]; P = 1 − σ(logits)."""
        e_img = self._cast(e_img)
        return self.policy_linear(e_img) + self.policy_mlp(torch.cat([e_img, self.context(tokens)], dim=-1))

    def faithfulness(self, S: torch.Tensor, e_img: torch.Tensor, e_txt: torch.Tensor) -> torch.Tensor:
        """F = σ(a·S + b) once calibrated (Platt, fit by the trainer), else CLIPScore in [0,1]."""
        if self.config.f_calibrated:
            a, b = self.f_platt
            return torch.sigmoid(a * S + b)
        return clipscore_faithfulness((self._cast(e_img) * self._cast(e_txt)).sum(-1))

    def set_faithfulness_calibration(self, a: float, b: float) -> None:
        self.f_platt.copy_(torch.tensor([float(a), float(b)]))
        self.config.f_calibrated = True


# ----------------------------------------------------------------------------- files


def heads_paths(path: str | Path) -> tuple[Path, Path]:
    """``x.safetensors`` and its ``x.json`` (either name may be given)."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def save_heads(heads: AuditorHeads, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    from safetensors.torch import save_file

    weights, config = heads_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in heads.state_dict().items()}
    meta = {"format": FORMAT_NAME, "schema_version": str(SCHEMA_VERSION)}
    data = asdict(heads.config)
    data["classes"] = list(heads.classes)  # the order of the class axis of every tensor
    if metadata:
        data["extra"] = {**data.get("extra", {}), **metadata}
    text = json.dumps(data, indent=2)  # no sort_keys: class order is meaningful
    # each file whole or not at all: a killed trainer never leaves heads that half-load
    atomic_write(weights, lambda t: save_file(state, str(t), metadata=meta))
    atomic_write(config, text)
    return weights


def load_heads(path: str | Path, backbone_identity: dict[str, Any]) -> AuditorHeads:
    """Load heads and check they were trained for this backbone; any mismatch raises ValueError."""
    from safetensors.torch import load_file

    weights, config_path = heads_paths(path)
    for p in (weights, config_path):
        if not p.is_file():
            raise FileNotFoundError(
                f"auditor heads file not found: {p} (heads are a pair: {weights.name} + {config_path.name})"
            )
    try:
        raw = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config_path} is not valid JSON: {exc}") from exc
    if raw.get("format") != FORMAT_NAME:
        raise ValueError(f"{config_path} is not a TiPAI auditor heads config (format={raw.get('format')!r})")
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{config_path} has schema version {raw.get('schema_version')}, this TiPAI reads version {SCHEMA_VERSION}"
        )
    config = HeadsConfig(**{k: v for k, v in raw.items() if k in HeadsConfig.__dataclass_fields__})
    classes = raw.get("classes")
    if classes is not None:
        prompts = config.policy.get("prompts", {})
        if sorted(classes) != sorted(prompts):
            raise ValueError(f"{config_path}: 'classes' {classes} do not match the class prompts {list(prompts)}")
        config.policy = {**config.policy, "prompts": {c: prompts[c] for c in classes}}
    want = {k: config.backbone.get(k) for k in ("kind", "name", "embed_dim")}
    have = {k: backbone_identity.get(k) for k in ("kind", "name", "embed_dim")}
    if want != have:
        raise ValueError(
            f"auditor heads {weights} were trained for backbone {want}, but the loaded backbone is "
            f"{have}; load the backbone they were trained with or retrain the heads"
        )
    PolicyClasses.from_json(config.policy)  # validates the class texts
    heads = AuditorHeads(config)
    state = load_file(str(weights), device="cpu")
    try:
        heads.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{weights} does not match its config {config_path}: {exc}") from exc
    return heads
