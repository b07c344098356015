"""Classification metrics in plain numpy: ROC/AUROC, operating points, confusion matrix.

One module for every classification figure dermnode reports (training, ``evaluate``, ``validate``).
Conventions: a case is called positive when its score is **at or above** the threshold; labels are
0/1 (binary) or integer class indices (multi-class); undefined ratios (e.g. PPV with no positive
call) are ``None`` so that results serialise to JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np


def _binary(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(int).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("binary labels must be 0 or 1")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite numbers")
    return y, s


def has_both_classes(y_true: Sequence[int] | np.ndarray) -> bool:
    """True when a binary label vector holds positives and negatives (AUROC is defined)."""
    y = np.asarray(y_true).astype(int)
    return bool((y == 1).any() and (y == 0).any())


def roc_auc(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks: a tie counts one half)."""
    y, s = _binary(y_true, scores)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs at least one positive and one negative case")
    order = np.argsort(s, kind="mergesort")
    sorted_scores = s[order]
    ranks = np.empty(len(s), dtype=float)
    # average rank (1-based) over each run of tied scores
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(s)]))
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(
    y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points (false positive rate, true positive rate, threshold), thresholds descending.

    The first point is (0, 0) at threshold +inf; each further point calls positive every case
    scoring at or above its threshold (one point per distinct score).
    """
    y, s = _binary(y_true, scores)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("a ROC curve needs at least one positive and one negative case")
    order = np.argsort(-s, kind="mergesort")
    s_desc, y_desc = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s_desc)), len(s_desc) - 1]
    tp = np.cumsum(y_desc)[last_of_run]
    fp = np.cumsum(1 - y_desc)[last_of_run]
    fpr = np.r_[0.0, fp / n_neg]
    tpr = np.r_[0.0, tp / n_pos]
    thresholds = np.r_[np.inf, s_desc[last_of_run]]
    return fpr, tpr, thresholds


def youden_threshold(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """The threshold maximising sensitivity + specificity - 1 (the lowest such threshold on ties)."""
    fpr, tpr, thresholds = roc_curve(y_true, scores)
    j = tpr - fpr
    best = np.flatnonzero(j == j[1:].max())
    best = best[best > 0]  # never +inf: that calls nothing positive
    return float(thresholds[best[-1]])


def _ratio(numerator: int, denominator: int) -> float | None:
    return float(numerator / denominator) if denominator else None


@dataclass(frozen=True)
class OperatingPoint:
    """Counts and rates of a binary decision ``score >= threshold``."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: float | None
    specificity: float | None
    ppv: float | None
    npv: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def operating_point(
    y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, threshold: float
) -> OperatingPoint:
    """Sensitivity, specificity, PPV and NPV when cases scoring at or above ``threshold`` are positive."""
    y, s = _binary(y_true, scores)
    called = s >= threshold
    tp = int(np.sum(called & (y == 1)))
    fp = int(np.sum(called & (y == 0)))
    tn = int(np.sum(~called & (y == 0)))
    fn = int(np.sum(~called & (y == 1)))
    return OperatingPoint(
        threshold=float(threshold),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        sensitivity=_ratio(tp, tp + fn),
        specificity=_ratio(tn, tn + fp),
        ppv=_ratio(tp, tp + fp),
        npv=_ratio(tn, tn + fn),
    )


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """Counts: rows are true classes, columns predicted classes."""
    t = np.asarray(y_true, dtype=int).ravel()
    p = np.asarray(y_pred, dtype=int).ravel()
    if t.shape != p.shape:
        raise ValueError("true and predicted labels differ in length")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise ValueError(f"class indices must lie in 0..{n_classes - 1}")
    matrix = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(matrix, (t, p), 1)
    return matrix


def balanced_accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Mean recall over the classes present in ``y_true``."""
    t = np.asarray(y_true, dtype=int).ravel()
    p = np.asarray(y_pred, dtype=int).ravel()
    if t.size == 0:
        raise ValueError("balanced accuracy of no cases is undefined")
    recalls = [float(np.mean(p[t == c] == c)) for c in np.unique(t)]
    return float(np.mean(recalls))


def one_vs_rest_auroc(
    y_true: Sequence[int], probabilities: np.ndarray, class_names: Sequence[str]
) -> tuple[dict[str, float], float | None]:
    """Per-class one-vs-rest AUROC for the classes present (with positives and negatives), and their mean.

    ``probabilities`` is cases x classes, columns in ``class_names`` order. The macro value is None
    when no class qualifies.
    """
    t = np.asarray(y_true, dtype=int).ravel()
    probs = np.asarray(probabilities, dtype=float)
    if probs.shape != (t.size, len(class_names)):
        raise ValueError(f"probabilities must be {t.size} x {len(class_names)}, got {probs.shape}")
    per_class = {}
    for index, name in enumerate(class_names):
        positives = (t == index).astype(int)
        if has_both_classes(positives):
            per_class[name] = roc_auc(positives, probs[:, index])
    macro = float(np.mean(list(per_class.values()))) if per_class else None
    return per_class, macro
