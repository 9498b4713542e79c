"""Actions: the knobs of one tournament candidate, and a fixed knob distribution π with log-probs.

An ``Action`` is a plain record (step 4 of the audited step): mask dilation and feather (latent pixels),
CFG inside the mask, prompt emphasis of the regional conditioning, latent noise jitter, seed,
inversion depth d, the editor choice ("invert": DDIM inversion of d steps; "renoise": fresh
noise at σ_{i-d}; "learned": the trained editor network, which needs the loop's routing editor),
and which text conditions the mask's inside (the region's own prompt or
the base one). TSPO's learned policy replaces ``FixedKnobPolicy`` through the same
``protocols.Policy`` interface.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch

from ..mining.masks import MAX_RADIUS

EDITORS = ("invert", "renoise", "learned")  # "learned": the trained network A_g (learned_editor.py)
# "local": the candidate edits the mined region; "global": the whole image (a coarse, early tournament whose
# candidates are re-noised whole trajectories; with d = i they restart from σ_0 around the current x̂0)
SCOPES = ("local", "global")
# which text conditions the candidate inside the mask: the region's own prompt (when it has one), or the base prompt
REGION_TEXTS = ("region", "base")
SEED_RANGE = 2**31 - 1
# the allowed range of every numeric knob: the one home of these rules (nodes and trainers read them)
KNOB_RANGES: dict[str, tuple[float, float]] = {
    "dilation": (0, MAX_RADIUS),
    "feather": (0, MAX_RADIUS),
    "cfg_inside": (0.0, 100.0),
    "emphasis": (0.0, 10.0),
    "jitter": (0.0, 1.0),
    "depth": (1, 50),
}


def check_knob(name: str, value: float) -> None:
    """A knob value inside ``KNOB_RANGES[name]``; NaN and inf are refused."""
    lo, hi = KNOB_RANGES[name]
    if not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi):
        raise ValueError(f"{name} must be a finite number in [{lo}, {hi}], got {value!r}")


@dataclass(frozen=True)
class Action:
    dilation: int = 0
    feather: int = 0
    cfg_inside: float = 1.0
    emphasis: float = 1.0
    jitter: float = 0.0
    seed: int = 0
    depth: int = 1
    editor: str = "invert"
    scope: str = "local"
    region_text: str = "region"

    def __post_init__(self) -> None:
        for name in KNOB_RANGES:
            check_knob(name, getattr(self, name))
        if self.editor not in EDITORS:
            raise ValueError(f"editor must be one of {EDITORS}, got {self.editor!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        if self.region_text not in REGION_TEXTS:
            raise ValueError(f"region_text must be one of {REGION_TEXTS}, got {self.region_text!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "Action":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass(frozen=True)
class PolicyState:
    """What the policy sees before it draws: the step, the noise level and the region (the TSPO state s).

    The control's own scores (S_0, F_0, P_0 per class; the risk vector is 1 - P_0) and the saliency
    signals that raised the region are optional: they cost an auditor call before the draw, which
    only a policy that reads them (``wants_control_scores``) asks the loop for.
    """

    step: int
    n_steps: int
    t: float
    sigma: float
    region_area: float  # fraction of the latent covered by the region
    region_score: float
    audit_scale: float
    max_depth: int  # d may not exceed the steps already taken
    control_S: float | None = None
    control_F: float | None = None
    control_P: tuple[float, ...] = ()
    signals: tuple[tuple[str, float], ...] = ()  # (signal name, its share of the region's saliency)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["control_P"] = list(self.control_P)
        d["signals"] = {k: float(v) for k, v in self.signals}
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "PolicyState":
        """The inverse of ``to_dict``; states logged before the optional fields existed read as well."""
        kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        kw["control_P"] = tuple(float(v) for v in (kw.get("control_P") or ()))
        sig = kw.get("signals") or ()
        kw["signals"] = tuple((str(k), float(v)) for k, v in (sig.items() if isinstance(sig, Mapping) else sig))
        return cls(**kw)


# the knob names a distribution may set, and their types
KNOBS = {
    "dilation": int,
    "feather": int,
    "cfg_inside": float,
    "emphasis": float,
    "jitter": float,
    "depth": int,
    "editor": str,
    "scope": str,
    "region_text": str,
}


@dataclass(frozen=True)
class FixedKnobPolicy:
    """π(a) = Π_knob p_knob(a_knob): independent categorical knobs; the seed is uniform on [0, 2³¹-1).

    ``knobs`` maps a knob name to ``(choices, probs)``; knobs left out keep the ``Action``
    default. The depth is restricted to ``d <= state.max_depth`` by renormalising, and the
    returned log-prob is under that restricted distribution. The uniform seed adds the same
    constant to every action, so it is left out of the log-prob.
    """

    knobs: Mapping[str, tuple[Sequence, Sequence[float]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, (choices, probs) in self.knobs.items():
            if name not in KNOBS:
                raise ValueError(f"unknown knob {name!r}; knobs are {sorted(KNOBS)}")
            if len(choices) == 0 or len(choices) != len(probs):
                raise ValueError(f"knob {name!r} needs as many probs as choices, at least one")
            if any(not p >= 0 for p in probs) or not math.isclose(sum(probs), 1.0, rel_tol=1e-6):
                raise ValueError(f"probs of knob {name!r} must be >= 0 and sum to 1, got {probs}")
            if name in KNOB_RANGES:
                for c in choices:
                    check_knob(name, c)  # a bad choice fails here, before any sampling

    def _probs(self, name: str, state: PolicyState) -> tuple[list, torch.Tensor]:
        choices, probs = self.knobs[name]
        p = torch.tensor(probs, dtype=torch.float64)
        if name == "depth":
            allowed = torch.tensor([c <= state.max_depth for c in choices])
            p = p * allowed
            if p.sum() <= 0:
                raise ValueError(f"no depth choice d <= {state.max_depth} (the steps left) has probability > 0")
        return list(choices), p / p.sum()

    def propose(self, state: PolicyState, n: int, generator: torch.Generator) -> tuple[list[Action], torch.Tensor]:
        """Draw n actions; returns them and their log-probs ``[n]`` (float64)."""
        if n < 1:
            raise ValueError(f"N must be >= 1, got {n}")
        picks: dict[str, list] = {}
        logp = torch.zeros(n, dtype=torch.float64)
        for name in sorted(self.knobs):
            choices, p = self._probs(name, state)
            idx = torch.multinomial(p, n, replacement=True, generator=generator)
            picks[name] = [KNOBS[name](choices[j]) for j in idx.tolist()]
            logp = logp + torch.log(p[idx])
        seeds = torch.randint(0, SEED_RANGE, (n,), generator=generator).tolist()
        actions = [Action(seed=int(seeds[j]), **{k: v[j] for k, v in picks.items()}) for j in range(n)]
        return actions, logp

    def log_prob(self, action: Action, state: PolicyState) -> float:
        """log π(a | state), the same quantity ``propose`` returns."""
        total = 0.0
        for name in self.knobs:
            choices, p = self._probs(name, state)
            value = getattr(action, name)
            if value not in choices:
                return -math.inf
            pv = float(p[choices.index(value)])
            if pv == 0.0:
                return -math.inf
            total += math.log(pv)
        return total
