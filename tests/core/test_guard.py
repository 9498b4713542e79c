"""The guard's promise over random tournaments, and u_i on a hand-computed example."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tipai_core.diffusion.schedules import Schedule
from tipai_core.guard.tournament_guard import TournamentGuard, guarded_utility
from tipai_core.protocols import AuditScores


def _scores(S, F, P, B):
    S = torch.as_tensor(S, dtype=torch.float64)
    return AuditScores(
        S=S,
        S_R=S.clone(),
        F=torch.as_tensor(F, dtype=torch.float64),
        P=torch.as_tensor(P, dtype=torch.float64),
        B=torch.as_tensor(B, dtype=torch.float64),
    )


def _check_promise(scores: AuditScores, guard: TournamentGuard, t: float) -> None:
    dec = guard.select(scores, t)
    tau_P, tau_F = guard.tau_P(t), float(guard.tau_F(t))
    S, F, P, B = scores.S.double(), scores.F.double(), scores.P.double(), scores.B.double()
    valid = [
        i
        for i in range(1, len(scores))
        if S[i] >= S[0] + guard.delta
        and bool((P[i] >= tau_P).all())
        and F[i] >= tau_F
        # a utility that rounds or underflows to 0 (e.g. B subnormal) is no win
        and (S[i] - S[0] - guard.delta) * B[i] > 0
    ]
    if dec.accepted:
        w = dec.winner
        assert w >= 1 and dec.utilities[w] > 0
        assert S[w] >= S[0] + guard.delta
        assert bool((P[w] >= tau_P).all()) and F[w] >= tau_F
        assert dec.utilities[w] == dec.utilities[1:].max()
    else:
        assert dec.winner == 0
        assert valid == []  # nothing passed: the control is kept


def test_guard_promise_over_thousands_of_seeded_tournaments():
    g = torch.Generator().manual_seed(1234)
    accepted = kept = 0
    for case in range(5000):
        n = int(torch.randint(1, 9, (1,), generator=g))
        c = int(torch.randint(1, 4, (1,), generator=g))
        S = torch.rand(n + 1, generator=g, dtype=torch.float64)
        if case % 5 == 0:
            S[1:] = S[0]  # ties with the control
        F = torch.rand(n + 1, generator=g, dtype=torch.float64)
        P = torch.rand(n + 1, c, generator=g, dtype=torch.float64)
        B = torch.rand(n + 1, generator=g, dtype=torch.float64) * (torch.rand(n + 1, generator=g) > 0.1)
        delta = float(torch.rand(1, generator=g)) * 0.3
        tau_P = Schedule.linear(
            torch.rand(c, generator=g).mul(0.5).tolist(), torch.rand(c, generator=g).mul(0.5).tolist()
        )
        tau_F = Schedule.constant(float(torch.rand(1, generator=g)) * 0.5)
        guard = TournamentGuard(delta, tau_P, tau_F)
        t = float(torch.rand(1, generator=g))
        scores = _scores(S, F, P, B)
        _check_promise(scores, guard, t)
        dec = guard.select(scores, t)
        accepted += dec.accepted
        kept += not dec.accepted
    # both branches were exercised many times
    assert accepted > 500 and kept > 500


unit = st.floats(0.0, 1.0, allow_nan=False)


@settings(max_examples=400, deadline=None)
@given(
    rows=st.lists(st.tuples(unit, unit, unit, unit, unit), min_size=2, max_size=9),
    delta=st.floats(0.0, 0.5),
    tau_p=st.tuples(unit, unit),
    tau_f=unit,
    t=unit,
)
def test_guard_promise_hypothesis(rows, delta, tau_p, tau_f, t):
    S, F, P0, P1, B = (list(col) for col in zip(*rows))
    scores = _scores(S, F, [list(p) for p in zip(P0, P1)], B)
    guard = TournamentGuard(delta, Schedule.constant(list(tau_p)), Schedule.constant(tau_f))
    _check_promise(scores, guard, t)


def test_guarded_utility_hand_example():
    # control S_0 = 0.5; δ = 0.1; τ_P = (0.6, 0.5); τ_F = 0.4
    scores = _scores(
        S=[0.5, 0.8, 0.9, 0.55, 0.95, 0.7],
        F=[0.9, 0.9, 0.9, 0.9, 0.3, 0.9],
        P=[[1, 1], [0.7, 0.6], [0.5, 0.9], [1, 1], [1, 1], [0.6, 0.5]],
        B=[1, 0.5, 1, 1, 1, 1],
    )
    u = guarded_utility(scores, 0.1, [0.6, 0.5], 0.4)
    # 1: (0.8-0.5-0.1)·0.5 = 0.1; 2: fails P class 0; 3: below margin; 4: fails F; 5: 0.1 exactly at thresholds
    expected = torch.tensor([0.0, 0.1, 0.0, 0.0, 0.0, 0.7 - 0.5 - 0.1], dtype=torch.float64)
    torch.testing.assert_close(u, expected, rtol=0, atol=1e-15)
    dec = TournamentGuard(0.1, Schedule.constant([0.6, 0.5]), Schedule.constant(0.4)).select(scores, 0.3)
    assert dec.accepted and dec.winner == int(torch.argmax(expected))


def test_thresholds_follow_their_schedules():
    scores = _scores(S=[0.0, 1.0], F=[1.0, 0.5], P=[[1.0], [1.0]], B=[1.0, 1.0])
    guard = TournamentGuard(0.0, Schedule.constant(0.0), Schedule.linear(0.2, 0.8))
    assert guard.select(scores, 0.25).accepted  # τ_F(0.25) = 0.35 <= 0.5
    assert not guard.select(scores, 0.75).accepted  # τ_F(0.75) = 0.65 > 0.5
    assert guard.select(scores, 0.5).accepted  # τ_F(0.5) = 0.5, F >= τ_F passes


def test_guard_rejects_bad_input():
    with pytest.raises(ValueError, match="delta"):
        TournamentGuard(delta=-0.1)
    with pytest.raises(ValueError, match="tau_P"):
        guarded_utility(_scores([0, 1], [1, 1], [[1, 1], [1, 1]], [1, 1]), 0.0, torch.tensor([0.1, 0.2, 0.3]), 0.0)
    with pytest.raises(ValueError, match="N >= 1"):
        TournamentGuard().select(_scores([0.5], [1], [[1]], [1]), 0.0)
