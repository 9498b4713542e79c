"""Coarse early, fine late: the global audit steps of the schedule and the staged policy."""

import math

import pytest
import torch

from tipai_core.loop.audit_schedule import AuditSchedule
from tipai_core.policy.actions import FixedKnobPolicy, PolicyState
from tipai_core.policy.staged import CoarseToFinePolicy


def state(step: int) -> PolicyState:
    return PolicyState(step, 20, step / 20, 1.0, 1.0, 1.0, 1.0, max_depth=step)


def test_global_steps_of_the_schedule():
    sch = AuditSchedule(every=3, first=3, skip_last=3, scales=(1.0,), global_until=7)
    assert [i for i in sch.steps(20) if sch.is_global(i)] == [3, 6]
    assert [i for i in sch.steps(20) if not sch.is_global(i)] == [9, 12, 15]
    assert sch.to_dict()["global_until"] == 7
    with pytest.raises(ValueError, match="global_until must be >= 0"):
        AuditSchedule(global_until=-1)


def test_coarse_to_fine_draws_from_the_stage_of_the_step_with_its_log_prob():
    coarse = FixedKnobPolicy({"scope": (["global"], [1.0]), "depth": ([3, 6], [0.5, 0.5])})
    fine = FixedKnobPolicy({"scope": (["local"], [1.0]), "depth": ([1, 2], [0.25, 0.75])})
    pol = CoarseToFinePolicy(coarse, fine, until_step=7)
    early, lp_early = pol.propose(state(6), 8, torch.Generator().manual_seed(0))
    late, lp_late = pol.propose(state(9), 8, torch.Generator().manual_seed(0))
    assert {a.scope for a in early} == {"global"} and {a.scope for a in late} == {"local"}
    for a, lp in zip(early, lp_early):
        assert math.isclose(pol.log_prob(a, state(6)), float(lp)) and math.isclose(float(lp), math.log(0.5))
    for a, lp in zip(late, lp_late):
        assert math.isclose(pol.log_prob(a, state(9)), float(lp))
    assert pol.log_prob(early[0], state(9)) == -math.inf  # a global action is impossible late
    assert pol.wants_control_scores is False
