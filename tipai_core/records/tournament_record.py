"""The tournament record: one per audited region, versioned, to and from JSON.

Schema ``tipai.tournament/1`` (TSPO and calibration learn from these; bump the version on any
incompatible change and keep reading the old one). All lists over candidates have N entries;
lists over the tournament have N + 1 with index 0 = the control C_0.

    schema         "tipai.tournament/1"
    step, n_steps  audited step i of n; t = i / n; sigma = σ_i
    batch_index    which image of the sampler's batch
    region         {index, bbox [y0,x0,y1,x1] and area in audit-view pixels, latent_bbox,
                    score (saliency mass), audit_scale, view_factor (view pixels per latent pixel),
                    prompt (the region's own text or null; absent in older logs)}
    state          the PolicyState the policy saw (actions.PolicyState)
    actions        N Action dicts (dilation, feather, cfg_inside, emphasis, jitter, seed, depth, editor)
    log_probs      N floats, log π(a_n | state) under the policy that drew them (behaviour policy)
    policy_seed    seed of the generator the policy drew from
    seeds          N ints, the candidates' seeds (= actions[n].seed)
    scores         {S, S_R, F, B: N+1 floats; P: N+1 lists of C floats; classes: C names}
    utilities      N+1 floats u_0..u_N (u_0 = 0)
    winner         index of the accepted candidate, 0 when the control was kept
    accepted       bool
    guard          {delta, tau_P (C floats at t), tau_F (float at t)}
    alpha          α(t) used for the blend (applied only when accepted)
    costs          costs.Costs of this tournament (denoiser calls/evals, decodes, auditor calls)
    true_win       optional, N+1 entries (index 0, the control, is null): did candidate i truly beat the
                   control? Filled in by a human, a stronger judge or a held-out preference set; null
                   where unknown. Calibration (Stage C) learns Pr[true win | S] from it. Absent in logs
                   written before it existed (they still read: an optional field needs no new version).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch

from ..protocols import AuditScores
from .costs import Costs

SCHEMA_VERSION = "tipai.tournament/1"


@dataclass
class TournamentRecord:
    step: int
    n_steps: int
    t: float
    sigma: float
    region: dict
    state: dict
    actions: list[dict]
    log_probs: list[float]
    policy_seed: int
    seeds: list[int]
    scores: dict
    utilities: list[float]
    winner: int
    accepted: bool
    guard: dict
    alpha: float
    costs: Costs = field(default_factory=Costs)
    batch_index: int = 0
    schema: str = SCHEMA_VERSION
    true_win: list | None = None

    def __post_init__(self) -> None:
        n = len(self.actions)
        if n < 1:
            raise ValueError("a tournament record needs N >= 1 actions")
        if len(self.log_probs) != n or len(self.seeds) != n:
            raise ValueError(f"log_probs and seeds must have N={n} entries")
        for key in ("S", "S_R", "F", "B", "P"):
            if len(self.scores[key]) != n + 1:
                raise ValueError(f"scores.{key} must have N+1={n + 1} entries")
        if len(self.utilities) != n + 1:
            raise ValueError(f"utilities must have N+1={n + 1} entries")
        if self.true_win is not None:
            if len(self.true_win) != n + 1:
                raise ValueError(f"true_win must have N+1={n + 1} entries (index 0 = the control, null)")
            if any(v is not None and not isinstance(v, (bool, int, float)) for v in self.true_win):
                raise ValueError("true_win entries must be booleans, 0/1 or null")
        if not 0 <= self.winner <= n or self.accepted != (self.winner > 0):
            raise ValueError(f"winner={self.winner} is inconsistent with accepted={self.accepted}")

    @staticmethod
    def scores_to_dict(scores: AuditScores) -> dict:
        return {
            "S": scores.S.double().tolist(),
            "S_R": scores.S_R.double().tolist(),
            "F": scores.F.double().tolist(),
            "P": scores.P.double().tolist(),
            "B": scores.B.double().tolist(),
            "classes": list(scores.classes),
        }

    def audit_scores(self) -> AuditScores:
        s = self.scores
        return AuditScores(
            S=torch.tensor(s["S"], dtype=torch.float64),
            S_R=torch.tensor(s["S_R"], dtype=torch.float64),
            F=torch.tensor(s["F"], dtype=torch.float64),
            P=torch.tensor(s["P"], dtype=torch.float64).reshape(len(s["S"]), -1),
            B=torch.tensor(s["B"], dtype=torch.float64),
            classes=tuple(s.get("classes", ())),
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["costs"] = self.costs.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TournamentRecord":
        if d.get("schema") != SCHEMA_VERSION:
            raise ValueError(
                f"record schema {d.get('schema')!r} is not {SCHEMA_VERSION!r} (this version reads "
                f"{SCHEMA_VERSION!r} logs)"
            )
        kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        kw["costs"] = Costs.from_dict(d["costs"])
        return cls(**kw)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TournamentRecord":
        return cls.from_dict(json.loads(text))


def records_to_jsonl(records: list[TournamentRecord]) -> str:
    """One record per line (the log format of ``TiPAI Save Tournament Log``)."""
    return "".join(r.to_json() + "\n" for r in records)


def records_from_jsonl(text: str) -> list[TournamentRecord]:
    return [TournamentRecord.from_json(line) for line in text.splitlines() if line.strip()]
