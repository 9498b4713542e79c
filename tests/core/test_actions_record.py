"""Actions and the fixed knob policy's log-probs; the versioned tournament record."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tipai_core.policy.actions import Action, FixedKnobPolicy, PolicyState
from tipai_core.records.costs import Costs
from tipai_core.records.tournament_record import (
    SCHEMA_VERSION,
    TournamentRecord,
    records_from_jsonl,
    records_to_jsonl,
)

STATE = PolicyState(
    step=6, n_steps=20, t=0.3, sigma=1.2, region_area=0.1, region_score=3.0, audit_scale=0.5, max_depth=6
)


def _policy():
    return FixedKnobPolicy(
        {
            "cfg_inside": ((1.0, 3.0), (0.25, 0.75)),
            "depth": ((2, 4, 8), (0.5, 0.25, 0.25)),
            "editor": (("invert", "renoise"), (0.9, 0.1)),
        }
    )


def test_log_probs_are_the_sum_of_knob_log_probs_under_the_depth_restriction():
    pol = _policy()
    actions, logp = pol.propose(STATE, 200, torch.Generator().manual_seed(0))
    assert len(actions) == 200 and logp.shape == (200,)
    # depth 8 > max_depth 6 is never drawn; {2, 4} renormalise to (2/3, 1/3)
    assert {a.depth for a in actions} == {2, 4}
    for a, lp in zip(actions, logp.tolist()):
        expected = math.log({1.0: 0.25, 3.0: 0.75}[a.cfg_inside]) + math.log({2: 2 / 3, 4: 1 / 3}[a.depth])
        expected += math.log({"invert": 0.9, "renoise": 0.1}[a.editor])
        assert lp == pytest.approx(expected, abs=1e-12)
        assert pol.log_prob(a, STATE) == pytest.approx(lp, abs=1e-12)
    assert len({a.seed for a in actions}) > 190  # seeds are drawn, not fixed
    again, logp2 = pol.propose(STATE, 200, torch.Generator().manual_seed(0))
    assert again == actions and torch.equal(logp, logp2)


def test_policy_and_action_reject_bad_input():
    pol = _policy()
    with pytest.raises(ValueError, match="N must be >= 1"):
        pol.propose(STATE, 0, torch.Generator())
    shallow = PolicyState(**{**STATE.to_dict(), "max_depth": 1})
    with pytest.raises(ValueError, match="steps left"):
        pol.propose(shallow, 3, torch.Generator())
    with pytest.raises(ValueError, match="sum to 1"):
        FixedKnobPolicy({"jitter": ((0.0, 0.5), (0.5, 0.6))})
    with pytest.raises(ValueError, match="unknown knob"):
        FixedKnobPolicy({"temperature": ((1.0,), (1.0,))})
    with pytest.raises(ValueError, match="depth"):
        Action(depth=0)


def _record(n=2, winner=1):
    return TournamentRecord(
        step=6,
        n_steps=20,
        t=0.3,
        sigma=1.2,
        region={
            "index": 0,
            "bbox": [8, 8, 24, 24],
            "area": 256,
            "latent_bbox": [2, 2, 6, 6],
            "score": 3.0,
            "audit_scale": 0.5,
            "view_factor": 4,
        },
        state=STATE.to_dict(),
        actions=[Action(seed=s, depth=2).to_dict() for s in range(n)],
        log_probs=[-1.5] * n,
        policy_seed=99,
        seeds=list(range(n)),
        scores={
            "S": [0.5] + [0.6] * n,
            "S_R": [0.5] * (n + 1),
            "F": [1.0] * (n + 1),
            "P": [[1.0]] * (n + 1),
            "B": [1.0] * (n + 1),
            "classes": ["safe"],
        },
        utilities=[0.0] + [0.1] * n,
        winner=winner,
        accepted=winner > 0,
        guard={"delta": 0.0, "tau_P": [0.0], "tau_F": 0.0},
        alpha=1.0,
        costs=Costs(
            denoiser_calls=5, denoiser_evals=10, decode_calls=1, decoded_images=2, auditor_calls=1, auditor_images=3
        ),
    )


def test_record_round_trips_through_json_and_is_versioned():
    rec = _record()
    text = rec.to_json()
    d = json.loads(text)
    assert d["schema"] == SCHEMA_VERSION == "tipai.tournament/1"
    assert TournamentRecord.from_json(text) == rec
    assert records_from_jsonl(records_to_jsonl([rec, _record(3, 0)])) == [rec, _record(3, 0)]
    scores = rec.audit_scores()
    assert scores.S.tolist() == [0.5, 0.6, 0.6] and scores.P.shape == (3, 1)
    d["schema"] = "tipai.tournament/0"
    with pytest.raises(ValueError, match="schema"):
        TournamentRecord.from_dict(d)


def test_record_rejects_inconsistent_fields():
    with pytest.raises(ValueError, match="winner"):
        _record(winner=3)
    with pytest.raises(ValueError, match="utilities"):
        TournamentRecord(**{**_record().__dict__, "utilities": [0.0]})
