"""Calibration and precision-recall metrics against hand computation and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss
from sklearn.metrics import precision_recall_curve as sk_precision_recall_curve

from dermnode.models.metrics.calibration import (
    average_precision,
    brier_score,
    expected_calibration_error,
    multiclass_brier_score,
    precision_recall_curve,
    reliability_bins,
)


def test_brier_score_by_hand() -> None:
    # (0.9-1)^2 + (0.2-0)^2 + (0.6-1)^2 + (0.5-0)^2 = 0.01 + 0.04 + 0.16 + 0.25 = 0.46 -> /4
    assert brier_score([1, 0, 1, 0], [0.9, 0.2, 0.6, 0.5]) == pytest.approx(0.115)


def test_multiclass_brier_by_hand() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    # case 1 truth 0: 0.09 + 0.04 + 0.01 = 0.14; case 2 truth 1: 0.01 + 0.81 + 0.64 = 1.46
    assert multiclass_brier_score([0, 1], probs) == pytest.approx(0.8)
    with pytest.raises(ValueError):
        multiclass_brier_score([0, 3], probs)


def test_reliability_bins_and_ece_by_hand() -> None:
    y = [0, 1, 1, 1, 0]
    p = [0.1, 0.15, 0.8, 0.9, 1.0]  # 1.0 belongs to the last bin, 0.8 to [0.8, 1.0]
    bins = reliability_bins(y, p, n_bins=5)
    assert [b.count for b in bins] == [2, 0, 0, 0, 3]
    assert bins[0].mean_predicted == pytest.approx(0.125) and bins[0].observed_fraction == pytest.approx(0.5)
    assert bins[1].mean_predicted is None and bins[1].observed_fraction is None
    assert bins[4].mean_predicted == pytest.approx(0.9) and bins[4].observed_fraction == pytest.approx(2 / 3)
    expected = 2 / 5 * abs(0.5 - 0.125) + 3 / 5 * abs(2 / 3 - 0.9)
    assert expected_calibration_error(y, p, n_bins=5) == pytest.approx(expected)


def test_perfectly_calibrated_bins_have_no_error() -> None:
    y = [1, 0, 0, 0, 1, 1, 1, 0]
    p = [0.25, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75]
    assert expected_calibration_error(y, p, n_bins=4) == pytest.approx(0.0)


def test_calibration_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        brier_score([1, 0], [0.5])
    with pytest.raises(ValueError):
        brier_score([1, 0], [0.5, 1.5])
    with pytest.raises(ValueError):
        reliability_bins([], [], 10)
    with pytest.raises(ValueError):
        reliability_bins([1, 2], [0.5, 0.5], 10)


def test_precision_recall_by_hand_with_ties() -> None:
    y = [1, 0, 1, 1, 0]
    s = [0.9, 0.8, 0.8, 0.3, 0.1]
    precision, recall, thresholds = precision_recall_curve(y, s)
    assert thresholds.tolist() == [np.inf, 0.9, 0.8, 0.3, 0.1]
    assert recall.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1, 1])
    assert precision.tolist() == pytest.approx([1, 1, 2 / 3, 3 / 4, 3 / 5])
    # AP = 1/3*1 + 1/3*2/3 + 1/3*3/4 + 0
    assert average_precision(y, s) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)


def test_precision_recall_matches_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) * 0.6 + y * 0.3, 2)  # rounded: many ties
    precision, recall, thresholds = precision_recall_curve(y, s)
    sk_precision, sk_recall, sk_thresholds = sk_precision_recall_curve(y, s)
    # scikit-learn lists the points ascending in threshold and stops once recall reaches 1
    points = {t: (p, r) for p, r, t in zip(precision, recall, thresholds)}
    for p, r, t in zip(sk_precision[:-1], sk_recall[:-1], sk_thresholds):
        assert points[t] == pytest.approx((p, r))
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s))
    assert brier_score(y, s) == pytest.approx(brier_score_loss(y, s))
