"""(3) Metrics on hand-made data with known values."""

from __future__ import annotations

import math

import pytest
import torch

from tipai_core.auditor.metrics import expected_calibration_error, pair_auc, pair_ece, roc_auc


def test_pair_auc_counts_wins_and_half_ties():
    chosen = [3.0, 1.0, 2.0, 5.0]
    rejected = [1.0, 2.0, 2.0, 4.0]
    assert pair_auc(chosen, rejected) == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert pair_auc(rejected, chosen) == pytest.approx(1 - 2.5 / 4)


def test_roc_auc_of_a_known_ranking():
    # positives 0.9, 0.4 ; negatives 0.5, 0.1, 0.4 -> pairs won: 0.9 beats all 3; 0.4 beats 0.1, ties 0.4
    scores = [0.9, 0.5, 0.4, 0.1, 0.4]
    labels = [1, 0, 1, 0, 0]
    assert roc_auc(scores, labels) == pytest.approx((3 + 1 + 0.5) / 6)
    assert roc_auc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert roc_auc([1, 2, 3, 4], [1, 1, 0, 0]) == 0.0
    assert math.isnan(roc_auc([1, 2], [1, 1]))


def test_ece_of_a_known_binning():
    # 4 bins: (0,.25] holds 0.1, 0.2 (labels 0, 1) -> |0.5 - 0.15| = 0.35, weight 2/6
    #         (.5,.75] holds 0.6 (label 1)           -> |1 - 0.6|  = 0.40, weight 1/6
    #         (.75,1] holds 0.8, 0.9, 1.0 (1, 1, 0)  -> |2/3 - 0.9| = 0.2333, weight 3/6
    probs = [0.1, 0.2, 0.6, 0.8, 0.9, 1.0]
    labels = [0, 1, 1, 1, 1, 0]
    want = 2 / 6 * 0.35 + 1 / 6 * 0.40 + 3 / 6 * (0.9 - 2 / 3)
    assert expected_calibration_error(probs, labels, n_bins=4) == pytest.approx(want)
    assert expected_calibration_error([0.0, 1.0], [0, 1], n_bins=10) == 0.0
    with pytest.raises(ValueError):
        expected_calibration_error([1.5], [1])


def test_pair_ece_of_perfectly_calibrated_and_overconfident_margins():
    # margins with σ(Δ) = 0.75 where 3 of 4 pairs are won is calibrated in both orders
    d = math.log(3.0)
    chosen = torch.tensor([d, d, d, 0.0])
    rejected = torch.tensor([0.0, 0.0, 0.0, d])
    assert pair_ece(chosen, rejected) == pytest.approx(0.0, abs=1e-6)
    # a huge margin on a 50/50 outcome: p ≈ 1 in one bin with accuracy 1/2 -> ECE ≈ 0.5
    assert pair_ece(torch.tensor([50.0, -50.0]), torch.tensor([0.0, 0.0])) == pytest.approx(0.5, abs=1e-6)
