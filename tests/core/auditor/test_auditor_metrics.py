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


# ----------------------------------------------------------------------------- agreement with scikit-learn
# scikit-learn is installed in the CI host and the dev venv; a missing one is a broken environment, not a skip.

import numpy as np  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402


def random_scores(seed: int, n: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]  # both classes present
    scores = rng.normal(size=n) + 0.8 * labels
    return (np.round(scores, 1) if ties else scores), labels  # rounding makes many ties


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_roc_auc_matches_sklearn(seed, ties):
    scores, labels = random_scores(seed, 40 + 17 * seed, ties)
    assert roc_auc(torch.from_numpy(scores), torch.from_numpy(labels)) == pytest.approx(
        roc_auc_score(labels, scores), abs=1e-12
    )


@pytest.mark.parametrize("seed", range(4))
def test_pair_auc_is_sklearn_roc_auc_within_each_pair(seed):
    rng = np.random.default_rng(seed)
    chosen = np.round(rng.normal(size=50) + 0.5, 1)
    rejected = np.round(rng.normal(size=50), 1)
    per_pair = [roc_auc_score([1, 0], [c, r]) for c, r in zip(chosen, rejected)]  # 1, 0 or ½ for a tie
    assert pair_auc(chosen, rejected) == pytest.approx(np.mean(per_pair), abs=1e-12)


def test_pair_auc_is_not_the_pooled_roc_auc():
    # Two prompts on different scales: each chosen image wins its own pair, but the pooled ROC-AUC also
    # compares chosen 1 with rejected 9 of the other prompt and counts a loss.
    chosen, rejected = [10.0, 1.0], [9.0, 0.0]
    assert pair_auc(chosen, rejected) == 1.0
    assert roc_auc_score([1, 1, 0, 0], chosen + rejected) == pytest.approx(0.75)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_bins", [5, 10, 15])
def test_ece_matches_sklearn_calibration_curve(seed, n_bins):
    rng = np.random.default_rng(seed)
    probs = rng.beta(2, 2, size=300)
    labels = (rng.random(300) < probs**1.5).astype(int)  # miscalibrated on purpose
    prob_true, prob_pred = calibration_curve(labels, probs, n_bins=n_bins, strategy="uniform")
    # bin weights n_b / n with sklearn's own bin assignment (searchsorted on its uniform edges)
    bin_ids = np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], probs)
    counts = np.bincount(bin_ids, minlength=n_bins)
    weights = counts[counts > 0] / len(probs)
    want = float(np.sum(weights * np.abs(prob_true - prob_pred)))
    got = expected_calibration_error(torch.from_numpy(probs), torch.from_numpy(labels), n_bins=n_bins)
    assert got == pytest.approx(want, abs=1e-12)
    assert got > 0.01  # the data are miscalibrated, so a zero would be a bug


def test_pair_ece_matches_sklearn_on_both_orders():
    rng = np.random.default_rng(7)
    chosen, rejected = rng.normal(size=80) * 2 + 0.5, rng.normal(size=80) * 2
    p = 1 / (1 + np.exp(-(chosen - rejected)))
    probs, labels = np.concatenate([p, 1 - p]), np.concatenate([np.ones(80), np.zeros(80)])
    prob_true, prob_pred = calibration_curve(labels, probs, n_bins=10, strategy="uniform")
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, 11)[1:-1], probs), minlength=10)
    want = float(np.sum(counts[counts > 0] / len(probs) * np.abs(prob_true - prob_pred)))
    assert pair_ece(chosen, rejected) == pytest.approx(want, abs=1e-12)
