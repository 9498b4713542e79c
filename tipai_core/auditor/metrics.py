"""Validation metrics of the auditor.

    pair-AUC  = (1/n) Σ_k ( 1[S(chosen_k) > S(rejected_k)] + ½ · 1[S(chosen_k) = S(rejected_k)] )
                the probability that the auditor ranks the chosen image of a pair above the rejected one:
                the ROC-AUC computed within each pair (one positive, one negative) and averaged over pairs.
                (It is not the ROC-AUC of all chosen scores against all rejected ones, which also compares
                images of different prompts.)
    ROC-AUC   = Mann–Whitney U / (n_pos · n_neg), ties count ½ (sklearn.metrics.roc_auc_score).
    ECE       = Σ_b (n_b / n) · | mean(y in b) − mean(p in b) |, equal-width bins over [0,1] with the
                edges of sklearn.calibration.calibration_curve(strategy="uniform"): a p on an inner
                edge falls in the lower bin.

ECE of S is taken on the Bradley–Terry probability p = σ(S_a − S_b) of each pair in both orders
((chosen, rejected) with y = 1 and (rejected, chosen) with y = 0), which is what L_pair trains.
"""

from __future__ import annotations

import torch


def _flat(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64).flatten()


def pair_auc(chosen, rejected) -> float:
    """P(S_c > S_r) over pairs, ties ½."""
    c, r = _flat(chosen), _flat(rejected)
    if c.shape != r.shape or c.numel() == 0:
        raise ValueError(f"pair_auc needs two equal non-empty score lists, got {c.numel()} and {r.numel()}")
    return float(((c > r).double() + 0.5 * (c == r).double()).mean())


def roc_auc(scores, labels) -> float:
    """ROC-AUC of scores for binary labels (1 = positive), by ranks with average ties; NaN if one class."""
    s, y = _flat(scores), _flat(labels)
    if s.shape != y.shape:
        raise ValueError("roc_auc: scores and labels differ in length")
    pos, neg = s[y > 0.5], s[y <= 0.5]
    if pos.numel() == 0 or neg.numel() == 0:
        return float("nan")
    # U = Σ over (pos, neg) pairs of 1[pos > neg] + ½·1[pos = neg]
    greater = (pos[:, None] > neg[None, :]).double().sum()
    equal = (pos[:, None] == neg[None, :]).double().sum()
    return float((greater + 0.5 * equal) / (pos.numel() * neg.numel()))


def expected_calibration_error(probs, labels, n_bins: int = 10) -> float:
    """ECE over ``n_bins`` equal-width bins of [0,1] (bin b holds p in (b/n, (b+1)/n], the first also 0)."""
    p, y = _flat(probs), _flat(labels)
    if p.shape != y.shape or p.numel() == 0:
        raise ValueError("expected_calibration_error needs equal non-empty probs and labels")
    if (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must lie in [0,1]")
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)[1:-1]
    idx = torch.searchsorted(edges, p, right=False)  # edges[i-1] < p <= edges[i] -> bin i
    ece = torch.zeros((), dtype=torch.float64)
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            ece += sel.double().mean() * (y[sel].mean() - p[sel].mean()).abs()
    return float(ece)


def pair_ece(chosen, rejected, n_bins: int = 10) -> float:
    """ECE of σ(S_a − S_b) with each pair counted in both orders."""
    c, r = _flat(chosen), _flat(rejected)
    p = torch.sigmoid(c - r)
    return expected_calibration_error(
        torch.cat([p, 1 - p]), torch.cat([torch.ones_like(p), torch.zeros_like(p)]), n_bins
    )
