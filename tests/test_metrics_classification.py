"""Classification metrics against hand-computed cases and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from dermnode.models.metrics.classification import (
    balanced_accuracy,
    confusion_matrix,
    has_both_classes,
    one_vs_rest_auroc,
    operating_point,
    roc_auc,
    roc_curve,
    youden_threshold,
)


def test_auroc_hand_computed_with_ties():
    # positives 0.8, 0.4; negatives 0.4, 0.1: pairs (0.8>0.4, 0.8>0.1, 0.4=0.4 -> 1/2, 0.4>0.1) = 3.5/4
    assert roc_auc([1, 1, 0, 0], [0.8, 0.4, 0.4, 0.1]) == pytest.approx(0.875)
    assert roc_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert roc_auc([0, 1], [0.9, 0.1]) == 0.0


def test_auroc_matches_sklearn_on_tied_random_scores():
    rng = np.random.default_rng(1)
    for _ in range(5):
        y = rng.integers(0, 2, 300)
        scores = np.round(rng.random(300), 1) + 0.3 * y  # many ties
        assert roc_auc(y, scores) == pytest.approx(skm.roc_auc_score(y, scores))


def test_auroc_needs_both_classes_and_rejects_bad_input():
    assert not has_both_classes([1, 1, 1])
    with pytest.raises(ValueError, match="positive and one negative"):
        roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="0 or 1"):
        roc_auc([2, 0], [0.2, 0.3])
    with pytest.raises(ValueError, match="differ in length"):
        roc_auc([1, 0, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="finite"):
        roc_auc([1, 0], [np.nan, 0.3])


def test_roc_curve_matches_sklearn():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200), 2) + 0.2 * y
    fpr, tpr, thresholds = roc_curve(y, scores)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(y, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thresholds[1:], sk_thr[1:])
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(y, scores))


def test_operating_point_counts_at_or_above_threshold():
    point = operating_point([1, 1, 0, 0, 1], [0.3, 0.29, 0.3, 0.1, 0.9], 0.3)
    assert (point.tp, point.fn, point.fp, point.tn) == (2, 1, 1, 1)
    assert point.sensitivity == pytest.approx(2 / 3)
    assert point.specificity == pytest.approx(0.5)
    assert point.ppv == pytest.approx(2 / 3)
    assert point.npv == pytest.approx(0.5)
    nothing_called = operating_point([1, 0], [0.1, 0.2], 0.5)
    assert nothing_called.ppv is None and nothing_called.sensitivity == 0.0


def test_youden_threshold_separates_a_separable_case():
    y = [0, 0, 0, 1, 1]
    scores = [0.1, 0.2, 0.35, 0.6, 0.9]
    threshold = youden_threshold(y, scores)
    assert threshold == 0.6
    point = operating_point(y, scores, threshold)
    assert point.sensitivity == 1.0 and point.specificity == 1.0


def test_youden_threshold_matches_sklearn_j():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    scores = rng.random(400) + 0.4 * y
    fpr, tpr, _ = skm.roc_curve(y, scores)
    point = operating_point(y, scores, youden_threshold(y, scores))
    assert point.sensitivity + point.specificity - 1 == pytest.approx((tpr - fpr).max())


def test_confusion_matrix_and_balanced_accuracy_match_sklearn():
    rng = np.random.default_rng(4)
    t = rng.integers(0, 5, 100)
    p = np.where(rng.random(100) < 0.6, t, rng.integers(0, 5, 100))
    np.testing.assert_array_equal(confusion_matrix(t, p, 6), skm.confusion_matrix(t, p, labels=range(6)))
    assert balanced_accuracy(t, p) == pytest.approx(skm.balanced_accuracy_score(t, p))
    with pytest.raises(ValueError, match="0..2"):
        confusion_matrix([0, 3], [0, 1], 3)


def test_one_vs_rest_macro_over_present_classes():
    labels = np.array([0, 0, 1, 1, 2])
    probs = np.array(
        [[0.8, 0.1, 0.1, 0.0], [0.6, 0.3, 0.1, 0.0], [0.2, 0.7, 0.1, 0.0], [0.5, 0.4, 0.1, 0.0], [0.1, 0.1, 0.8, 0.0]]
    )
    per_class, macro = one_vs_rest_auroc(labels, probs, ["a", "b", "c", "d"])
    assert set(per_class) == {"a", "b", "c"}  # "d" has no positive case
    for index, name in enumerate("abc"):
        assert per_class[name] == pytest.approx(skm.roc_auc_score(labels == index, probs[:, index]))
    assert macro == pytest.approx(np.mean(list(per_class.values())))
    with pytest.raises(ValueError, match="5 x 3"):
        one_vs_rest_auroc(labels, probs, ["a", "b", "c"])
