"""A synthetic knob bandit with known answers: the test bed of TSPO (the issue's "Must show").

A candidate with knobs a, drawn in a state with progress t, truly beats the control with

    p(a | t) = σ(b + Σ_k e_k[a_k] + g(t)[a_cfg])          g: high CFG inside helps early, hurts late

and costs c(a) = d·[invert] + d + 1 denoiser calls (tspo.candidate_cost). A winning candidate has a
guarded utility u = gain ~ U(0.5, 1); a losing one has u = 0. Deeper inversion wins a little more
often but costs much more, so the oracle (argmax p) is expensive and a compute-aware policy can get
close to its win rate for far less. Exact expectations under a factorised policy are computed by
enumerating all knob combinations.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import cast

import torch

from ..policy.actions import Action, PolicyState
from ..policy.policy_net import DEFAULT_CHOICES, PolicyNet
from ..policy.tspo import candidate_cost
from ..records.costs import Costs
from ..records.tournament_record import TournamentRecord

# logit effects per knob choice (in DEFAULT_CHOICES order)
EFFECTS = {
    "dilation": (0.0, 0.6, -0.4),
    "feather": (-0.5, 0.4, 0.2),
    "cfg_inside": (0.0, 0.0, 0.0),
    "emphasis": (0.0, 0.5),
    "jitter": (0.4, -0.2),
    "depth": (0.0, 0.15, 0.3),
    "editor": (0.15, 0.0),
}
CFG_EARLY = (-0.6, 0.1, 0.7)  # g(t) for t < 0.5; reversed late
BIAS = -1.0
CONTEXTS = (0.2, 0.8)  # an early and a late audit


@dataclass
class KnobBandit:
    n_steps: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        self.choices = dict(DEFAULT_CHOICES)
        self.knobs = tuple(sorted(self.choices))
        grids = [range(len(self.choices[k])) for k in self.knobs]
        self.all_idx = torch.tensor(list(itertools.product(*grids)))  # [A, K] every knob combination
        self._p: dict[float, list[float]] = {}

    def state(self, t: float) -> PolicyState:
        step = int(round(t * self.n_steps))
        return PolicyState(
            step=step,
            n_steps=self.n_steps,
            t=t,
            sigma=10.0 * (1 - t) + 0.1,
            region_area=0.1,
            region_score=1.0,
            audit_scale=1.0,
            max_depth=max(3, step),
        )

    def logit(self, idx: torch.Tensor, t: float) -> torch.Tensor:
        """Win logit of knob indices ``[..., K]`` (columns in ``self.knobs`` order)."""
        z = torch.full(idx.shape[:-1], BIAS, dtype=torch.float64)
        for j, k in enumerate(self.knobs):
            z = z + torch.tensor(EFFECTS[k], dtype=torch.float64)[idx[..., j]]
        g = torch.tensor(CFG_EARLY if t < 0.5 else CFG_EARLY[::-1], dtype=torch.float64)
        return z + g[idx[..., self.knobs.index("cfg_inside")]]

    def win_prob(self, action: Action, t: float) -> float:
        if t not in self._p:  # p(a | t) of every combination, once per context
            self._p[t] = torch.sigmoid(self.logit(self.all_idx, t)).tolist()
        flat = 0
        for k in self.knobs:  # all_idx is itertools.product order: mixed radix, last knob fastest
            flat = flat * len(self.choices[k]) + self.choices[k].index(getattr(action, k))
        return self._p[t][flat]

    def cost(self, action: Action) -> float:
        return candidate_cost(action.depth, action.editor)

    def _cost_all(self) -> torch.Tensor:
        d, e = self.knobs.index("depth"), self.knobs.index("editor")
        return torch.tensor(
            [
                candidate_cost(self.choices["depth"][i], self.choices["editor"][j])
                for i, j in zip(self.all_idx[:, d].tolist(), self.all_idx[:, e].tolist())
            ],
            dtype=torch.float64,
        )

    # ------------------------------------------------------------------ exact evaluation

    def _action_probs(self, policy, t: float) -> torch.Tensor:
        """π(a | s_t) over every combination ``[A]``, for a PolicyNet or a FixedKnobPolicy."""
        if isinstance(policy, PolicyNet):
            with torch.no_grad():
                st = self.state(t)
                table = policy.log_probs_table(policy.features([st]), torch.tensor([st.max_depth]))
            logp = cast(torch.Tensor, sum(table[k][0].double()[self.all_idx[:, j]] for j, k in enumerate(self.knobs)))
            return logp.exp()
        probs = torch.ones(len(self.all_idx), dtype=torch.float64)
        for j, k in enumerate(self.knobs):
            choices, p = policy.knobs[k]
            knob_p = torch.tensor(
                [p[list(choices).index(c)] if c in choices else 0.0 for c in self.choices[k]], dtype=torch.float64
            )
            probs = probs * knob_p[self.all_idx[:, j]]
        return probs

    def evaluate(self, policy) -> dict:
        """Expected per-candidate win rate and compute (denoiser calls) under ``policy``, averaged over contexts."""
        win = cost = 0.0
        for t in CONTEXTS:
            pi = self._action_probs(policy, t)
            win += float((pi * torch.sigmoid(self.logit(self.all_idx, t))).sum()) / len(CONTEXTS)
            cost += float((pi * self._cost_all()).sum()) / len(CONTEXTS)
        return {"win_rate": win, "cost": cost}

    def oracle(self) -> dict:
        """The policy that always plays argmax_a p(a | t): the best win rate, whatever it costs."""
        win = cost = 0.0
        for t in CONTEXTS:
            p = torch.sigmoid(self.logit(self.all_idx, t))
            j = int(p.argmax())
            win += float(p[j]) / len(CONTEXTS)
            cost += float(self._cost_all()[j]) / len(CONTEXTS)
        return {"win_rate": win, "cost": cost}

    def uniform(self):
        from ..policy.actions import FixedKnobPolicy

        return FixedKnobPolicy({k: (v, [1.0 / len(v)] * len(v)) for k, v in self.choices.items()})

    # ------------------------------------------------------------------ playing tournaments

    def play(self, policy, n_tournaments: int, n: int, gen: torch.Generator) -> list[TournamentRecord]:
        """Tournaments drawn by ``policy`` (log-probs recorded as the behaviour policy), as log records.

        ``true_win`` holds the ground truth (the Bernoulli outcome), the utilities the guarded gains.
        """
        records = []
        for _ in range(n_tournaments):
            t = CONTEXTS[int(torch.randint(0, len(CONTEXTS), (1,), generator=gen))]
            st = self.state(t)
            pseed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
            actions, logp = policy.propose(st, n, torch.Generator().manual_seed(pseed))
            p = torch.tensor([self.win_prob(a, t) for a in actions], dtype=torch.float64)
            win = torch.rand(n, generator=gen, dtype=torch.float64) < p
            gain = 0.5 + 0.5 * torch.rand(n, generator=gen, dtype=torch.float64)
            u = torch.where(win, gain, torch.zeros_like(gain))
            s = [0.0] + (u + 0.0).tolist()  # the judge sees the gain as a score margin over S_0 = 0
            winner = 1 + int(u.argmax()) if bool(u.max() > 0) else 0
            calls = int(sum(self.cost(a) for a in actions))
            records.append(
                TournamentRecord(
                    step=st.step,
                    n_steps=st.n_steps,
                    t=t,
                    sigma=st.sigma,
                    region={
                        "index": 0,
                        "bbox": [0, 0, 8, 8],
                        "area": 64,
                        "score": 1.0,
                        "audit_scale": 1.0,
                        "view_factor": 1,
                    },
                    state=st.to_dict(),
                    actions=[a.to_dict() for a in actions],
                    log_probs=logp.tolist(),
                    policy_seed=pseed,
                    seeds=[a.seed for a in actions],
                    scores={
                        "S": s,
                        "S_R": s,
                        "F": [1.0] * (n + 1),
                        "B": [1.0] * (n + 1),
                        "P": [[1.0]] * (n + 1),
                        "classes": ["nsfw"],
                    },
                    utilities=[0.0] + u.tolist(),
                    winner=winner,
                    accepted=winner > 0,
                    guard={"delta": 0.0, "tau_P": [0.0], "tau_F": 0.0},
                    alpha=1.0,
                    costs=Costs(
                        denoiser_calls=calls,
                        denoiser_evals=calls,
                        decode_calls=1,
                        decoded_images=n,
                        auditor_calls=1,
                        auditor_images=n + 1,
                    ),
                    true_win=[None] + [bool(w) for w in win.tolist()],
                )
            )
        return records

    def knob_tables(self, policy, t: float) -> dict[str, torch.Tensor]:
        """π_k(· | s_t) per knob ``[K_k]`` (float64), over ``self.choices[k]``, for a PolicyNet or a FixedKnobPolicy."""
        st = self.state(t)
        if isinstance(policy, PolicyNet):
            if policy.choices != self.choices:
                raise ValueError(
                    f"the policy's knobs are not the bandit's: { {k: list(v) for k, v in policy.choices.items()} }"
                )
            with torch.no_grad():
                table = policy.log_probs_table(policy.features([st]), torch.tensor([st.max_depth]))
            return {k: table[k][0].double().exp() for k in self.knobs}
        out = {}
        for k in self.knobs:
            choices, p = policy._probs(k, st)
            out[k] = torch.tensor(
                [float(p[choices.index(c)]) if c in choices else 0.0 for c in self.choices[k]], dtype=torch.float64
            )
        return out

    def play_batch(self, policy, n_tournaments: int, n: int, gen: torch.Generator):
        """``play`` without the records: T tournaments straight into a ``tspo.TournamentBatch``, vectorised.

        The context of each tournament is uniform over CONTEXTS; each knob of each candidate is drawn from
        π_k(· | s_t) (the behaviour policy, whose log-probs the batch keeps); the candidate wins with
        p(a | t) and then has u = gain ~ U(0.5, 1), else u = 0. Only a PolicyNet can be the learner, so
        the batch's features are the PolicyNet's φ(s_t).
        """
        from ..policy.tspo import TournamentBatch

        ctx = torch.randint(0, len(CONTEXTS), (n_tournaments,), generator=gen)
        idx = torch.zeros(n_tournaments, n, len(self.knobs), dtype=torch.long)
        logp = torch.zeros(n_tournaments, n, dtype=torch.float64)
        z = torch.zeros(n_tournaments, n, dtype=torch.float64)
        for c, t in enumerate(CONTEXTS):
            rows = ctx == c
            m = int(rows.sum())
            tables = self.knob_tables(policy, t)
            for j, k in enumerate(self.knobs):
                pick = torch.multinomial(tables[k], m * n, replacement=True, generator=gen).view(m, n)
                idx[rows, :, j] = pick
                logp[rows] += tables[k].log()[pick]
            if m:
                z[rows] = self.logit(idx[rows], t)
        win = torch.rand(n_tournaments, n, generator=gen, dtype=torch.float64) < torch.sigmoid(z)
        gain = 0.5 + 0.5 * torch.rand(n_tournaments, n, generator=gen, dtype=torch.float64)
        n_classes = policy.n_classes if isinstance(policy, PolicyNet) else 1
        states = [self.state(t) for t in CONTEXTS]
        phi = torch.stack([PolicyNet.features_of(s, n_classes) for s in states])
        return TournamentBatch(
            feats=phi[ctx],
            max_depth=torch.tensor([s.max_depth for s in states])[ctx],
            idx={k: idx[..., j] for j, k in enumerate(self.knobs)},
            valid=torch.ones(n_tournaments, n, dtype=torch.bool),
            behaviour_logp=logp,
            u=torch.where(win, gain, torch.zeros_like(gain)),
        )


def calibration_records(
    n_tournaments: int, n: int, gen: torch.Generator, classes: tuple[str, ...] = ("nsfw", "violence/weapon")
) -> list[TournamentRecord]:
    """Synthetic tournaments whose true win probability is known: Pr[win | m] = σ(4m - 2), m = S_i - S_0.

    The raw judge's margin squashed, σ(m), is badly calibrated against it (too confident near 0, not
    enough for large m), which is what calibration must fix. P and F of true winners run higher late.
    """
    records = []
    for i in range(n_tournaments):
        t = float(torch.rand(1, generator=gen))
        m = 1.5 * torch.randn(n, generator=gen, dtype=torch.float64)
        win = torch.rand(n, generator=gen, dtype=torch.float64) < torch.sigmoid(4 * m - 2)
        s = [0.5] + (0.5 + m).tolist()
        u = torch.rand(n, len(classes) + 1, generator=gen, dtype=torch.float64)
        P = [[1.0] * len(classes)] + ((0.6 + 0.4 * u[:, 1:]) ** torch.where(win, 1.0, 2.0)[:, None]).tolist()
        F = [1.0] + ((0.5 + 0.5 * u[:, 0]) * torch.where(win, 1.0, 0.8)).tolist()
        st = PolicyState(
            step=int(t * 20),
            n_steps=20,
            t=t,
            sigma=1.0,
            region_area=0.1,
            region_score=1.0,
            audit_scale=1.0,
            max_depth=int(t * 20),
        )
        records.append(
            TournamentRecord(
                step=st.step,
                n_steps=20,
                t=t,
                sigma=1.0,
                region={
                    "index": 0,
                    "bbox": [0, 0, 8, 8],
                    "area": 64,
                    "score": 1.0,
                    "audit_scale": 1.0,
                    "view_factor": 1,
                },
                state=st.to_dict(),
                actions=[Action(seed=j).to_dict() for j in range(n)],
                log_probs=[0.0] * n,
                policy_seed=i,
                seeds=list(range(n)),
                scores={"S": s, "S_R": s, "F": F, "B": [1.0] * (n + 1), "P": P, "classes": list(classes)},
                utilities=[0.0] * (n + 1),
                winner=0,
                accepted=False,
                guard={"delta": 0.0, "tau_P": [0.0], "tau_F": 0.0},
                alpha=1.0,
                true_win=[None] + [bool(w) for w in win.tolist()],
            )
        )
    return records
