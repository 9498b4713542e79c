"""Stage A losses of the auditor heads, on frozen backbone features of a preference pair (c = chosen, r = rejected).

    L_pair   = −log σ(S(p, I_c) − S(p, I_r))                                  Bradley–Terry on the global score
    L_patch  = (1/K) Σ_k −log σ(s_{j_k}(p, I_c) − s_{j_k}(p, I_r))            on the K mined patches j_1..j_K
    L_policy = (1/C) Σ_c BCE(ℓ_c(I_r), 1[c = κ(r)]) + (1/C) Σ_c BCE(ℓ_c(I_c), 0)   κ(r): reason code of the Category
    L_sal    = 1 − (2 Σ_j r_κ(j) m_j + ε) / (Σ_j r_κ(j) + Σ_j m_j + ε)          Dice of the risk map vs the mask

The chosen image of a DETONATE pair is the safe one, so all its policy logits are pushed down; a pair has
one Category, so the rejected image is a positive of its reason code and a negative of the other classes.
Pairs without a known reason code (κ = −1) or without a mask skip the terms that need them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .heads import AuditorHeads


@dataclass
class PairBatch:
    text: torch.Tensor  # [n,D]
    g_c: torch.Tensor  # [n,D]
    g_r: torch.Tensor  # [n,D]
    z_c: torch.Tensor  # [n,h,w,D]
    z_r: torch.Tensor  # [n,h,w,D]
    patches: torch.Tensor  # [n,K] flat indices of the mined patches
    reason: torch.Tensor  # [n] class index or −1
    mask: torch.Tensor  # [n,h,w] region coverage of the rejected image's fault (zeros if none)
    has_mask: torch.Tensor  # [n] bool


def dice_loss(prob: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    inter = (prob * target).flatten(1).sum(1)
    return 1.0 - (2 * inter + eps) / (prob.flatten(1).sum(1) + target.flatten(1).sum(1) + eps)


class StageALoss(nn.Module):
    """w_pair·L_pair + w_patch·L_patch + w_policy·L_policy + w_sal·L_sal; forward returns (total, parts)."""

    def __init__(
        self, heads: AuditorHeads, w_pair: float = 1.0, w_patch: float = 0.5, w_policy: float = 0.5, w_sal: float = 0.5
    ) -> None:
        super().__init__()
        self.heads = heads
        self.w = {"pair": w_pair, "patch": w_patch, "policy": w_policy, "sal": w_sal}

    def forward(self, b: PairBatch) -> tuple[torch.Tensor, dict[str, float]]:
        h = self.heads
        zero = b.text.new_zeros(())
        s_c, s_r = h.global_score(b.g_c, b.text, b.z_c), h.global_score(b.g_r, b.text, b.z_r)
        l_pair = F.softplus(-(s_c - s_r)).mean()

        pc = h.patch_scores(b.z_c, b.text).flatten(1).gather(1, b.patches)
        pr = h.patch_scores(b.z_r, b.text).flatten(1).gather(1, b.patches)
        l_patch = F.softplus(-(pc - pr)).mean()

        lc, lr = h.policy_logits(b.g_c, b.z_c), h.policy_logits(b.g_r, b.z_r)
        l_policy = F.binary_cross_entropy_with_logits(lc, torch.zeros_like(lc))
        known = b.reason >= 0
        if known.any():
            target = F.one_hot(b.reason[known], lr.shape[1]).to(lr)
            l_policy = l_policy + F.binary_cross_entropy_with_logits(lr[known], target)

        l_sal = zero
        sal = known & b.has_mask
        if sal.any():
            risk = torch.sigmoid(h.risk_logits(b.z_r[sal]))  # [m,C,h,w]
            risk = risk.gather(1, b.reason[sal].view(-1, 1, 1, 1).expand(-1, 1, *risk.shape[2:]))[:, 0]
            l_sal = dice_loss(risk, b.mask[sal]).mean()

        parts = {"pair": l_pair, "patch": l_patch, "policy": l_policy, "sal": l_sal}
        total = cast(torch.Tensor, sum(self.w[k] * v for k, v in parts.items()))  # four tensor terms
        return total, {k: float(v.detach()) for k, v in parts.items()}
