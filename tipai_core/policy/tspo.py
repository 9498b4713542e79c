"""The TSPO objective (Stage B3): REINFORCE over tournaments with tournament-shaped credits.

For a tournament in state s with candidates a_1..a_N ~ μ(· | s) and guarded utilities u_1..u_N:

    credits   leave-one-out   A_i = u_i - max_{j≠i} u_j          (only a strict winner gets A_i > 0)
              soft            A_i = softmax(u / τ)_i - 1/N      (Σ_i A_i = 0)
    weights   w_i = min(ρ̄, π_θ(a_i | s) / μ(a_i | s))            clipped importance weight; 1 on-policy
    shaped    Â_i = (A_i + λ_div · d_i) / std(A + λ_div · d) - b,   b = Σ_i w_i Â'_i / Σ_i w_i   (over the batch)
    loss      L = -E[w_i · Â_i · log π_θ(a_i | s)] - β · E_s[H(π_θ(· | s))] + λ_c · E_s[E_{a~π_θ}[c(a)]]

The std makes β and λ_c mean the same at any utility scale. b is a batch-constant baseline (the
translation of BanditNet): leave-one-out credits are mostly negative (every loser gets -max u), and
with clipped weights a mean-negative credit pushes down whatever the behaviour policy drew most, so
offline training drifts towards μ's favourites; centring the credits under the weights removes that.
On-policy (w = 1) b is the batch mean, a valid baseline. Optionally (``self_normalise``) the weights
are divided by their batch mean (weighted importance sampling).

d_i = mean_{j≠i} ‖f_i - f_j‖ is the diversity of candidate i: the distance of its masked features to the
other candidates' (centred over the tournament so that it only reorders credit). c(a) is the compute of
one candidate: its denoiser calls, d·(1 + r)·[invert] + d + 1 (costs.py; every candidate costs one crop
decode and one auditor image whatever its knobs, so those constants drop out). The cost term is the
exact expectation under the factorised π_θ, so it needs no sampling.

The listwise refinement of the judge fits a scoring function to ranked candidates with ListNet
(cross-entropy between softmax(target) and softmax(score)) or the Plackett–Luce likelihood.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import cast

import torch

from ..records.costs import editor_calls
from .actions import Action, PolicyState
from .policy_net import PolicyNet, state_features


def loo_credits(u: torch.Tensor) -> torch.Tensor:
    """A_i = u_i - max_{j≠i} u_j over the last dim (N ≥ 2; with N = 1 the credit is u itself)."""
    n = u.shape[-1]
    if n == 1:
        return u.clone()
    top2 = u.topk(2, dim=-1).values
    best, second = top2[..., :1], top2[..., 1:2]
    # the max over the others is the best one, except for the best itself, whose rival is the runner-up
    is_best = u == best
    others = torch.where(is_best, second, best)
    # ties at the top: every tied best sees an equal rival, so nobody gets positive credit
    return u - others


def soft_credits(u: torch.Tensor, tau: float) -> torch.Tensor:
    """A_i = softmax(u / τ)_i - 1/N over the last dim."""
    if not tau > 0:
        raise ValueError(f"the soft-credit temperature τ must be > 0, got {tau}")
    return torch.softmax(u / tau, dim=-1) - 1.0 / u.shape[-1]


def diversity(features: torch.Tensor) -> torch.Tensor:
    """d_i = mean_{j≠i} ‖f_i - f_j‖ for features ``[..., N, F]``, centred over N; ``[..., N]``."""
    n = features.shape[-2]
    if n < 2:
        return torch.zeros(features.shape[:-1], dtype=features.dtype)
    dist = torch.cdist(features, features)
    d = dist.sum(-1) / (n - 1)
    return d - d.mean(-1, keepdim=True)


def candidate_cost(depth: int, editor: str, refine_iters: int = 0) -> float:
    """c(a): denoiser calls of one candidate, d·(1 + r)·[invert] + d + 1 (its batch rows in costs.py)."""
    return float(editor_calls(editor, depth, refine_iters))


def expected_cost(policy: PolicyNet, table: dict[str, torch.Tensor], refine_iters: int = 0) -> torch.Tensor:
    """E_{a~π(·|s)}[c(a)] ``[B]``; knobs the policy does not set keep the Action default."""
    default = Action()
    depths = policy.choices.get("depth", (default.depth,))
    editors = policy.choices.get("editor", (default.editor,))
    c = torch.tensor([[candidate_cost(d, e, refine_iters) for e in editors] for d in depths], dtype=torch.float32)
    batch = next(iter(table.values())).shape[0]
    pd = table["depth"].exp() if "depth" in table else torch.ones(batch, 1)
    pe = table["editor"].exp() if "editor" in table else torch.ones(batch, 1)
    return torch.einsum("bd,de,be->b", pd, c.to(pd.device), pe)


@dataclass
class TournamentBatch:
    """T tournaments of N candidates, as tensors (what the loss reads; no images, no records).

    feats φ(s) ``[T, D]``; max_depth ``[T]``; idx knob -> choice indices ``[T, N]``; valid ``[T, N]`` (the
    action is one π_θ can draw); behaviour_logp log μ(a_i | s) ``[T, N]``; u ``[T, N]`` (u_1..u_N);
    features ``[T, N, F]`` for the diversity term, or None.
    """

    feats: torch.Tensor
    max_depth: torch.Tensor
    idx: dict[str, torch.Tensor]
    valid: torch.Tensor
    behaviour_logp: torch.Tensor
    u: torch.Tensor
    features: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.u.shape[0])

    def take(self, rows: torch.Tensor) -> "TournamentBatch":
        return TournamentBatch(
            self.feats[rows],
            self.max_depth[rows],
            {k: v[rows] for k, v in self.idx.items()},
            self.valid[rows],
            self.behaviour_logp[rows],
            self.u[rows],
            None if self.features is None else self.features[rows],
        )


@dataclass
class TSPOConfig:
    credit: str = "loo"  # "loo" or "soft"
    tau: float = 0.1  # soft-credit temperature
    beta: float = 0.01  # entropy bonus β
    lambda_c: float = 0.0  # compute cost λ_c (per denoiser call of a candidate)
    lambda_div: float = 0.0  # diversity λ_div
    clip: float = 5.0  # ρ̄, the importance-weight clip
    refine_iters: int = 0
    normalise: bool = True  # divide credits by their batch std, so β and λ_c mean the same at any utility scale
    self_normalise: bool = False  # divide the clipped weights by their batch mean (weighted importance sampling)
    centre: bool = True  # subtract b = Σ w_i A_i / Σ w_i, the weighted batch mean of the credits

    def __post_init__(self) -> None:
        if self.credit not in ("loo", "soft"):
            raise ValueError(f"credit must be 'loo' or 'soft', got {self.credit!r}")
        if not self.clip > 0:
            raise ValueError(f"the importance-weight clip must be > 0, got {self.clip}")


@dataclass
class TSPOParts:
    loss: float
    pg: float
    entropy: float
    cost: float
    mean_weight: float
    extra: dict = field(default_factory=dict)


def tspo_loss(policy: PolicyNet, batch: TournamentBatch, cfg: TSPOConfig) -> tuple[torch.Tensor, TSPOParts]:
    """L of the module docstring for one batch; returns the loss and its parts (floats)."""
    table = policy.log_probs_table(batch.feats, batch.max_depth)
    n = batch.u.shape[1]
    # [T, N]; knob_names is never empty (check_choices), so the sum is a tensor
    logp = cast(torch.Tensor, sum(table[k].gather(1, batch.idx[k].clamp_min(0)) for k in policy.knob_names))
    credit = loo_credits(batch.u) if cfg.credit == "loo" else soft_credits(batch.u, cfg.tau)
    if cfg.lambda_div > 0 and batch.features is not None:
        credit = credit + cfg.lambda_div * diversity(batch.features)
    credit = credit.float()
    if cfg.normalise:
        scale = credit[batch.valid].std() if batch.valid.sum() > 1 else torch.tensor(1.0)
        credit = credit / scale.clamp_min(1e-6)
    w = torch.exp(logp.detach().double() - batch.behaviour_logp.double()).clamp(max=cfg.clip).float()
    w = torch.where(batch.valid, w, torch.zeros_like(w))
    if cfg.self_normalise and batch.valid.any():
        w = w / w[batch.valid].mean().clamp_min(1e-12)
    if cfg.centre and batch.valid.any():
        credit = credit - (w * credit)[batch.valid].sum() / w[batch.valid].sum().clamp_min(1e-12)
    pg = -(w * credit * torch.where(batch.valid, logp, torch.zeros_like(logp))).sum() / max(1, len(batch) * n)
    ent = policy.entropy(table).mean()
    cost = expected_cost(policy, table, cfg.refine_iters).mean()
    loss = pg - cfg.beta * ent + cfg.lambda_c * cost
    parts = TSPOParts(
        float(loss.detach()),
        float(pg.detach()),
        float(ent.detach()),
        float(cost.detach()),
        float(w[batch.valid].mean()) if batch.valid.any() else 0.0,
    )
    return loss, parts


class _Rows:
    """The rows of one N while records stream past: only small per-tournament lists are kept."""

    def __init__(self, knob_names):
        self.feats, self.depth, self.logp_b, self.u, self.valid = [], [], [], [], []
        self.idx: dict[str, list] = {k: [] for k in knob_names}

    def add(self, policy: PolicyNet, rec) -> None:
        st = PolicyState.from_dict(rec.state)
        self.feats.append(state_features(st, policy.n_classes))
        self.depth.append(st.max_depth)
        self.logp_b.append([float(v) for v in rec.log_probs])
        self.u.append([float(v) if math.isfinite(float(v)) else 0.0 for v in rec.utilities[1:]])
        rows: dict[str, list[int]] = {k: [] for k in policy.knob_names}
        row_valid = []
        for a in rec.actions:
            j = policy.action_index(a)
            row_valid.append(j is not None)
            for k in policy.knob_names:
                rows[k].append(-1 if j is None else j[k])
        for k in policy.knob_names:
            self.idx[k].append(rows[k])
        self.valid.append(row_valid)

    def batch(self, candidate_features=None) -> TournamentBatch:
        return TournamentBatch(
            feats=torch.stack(self.feats),
            max_depth=torch.tensor(self.depth),
            idx={k: torch.tensor(v, dtype=torch.long) for k, v in self.idx.items()},
            valid=torch.tensor(self.valid),
            behaviour_logp=torch.tensor(self.logp_b, dtype=torch.float64),
            u=torch.tensor(self.u, dtype=torch.float64),
            features=candidate_features,
        )


def records_to_batches(policy: PolicyNet, records) -> dict[int, TournamentBatch]:
    """N -> the batch of all tournaments with N candidates, from an iterable of records, streamed: a record
    is dropped as soon as its row is taken, so millions of logged tournaments cost only their small rows.

    An action with a knob value that the policy cannot draw is kept for the credit baseline but has no
    gradient (``valid`` False).
    """
    groups: dict[int, _Rows] = {}
    for rec in records:
        groups.setdefault(len(rec.actions), _Rows(policy.knob_names)).add(policy, rec)
    if not groups:
        raise ValueError("no tournament records to learn from")
    return {n: rows.batch() for n, rows in groups.items()}


def records_to_batch(policy: PolicyNet, records, candidate_features=None) -> TournamentBatch:
    """The one batch of records that all have the same N (``records_to_batches`` for mixed N)."""
    batches = records_to_batches(policy, records)
    if len(batches) > 1:
        raise ValueError(f"tournaments of different N ({sorted(batches)}) cannot share a batch")
    batch = next(iter(batches.values()))
    batch.features = candidate_features
    return batch


# ----------------------------------------------------------------------------- listwise judge refinement


def listnet_loss(scores: torch.Tensor, target: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """ListNet: -Σ_i softmax(target/τ)_i · log softmax(scores)_i, averaged over lists ``[T, M]``."""
    return -(torch.softmax(target / tau, -1) * torch.log_softmax(scores, -1)).sum(-1).mean()


def plackett_luce_nll(scores: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """-log PL(order | scores) = Σ_k [logsumexp(s_{o_k..o_M}) - s_{o_k}], averaged over lists ``[T, M]``."""
    s = scores.gather(-1, order)
    # the reversed cumulative logsumexp gives the normaliser of each stage of the ranking
    tail = torch.logcumsumexp(s.flip(-1), -1).flip(-1)
    return (tail - s).sum(-1).mean()


def refine_judge(
    x: torch.Tensor,
    target: torch.Tensor,
    loss: str = "listnet",
    steps: int = 300,
    lr: float = 0.05,
    weight_decay: float = 1e-3,
) -> torch.Tensor:
    """A linear judge s = x · w fit listwise to ``target`` ``[T, M]`` from score components ``x`` ``[T, M, F]``.

    Returns w ``[F]``. ``loss`` is "listnet" (target utilities) or "pl" (the ranking of the target).
    """
    if loss not in ("listnet", "pl"):
        raise ValueError(f"loss must be 'listnet' or 'pl', got {loss!r}")
    x, target = x.float(), target.float()
    w = torch.zeros(x.shape[-1], requires_grad=True)
    opt = torch.optim.Adam([w], lr=lr, weight_decay=weight_decay)
    order = target.argsort(-1, descending=True)
    for _ in range(steps):
        s = x @ w
        obj = listnet_loss(s, target) if loss == "listnet" else plackett_luce_nll(s, order)
        opt.zero_grad()
        obj.backward()
        opt.step()
    return w.detach()


def tspo_step(policy: PolicyNet, opt: torch.optim.Optimizer, batch: TournamentBatch, cfg: TSPOConfig) -> TSPOParts:
    """One gradient step on L."""
    loss, parts = tspo_loss(policy, batch, cfg)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return parts
