"""Calibration and precision-recall in plain numpy: Brier score, reliability bins, ECE, PR curve.

Companion of :mod:`dermnode.models.metrics.classification` (which holds AUROC, ROC and operating
points; the PR curve here is derived from its ROC points, so thresholds follow the same
convention: a case is positive when its score is at or above the threshold).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from dermnode.models.metrics.classification import roc_curve


def _labels_and_probabilities(
    y_true: Sequence[int] | np.ndarray, probabilities: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(int).ravel()
    p = np.asarray(probabilities, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.size}) and probabilities ({p.size}) differ in length")
    if y.size == 0:
        raise ValueError("calibration of no cases is undefined")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("binary labels must be 0 or 1")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise ValueError("probabilities must lie in [0, 1]")
    return y, p


def brier_score(y_true: Sequence[int] | np.ndarray, probabilities: Sequence[float] | np.ndarray) -> float:
    """Mean squared difference between the predicted probability and the 0/1 outcome."""
    y, p = _labels_and_probabilities(y_true, probabilities)
    return float(np.mean((p - y) ** 2))


def multiclass_brier_score(y_true: Sequence[int] | np.ndarray, probabilities: np.ndarray) -> float:
    """Mean over cases of the summed squared error against the one-hot truth (range 0..2)."""
    t = np.asarray(y_true, dtype=int).ravel()
    probs = np.asarray(probabilities, dtype=float)
    if probs.ndim != 2 or probs.shape[0] != t.size or t.size == 0:
        raise ValueError(f"probabilities must be {t.size} x classes with at least one case, got {probs.shape}")
    if t.min() < 0 or t.max() >= probs.shape[1]:
        raise ValueError(f"class indices must lie in 0..{probs.shape[1] - 1}")
    one_hot = np.zeros_like(probs)
    one_hot[np.arange(t.size), t] = 1.0
    return float(np.mean(np.sum((probs - one_hot) ** 2, axis=1)))


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of a reliability diagram: cases whose predicted probability lies in [lower, upper)."""

    lower: float
    upper: float
    count: int
    mean_predicted: float | None  # None for an empty bin
    observed_fraction: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def reliability_bins(
    y_true: Sequence[int] | np.ndarray, probabilities: Sequence[float] | np.ndarray, n_bins: int = 10
) -> list[ReliabilityBin]:
    """Equal-width bins over [0, 1]; each bin is closed below and open above, the last closed at 1."""
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    y, p = _labels_and_probabilities(y_true, probabilities)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.minimum((p * n_bins).astype(int), n_bins - 1)
    bins = []
    for b in range(n_bins):
        members = index == b
        count = int(members.sum())
        bins.append(
            ReliabilityBin(
                lower=float(edges[b]),
                upper=float(edges[b + 1]),
                count=count,
                mean_predicted=float(p[members].mean()) if count else None,
                observed_fraction=float(y[members].mean()) if count else None,
            )
        )
    return bins


def expected_calibration_error(
    y_true: Sequence[int] | np.ndarray, probabilities: Sequence[float] | np.ndarray, n_bins: int = 10
) -> float:
    """Sum over bins of (share of cases) x |observed fraction - mean predicted probability|."""
    bins = reliability_bins(y_true, probabilities, n_bins)
    total = sum(b.count for b in bins)
    return float(
        sum(b.count / total * abs(b.observed_fraction - b.mean_predicted) for b in bins if b.count)
    )


def precision_recall_curve(
    y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and threshold per distinct score, thresholds descending.

    The first point is (recall 0, precision 1) at threshold +inf, as in scikit-learn's curve
    (which lists the same points in the opposite order).
    """
    y = np.asarray(y_true).astype(int).ravel()
    fpr, tpr, thresholds = roc_curve(y_true, scores)
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    tp = np.rint(tpr * n_pos)
    fp = np.rint(fpr * n_neg)
    precision = np.ones_like(tp)
    precision[1:] = tp[1:] / (tp[1:] + fp[1:])
    return precision, tpr, thresholds


def average_precision(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Sum over thresholds of (gain in recall) x precision: the step-wise area under the PR curve."""
    precision, recall, _ = precision_recall_curve(y_true, scores)
    return float(np.sum(np.diff(recall) * precision[1:]))
