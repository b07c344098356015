"""The figures of a validation report, computed from cases with the shared metric modules.

AUROC, ROC points, operating points, Youden thresholds and the confusion matrix come from
:mod:`dermnode.models.metrics.classification`; calibration and precision-recall from
:mod:`dermnode.models.metrics.calibration`. This module only chooses what to compute over which
cases and lays the results out (the seed paper's Table 2 among them). Undefined figures are None
with a note saying why, so that a small cohort or a missing class never stops the report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from dermnode.contract import CLASS_CODES, DEFAULT_VETO_THRESHOLD
from dermnode.models.metrics.calibration import (
    average_precision,
    brier_score,
    expected_calibration_error,
    multiclass_brier_score,
    precision_recall_curve,
    reliability_bins,
)
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
from dermnode.models.metrics.bootstrap import bootstrap_intervals
from dermnode.validation.cohort import Case
from dermnode.validation.minimum import TOO_SMALL, MinimumCounts

MALIGNANT = "malignant"
BCC_VS_SK = "bcc_vs_sk"


@dataclass(frozen=True)
class CaseArrays:
    """The cases as arrays (one entry per case)."""

    truth_index: np.ndarray  # index into CLASS_CODES; -1 where the truth is only benign/malignant
    probabilities: np.ndarray  # cases x 8, columns in CLASS_CODES order
    malignant: np.ndarray  # 1 when the truth is malignant
    malignancy: np.ndarray  # P(MEL)+P(BCC)+P(AK)+P(SCC)
    veto_threshold: np.ndarray
    bcc_truth: np.ndarray  # 1 BCC, 0 BKL (the SK side), -1 otherwise or without a BCC/SK output
    bcc_probability: np.ndarray  # NaN where the node recorded none

    @classmethod
    def of(cls, cases: list[Case]) -> CaseArrays:
        bcc_p = np.array([np.nan if c.bcc_probability is None else c.bcc_probability for c in cases], float)
        bcc_truth = np.array([{"BCC": 1, "BKL": 0}.get(c.truth, -1) for c in cases], int)
        bcc_truth[np.isnan(bcc_p)] = -1
        return cls(
            truth_index=np.array([CLASS_CODES.index(c.truth) if c.truth_class else -1 for c in cases], int),
            probabilities=np.array([[c.probabilities[k] for k in CLASS_CODES] for c in cases], float).reshape(
                -1, len(CLASS_CODES)
            ),
            malignant=np.array([c.truth_malignant for c in cases], int),
            malignancy=np.array([c.malignancy_probability for c in cases], float),
            veto_threshold=np.array([c.veto_threshold for c in cases], float),
            bcc_truth=bcc_truth,
            bcc_probability=bcc_p,
        )

    def __len__(self) -> int:
        return len(self.malignant)

    @property
    def veto_margin(self) -> np.ndarray:
        """Malignancy probability minus each case's own threshold: the veto fires at >= 0 (exact in floats)."""
        return self.malignancy - self.veto_threshold


def auroc_figures(a: CaseArrays, index: np.ndarray | None = None,
                  macro_classes: tuple[str, ...] = CLASS_CODES) -> dict[str, float]:
    """Every AUROC of the report over the cases ``index`` picks (all by default); undefined ones left out.

    The macro average is the mean over ``macro_classes`` (those with enough cases in the cohort).
    """
    idx = np.arange(len(a)) if index is None else index
    figures: dict[str, float] = {}
    multi = idx[a.truth_index[idx] >= 0]
    if multi.size:
        per_class, _ = one_vs_rest_auroc(a.truth_index[multi], a.probabilities[multi], CLASS_CODES)
        figures.update(per_class)
        counted = [per_class[c] for c in macro_classes if c in per_class]
        if counted:
            figures["macro"] = float(np.mean(counted))
    if has_both_classes(a.malignant[idx]):
        figures[MALIGNANT] = roc_auc(a.malignant[idx], a.malignancy[idx])
    pair = idx[a.bcc_truth[idx] >= 0]
    if has_both_classes(a.bcc_truth[pair]):
        figures[BCC_VS_SK] = roc_auc(a.bcc_truth[pair], a.bcc_probability[pair])
    return figures


def labels_and_scores(a: CaseArrays, group: str) -> tuple[np.ndarray, np.ndarray]:
    """The binary truth and the score of one group (a class one vs rest, malignant, BCC vs SK)."""
    if group == MALIGNANT:
        return a.malignant, a.malignancy
    if group == BCC_VS_SK:
        pair = a.bcc_truth >= 0
        return a.bcc_truth[pair], a.bcc_probability[pair]
    multi = a.truth_index >= 0
    k = CLASS_CODES.index(group)
    return (a.truth_index[multi] == k).astype(int), a.probabilities[multi, k]


def _undefined_note(y: np.ndarray, group: str) -> str:
    if y.size == 0:
        return "no cases"
    return f"only {'positive' if y.all() else 'negative'} cases for {group}"


def _counts(y: np.ndarray) -> tuple[int, int]:
    return int(y.sum()), int(y.size - y.sum())


def large_enough(a: CaseArrays, minimum: MinimumCounts) -> list[str]:
    """The groups (classes, malignant, BCC vs SK) whose positives and negatives reach the minimum."""
    return [g for g in [*CLASS_CODES, MALIGNANT, BCC_VS_SK] if minimum.both(*_counts(labels_and_scores(a, g)[0]))]


def discrimination(a: CaseArrays, resamples: int, seed: int, confidence: float, progress: bool,
                   minimum: MinimumCounts) -> dict:
    """AUROC with a percentile bootstrap interval, per class, macro, malignant and BCC-vs-SK.

    Groups below the minimum count get no figure ("n too small"). The macro average is the mean over
    the classes present in the cohort, and is given only when every one of them reaches the minimum:
    a mean over some classes would not be comparable with anyone's macro AUROC.
    """
    shown = large_enough(a, minimum)
    present = [c for c in CLASS_CODES if has_both_classes(labels_and_scores(a, c)[0])]
    too_small = [c for c in present if c not in shown]
    classes = () if too_small else tuple(present)
    point = {g: v for g, v in auroc_figures(a, macro_classes=classes).items() if g in shown or g == "macro"}
    intervals = bootstrap_intervals(
        lambda index: auroc_figures(a, index, classes), list(point), len(a), resamples, seed, confidence, progress
    )
    result = {}
    for group in [*CLASS_CODES, "macro", MALIGNANT, BCC_VS_SK]:
        entry: dict = {"auroc": point.get(group), "ci_low": None, "ci_high": None, "note": None}
        if group == "macro":
            entry["classes"] = list(classes)
            if too_small:
                entry["note"] = f"{TOO_SMALL}: {', '.join(too_small)} below the minimum count"
            elif not present:
                entry["note"] = "no class with both positive and negative cases"
        else:
            y, _ = labels_and_scores(a, group)
            n_positive, n_negative = _counts(y)
            entry.update(n_positive=n_positive, n_negative=n_negative)
            if not has_both_classes(y):
                entry["note"] = _undefined_note(y, group)
            elif group not in point:
                entry["note"] = minimum.note(n_positive, n_negative)
        if group in point:
            interval = intervals[group]
            entry.update(ci_low=interval.low, ci_high=interval.high, note=interval.note)
        result[group] = entry
    return result


def common_veto_threshold(a: CaseArrays) -> float:
    """The threshold most cases were analysed with (the setting; normally one value for all)."""
    if not len(a):
        return DEFAULT_VETO_THRESHOLD
    return float(Counter(a.veto_threshold.tolist()).most_common(1)[0][0])


def _operating_points(y: np.ndarray, scores: np.ndarray, veto: float, veto_scores: np.ndarray, cut: float,
                      minimum: MinimumCounts) -> dict:
    """Operating points at the veto threshold (``veto_scores >= cut``) and at the Youden-optimal threshold,
    with the figures below the minimum count blanked (the Youden threshold needs both sides)."""
    if not has_both_classes(y):
        return {"at_veto": None, "youden": None, "note": _undefined_note(y, "this group")}
    n_positive, n_negative = _counts(y)
    at_veto = operating_point(y, veto_scores, cut).as_dict()
    at_veto["threshold"] = veto
    enough = minimum.both(n_positive, n_negative)
    return {
        "at_veto": minimum.operating_point(at_veto, n_positive, n_negative),
        "youden": operating_point(y, scores, youden_threshold(y, scores)).as_dict() if enough else None,
        "note": minimum.note(n_positive, n_negative),
    }


def table2(a: CaseArrays, auroc: dict, minimum: MinimumCounts) -> dict:
    """The seed paper's Table 2 layout: a row per class, the macro average and malignant vs benign.

    A class row is one-vs-rest on P(class), at the veto threshold and at its Youden-optimal
    threshold; the malignant row uses the malignancy probability, and at the veto threshold it is
    the node's own veto decision (each case with the threshold it was analysed with). The macro row
    averages the classes that reach the minimum count.
    """
    veto = common_veto_threshold(a)
    rows = []
    for group in [*CLASS_CODES, MALIGNANT]:
        y, scores = labels_and_scores(a, group)
        veto_scores, cut = (a.veto_margin, 0.0) if group == MALIGNANT else (scores, veto)
        n_positive, n_negative = _counts(y)
        rows.append(
            {
                "group": group,
                "n_positive": n_positive,
                "n_negative": n_negative,
                **{k: auroc[group][k] for k in ("auroc", "ci_low", "ci_high")},
                **_operating_points(y, scores, veto, veto_scores, cut, minimum),
            }
        )
    class_rows = [r for r in rows if r["group"] in auroc["macro"]["classes"] and r["at_veto"] is not None]
    macro = {"group": "macro", "n_positive": None, "n_negative": None,
             **{k: auroc["macro"][k] for k in ("auroc", "ci_low", "ci_high", "note")}}
    for point in ("at_veto", "youden"):
        macro[point] = (
            {m: _mean([r[point][m] for r in class_rows]) for m in ("sensitivity", "specificity", "ppv", "npv")}
            if class_rows
            else None
        )
    rows.insert(len(CLASS_CODES), macro)
    return {"veto_threshold": veto, "case_thresholds": sorted(set(a.veto_threshold.tolist())), "rows": rows}


def _mean(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def veto_by_diagnosis(cases: list[Case], minimum: MinimumCounts) -> list[dict]:
    """For each truth label: how many cases the veto flagged (for malignant labels this is sensitivity).

    The share is shown from the minimum count on (positives for malignant labels, negatives for benign)."""
    rows = []
    for label in [*CLASS_CODES, "benign", MALIGNANT]:
        members = [c for c in cases if c.truth == label]
        if members:
            flagged = sum(c.veto for c in members)
            malignant = members[0].truth_malignant
            enough = len(members) >= (minimum.positives if malignant else minimum.negatives)
            rows.append({"truth": label, "malignant": malignant, "n": len(members), "flagged": flagged,
                         "share_flagged": flagged / len(members) if enough else None,
                         "note": None if enough else TOO_SMALL})
    return rows


def confusion(a: CaseArrays) -> dict:
    """Top-class confusion matrix over the cases with an 8-class diagnosis."""
    multi = a.truth_index >= 0
    truth, predicted = a.truth_index[multi], a.probabilities[multi].argmax(axis=1)
    return {
        "classes": list(CLASS_CODES),
        "counts": confusion_matrix(truth, predicted, len(CLASS_CODES)).tolist(),
        "n": int(multi.sum()),
        "accuracy": float(np.mean(truth == predicted)) if truth.size else None,
        "balanced_accuracy": balanced_accuracy(truth, predicted) if truth.size else None,
    }


def curves(a: CaseArrays, minimum: MinimumCounts) -> dict:
    """ROC and precision-recall points per class, malignant and BCC-vs-SK (where the minimum count is reached)."""
    roc, pr = {}, {}
    for group in large_enough(a, minimum):
        y, scores = labels_and_scores(a, group)
        fpr, tpr, thresholds = roc_curve(y, scores)
        roc[group] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": thresholds.tolist()}
        precision, recall, thresholds = precision_recall_curve(y, scores)
        pr[group] = {
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "thresholds": thresholds.tolist(),
            "average_precision": average_precision(y, scores),
            "prevalence": float(y.mean()),
        }
    return {"roc": roc, "precision_recall": pr}


def calibration(a: CaseArrays, n_bins: int = 10) -> dict:
    """Reliability of the malignancy probability and of the top-class probability."""
    if not len(a):
        return {"malignant": None, "top_class": None, "multiclass_brier": None}

    def summary(y: np.ndarray, p: np.ndarray) -> dict:
        return {
            "n": int(y.size),
            "brier": brier_score(y, p),
            "ece": expected_calibration_error(y, p, n_bins),
            "bins": [b.as_dict() for b in reliability_bins(y, p, n_bins)],
        }

    multi = a.truth_index >= 0
    result = {"malignant": summary(a.malignant, np.clip(a.malignancy, 0.0, 1.0)), "top_class": None,
              "multiclass_brier": None}
    if multi.any():
        probs, truth = a.probabilities[multi], a.truth_index[multi]
        correct = (probs.argmax(axis=1) == truth).astype(int)
        result["top_class"] = summary(correct, probs.max(axis=1))
        result["multiclass_brier"] = multiclass_brier_score(truth, probs)
    return result
