"""Figures per age band, sex and anatomic site: counts, malignant-vs-benign AUROC with a bootstrap
interval, and the veto's sensitivity and specificity, each under the small-numbers rule."""

from __future__ import annotations

import numpy as np

from dermnode.models.metrics.bootstrap import bootstrap_intervals
from dermnode.models.metrics.classification import has_both_classes, roc_auc
from dermnode.validation.cohort import Case
from dermnode.validation.minimum import MinimumCounts
from dermnode.validation.report_metrics import CaseArrays

AGE_BANDS: tuple[tuple[str, float, float], ...] = (
    ("<30", 0, 30),
    ("30-44", 30, 45),
    ("45-59", 45, 60),
    ("60-74", 60, 75),
    (">=75", 75, float("inf")),
)
UNKNOWN = "unknown"


def _auroc(a: CaseArrays, members: np.ndarray) -> dict[str, float]:
    y = a.malignant[members]
    return {"auroc": roc_auc(y, a.malignancy[members])} if has_both_classes(y) else {}


def _row(label: str, members: list[int], a: CaseArrays, minimum: MinimumCounts, resamples: int, seed: int,
         confidence: float) -> dict:  # fmt: skip
    idx = np.asarray(members, dtype=int)
    y = a.malignant[idx]
    n_positive, n_negative = int(y.sum()), int(idx.size - y.sum())
    flagged = a.veto_margin[idx] >= 0
    row = {
        "group": label,
        "n": int(idx.size),
        "n_malignant": n_positive,
        "auroc_malignant": None,
        "ci_low": None,
        "ci_high": None,
        "sensitivity_veto": float(flagged[y == 1].mean()) if n_positive >= max(minimum.positives, 1) else None,
        "specificity_veto": float((~flagged[y == 0]).mean()) if n_negative >= max(minimum.negatives, 1) else None,
        "note": None,
    }
    if not idx.size:
        row["note"] = "no cases"
    elif not has_both_classes(y):
        row["note"] = "AUROC undefined: only " + ("malignant" if y.all() else "benign") + " cases"
    elif not minimum.both(n_positive, n_negative):
        row["note"] = minimum.note(n_positive, n_negative)
    else:
        row["auroc_malignant"] = _auroc(a, idx)["auroc"]
        interval = bootstrap_intervals(lambda pick: _auroc(a, idx[pick]), ["auroc"], idx.size, resamples, seed,
                                       confidence)["auroc"]  # fmt: skip
        row.update(ci_low=interval.low, ci_high=interval.high, note=interval.note)
    return row


def subgroups(cases: list[Case], a: CaseArrays, minimum: MinimumCounts, resamples: int, seed: int,
              confidence: float) -> dict:  # fmt: skip
    """One row per age band, sex and anatomic site; empty groups stay listed with n = 0."""
    def band(age: float | None) -> str:
        return next((name for name, low, high in AGE_BANDS if age is not None and low <= age < high), UNKNOWN)

    groupings = {
        "age": ([name for name, _, _ in AGE_BANDS] + [UNKNOWN], [band(c.age) for c in cases]),
        "sex": (["female", "male", UNKNOWN], [c.sex or UNKNOWN for c in cases]),
    }
    sites = [c.anatomic_site or UNKNOWN for c in cases]
    groupings["anatomic_site"] = (sorted(set(sites) - {UNKNOWN}) + [UNKNOWN], sites)
    result = {}
    for name, (labels, values) in groupings.items():
        members: dict[str, list[int]] = {label: [] for label in labels}
        for i, value in enumerate(values):
            members.setdefault(value, []).append(i)
        result[name] = [_row(label, m, a, minimum, resamples, seed, confidence) for label, m in members.items()]
    return result
