"""The learned candidate policy π_θ(a | s) of TSPO (Stage B3).

π_θ factorises over the knobs of an ``Action``:

    π_θ(a | s) = Π_k softmax(W_k · h_θ(φ(s)) + V_k · φ(s))[a_k]      k ∈ {dilation, feather, cfg_inside, emphasis,
                                                                 jitter, depth, editor}

h_θ is a small MLP over the normalised state features x = (φ(s) - m) / σ̂ (``state_features``): t, σ,
the region's area and
saliency score, the audit scale, the depth budget, the control's S_0, F_0 and risk vector 1 - P_0, and
the signals that raised the region. Each knob has a categorical head over a fixed list of choices; the
depth head is restricted to d ≤ max_depth by masking, and log-probs are under that restricted
distribution (as ``actions.FixedKnobPolicy``). The seed is uniform and left out of the log-prob.

The normaliser (m, σ̂) is fitted once, before training, to the states the policy will learn from
(``fit_normaliser``: m = mean φ, σ̂ = max(std φ, floor)); a fresh policy has m = 0, σ̂ = 1. It matters:
raw features share large constant parts between states (the audit scale, the region score), so
without centring the logits of two states move together and a preference that flips with t (high
CFG early, low late) is slow to learn under Adam; centred, a feature that never varies reads 0.

On disk: ``<stem>.safetensors`` (the weights) + ``<stem>.json`` (schema ``tipai.policy/1``, the knobs
and their choices, the feature names, the sizes). Loading checks both against each other and against
what the caller expects, and says which knob differs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

import torch
from torch import nn

from .actions import KNOBS, SEED_RANGE, Action, PolicyState

POLICY_SCHEMA = "tipai.policy/1"

# The default choices of a fresh policy: those the default TSPO Sampler node draws from, widened a little.
DEFAULT_CHOICES: dict[str, tuple] = {
    "dilation": (0, 1, 2),
    "feather": (0, 1, 2),
    "cfg_inside": (3.0, 5.0, 7.0),
    "emphasis": (1.0, 1.3),
    "jitter": (0.0, 0.3),
    "depth": (1, 2, 3),
    "editor": ("invert", "renoise"),
}
# Saliency signals a region can be raised by (regions carry their shares when the miner reports them).
SIGNALS = ("risk", "faithfulness", "drift", "detector", "feature", "user")
BASE_FEATURES = (
    "t",
    "log_sigma",
    "region_area",
    "log_region_score",
    "audit_scale",
    "depth_budget",
    "has_control",
    "S0",
    "F0",
    "max_risk",
)


def feature_names(n_classes: int) -> tuple[str, ...]:
    return BASE_FEATURES + tuple(f"risk_{c}" for c in range(n_classes)) + tuple(f"signal_{s}" for s in SIGNALS)


def state_features(state: PolicyState | Mapping, n_classes: int) -> torch.Tensor:
    """φ(s) ``[D]`` float32, D = len(feature_names(n_classes)); missing control scores read 0, has_control=0."""
    s = state if isinstance(state, PolicyState) else PolicyState.from_dict(state)
    has = s.control_S is not None
    risk = [1.0 - float(p) for p in s.control_P][:n_classes]
    risk += [0.0] * (n_classes - len(risk))
    sig = dict(s.signals)
    return torch.tensor(
        [
            float(s.t),
            math.log1p(max(float(s.sigma), 0.0))
            / 3.0,  # σ spans ~0..15 (eps) or 0..1 (flow): a log keeps both in range
            float(s.region_area),
            math.log1p(max(float(s.region_score), 0.0)) / 5.0,
            float(s.audit_scale),
            min(float(s.max_depth), 8.0) / 8.0,
            1.0 if has else 0.0,
            float(s.control_S) if s.control_S is not None else 0.0,  # same test as `has`
            float(s.control_F) if s.control_F is not None else 0.0,
            max(risk) if s.control_P else 0.0,
            *risk,
            *[float(sig.get(name, 0.0)) for name in SIGNALS],
        ],
        dtype=torch.float32,
    )


def check_choices(choices: Mapping[str, Sequence]) -> dict[str, tuple]:
    """Validated knob -> choices (typed as ``actions.KNOBS``); every choice must make a valid Action."""
    out: dict[str, tuple] = {}
    for name, values in choices.items():
        if name not in KNOBS:
            raise ValueError(f"unknown knob {name!r}; knobs are {sorted(KNOBS)}")
        vals = tuple(KNOBS[name](v) for v in values)
        if not vals or len(set(vals)) != len(vals):
            raise ValueError(f"knob {name!r} needs at least one choice and no repeats, got {list(values)}")
        for v in vals:
            Action(**{name: v})  # raises for an invalid value (negative dilation, jitter > 1, unknown editor)
        out[name] = vals
    if not out:
        raise ValueError("a policy needs at least one knob")
    return out


class PolicyNet(nn.Module):
    """π_θ(a | s): an MLP over φ(s), one categorical head per knob. Implements ``protocols.Policy``."""

    wants_control_scores = True  # the loop scores the control before the draw, so φ(s) has S_0, F_0, P_0
    feat_mean: torch.Tensor
    feat_scale: torch.Tensor

    def __init__(self, choices: Mapping[str, Sequence] | None = None, n_classes: int = 5, hidden: int = 64):
        super().__init__()
        self.choices = check_choices(DEFAULT_CHOICES if choices is None else choices)
        self.knob_names = tuple(sorted(self.choices))
        self.n_classes, self.hidden = int(n_classes), int(hidden)
        d = len(feature_names(self.n_classes))
        self.body = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.heads = nn.ModuleDict({k: nn.Linear(hidden, len(self.choices[k])) for k in self.knob_names})
        # a linear path from φ(s) straight to the logits: a preference that is linear in t or σ is learnt
        # at once, the MLP adds what is not
        self.skip = nn.ModuleDict({k: nn.Linear(d, len(self.choices[k]), bias=False) for k in self.knob_names})
        # the feature normaliser (fit_normaliser); identity until fitted
        self.register_buffer("feat_mean", torch.zeros(d))
        self.register_buffer("feat_scale", torch.ones(d))
        for module in (*self.heads.values(), *self.skip.values()):  # a fresh policy starts uniform: zero logits
            layer = cast(nn.Linear, module)
            nn.init.zeros_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    # ------------------------------------------------------------------ distribution

    def features(self, states: Sequence[PolicyState | Mapping]) -> torch.Tensor:
        return torch.stack([state_features(s, self.n_classes) for s in states])

    @staticmethod
    def features_of(state: PolicyState | Mapping, n_classes: int) -> torch.Tensor:
        return state_features(state, n_classes)

    @torch.no_grad()
    def fit_normaliser(self, feats: torch.Tensor, floor: float = 0.1) -> None:
        """m = mean φ, σ̂ = max(std φ, floor) over the rows of ``feats`` ``[B, D]`` (the training states)."""
        feats = feats.float()
        self.feat_mean.copy_(feats.mean(0))
        std = feats.std(0, unbiased=False) if len(feats) > 1 else torch.zeros_like(self.feat_scale)
        self.feat_scale.copy_(std.clamp_min(floor))

    def log_probs_table(self, feats: torch.Tensor, max_depth: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """log π_k(· | s) ``[B, K_k]`` per knob; depths above ``max_depth`` ``[B]`` get log-prob -inf."""
        feats = (feats - self.feat_mean) / self.feat_scale
        h = self.body(feats)
        out = {}
        for k in self.knob_names:
            logits = self.heads[k](h) + self.skip[k](feats)
            if k == "depth" and max_depth is not None:
                allowed = torch.tensor(self.choices["depth"], device=feats.device)[None, :] <= max_depth[:, None]
                if not allowed.any(dim=1).all():
                    raise ValueError(
                        f"no depth choice d <= max_depth (the steps taken); choices are {self.choices['depth']}"
                    )
                logits = logits.masked_fill(~allowed, float("-inf"))
            out[k] = torch.log_softmax(logits, dim=-1)
        return out

    def action_index(self, action: Action | Mapping) -> dict[str, int] | None:
        """Indices of an action's knob values in the choices; None when a value is not a choice (π = 0)."""
        d = action.to_dict() if isinstance(action, Action) else action
        idx = {}
        for k in self.knob_names:
            v = KNOBS[k](d.get(k, getattr(Action(), k)))
            if v not in self.choices[k]:
                return None
            idx[k] = self.choices[k].index(v)
        return idx

    def log_prob_of(self, table: dict[str, torch.Tensor], idx: dict[str, torch.Tensor]) -> torch.Tensor:
        """Σ_k log π_k(a_k | s) for rows ``idx[k]`` ``[B]`` of the table."""
        # knob_names is never empty (check_choices), so the sum is a tensor
        return cast(torch.Tensor, sum(table[k].gather(1, idx[k][:, None])[:, 0] for k in self.knob_names))

    @staticmethod
    def entropy(table: dict[str, torch.Tensor]) -> torch.Tensor:
        """H(π(· | s)) ``[B]``: the entropies of the factors add."""
        return cast(torch.Tensor, sum(-(lp.exp() * lp.nan_to_num(neginf=0.0)).sum(-1) for lp in table.values()))

    # ------------------------------------------------------------------ Policy protocol

    @torch.no_grad()
    def propose(self, state: PolicyState, n: int, generator: torch.Generator) -> tuple[list[Action], torch.Tensor]:
        """Draw n actions; returns them and their log-probs ``[n]`` (float64), the same as ``log_prob``."""
        if n < 1:
            raise ValueError(f"N must be >= 1, got {n}")
        table = self.log_probs_table(self.features([state]), torch.tensor([state.max_depth]))
        picks: dict[str, list] = {}
        logp = torch.zeros(n, dtype=torch.float64)
        for k in self.knob_names:
            p = table[k][0].double().exp()
            j = torch.multinomial(p, n, replacement=True, generator=generator)
            picks[k] = [self.choices[k][i] for i in j.tolist()]
            logp = logp + table[k][0].double()[j]
        seeds = torch.randint(0, SEED_RANGE, (n,), generator=generator).tolist()
        return [Action(seed=int(seeds[i]), **{k: v[i] for k, v in picks.items()}) for i in range(n)], logp

    @torch.no_grad()
    def log_prob(self, action: Action, state: PolicyState) -> float:
        idx = self.action_index(action)
        if idx is None:
            return -math.inf
        table = self.log_probs_table(self.features([state]), torch.tensor([state.max_depth]))
        return float(sum(table[k][0, i].double() for k, i in idx.items()))

    @torch.no_grad()
    def preferred(self, state: PolicyState) -> dict:
        """argmax_a π(a | s), knob by knob: what the policy has learned to prefer in state s."""
        table = self.log_probs_table(self.features([state]), torch.tensor([state.max_depth]))
        return {k: self.choices[k][int(table[k][0].argmax())] for k in self.knob_names}

    # ------------------------------------------------------------------ files

    def config(self) -> dict:
        return {
            "schema": POLICY_SCHEMA,
            "knobs": {k: list(self.choices[k]) for k in self.knob_names},
            "n_classes": self.n_classes,
            "hidden": self.hidden,
            "features": list(feature_names(self.n_classes)),
        }

    def save(self, path: str | Path, metadata: dict | None = None) -> Path:
        """Write ``<stem>.safetensors`` and ``<stem>.json`` atomically (JSON last: it marks the pair complete)."""
        from safetensors.torch import save_file

        from ..records.files import atomic_write

        path = Path(path).with_suffix(".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write(path, lambda t: save_file(tensors, str(t), metadata={"schema": POLICY_SCHEMA}))
        meta = {**self.config(), "metadata": dict(metadata or {})}
        atomic_write(path.with_suffix(".json"), lambda t: t.write_text(json.dumps(meta, indent=1)))
        return path

    @classmethod
    def load(cls, path: str | Path, expect_knobs: Mapping[str, Sequence] | None = None) -> "PolicyNet":
        """Read a policy file pair. Raises ValueError, naming the file and the knob, when the schema, the
        features, the weights or (when given) ``expect_knobs`` do not match the file's knobs."""
        from safetensors.torch import load_file

        path = Path(path).with_suffix(".safetensors")
        meta_path = path.with_suffix(".json")
        for p in (path, meta_path):
            if not p.is_file():
                raise FileNotFoundError(f"policy file {p} is missing (a policy is <stem>.safetensors + <stem>.json)")
        meta = json.loads(meta_path.read_text())
        if meta.get("schema") != POLICY_SCHEMA:
            raise ValueError(
                f"{meta_path}: schema {meta.get('schema')!r} is not {POLICY_SCHEMA!r}; "
                "this is not a TiPAI policy file or it was written by another version"
            )
        net = cls(meta["knobs"], n_classes=int(meta["n_classes"]), hidden=int(meta["hidden"]))
        if list(meta.get("features", [])) != list(feature_names(net.n_classes)):
            raise ValueError(
                f"{meta_path}: the policy reads features {meta.get('features')}, this version "
                f"computes {list(feature_names(net.n_classes))}"
            )
        if expect_knobs is not None:
            want = check_choices(expect_knobs)
            diff = [
                f"{k}: file {list(net.choices.get(k, ()))}, expected {list(want.get(k, ()))}"
                for k in sorted(set(want) | set(net.choices))
                if net.choices.get(k) != want.get(k)
            ]
            if diff:
                raise ValueError(f"policy file {path.name}: its knobs do not match: " + "; ".join(diff))
        tensors = load_file(str(path), device="cpu")
        for name in ("feat_mean", "feat_scale"):  # files written before the normaliser: identity
            tensors.setdefault(name, net.state_dict()[name])
        shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in tensors.items()}
        if shapes != got:
            bad = sorted(k for k in set(shapes) | set(got) if shapes.get(k) != got.get(k))
            raise ValueError(
                f"policy file {path.name}: its weights do not match the knobs in its JSON "
                f"(tensors {bad}: expected {[shapes.get(k) for k in bad]}, found {[got.get(k) for k in bad]})"
            )
        net.load_state_dict(tensors, strict=True)
        net.metadata = meta.get("metadata", {})
        return net.eval()
