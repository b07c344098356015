"""Published figures shown beside ours, as data: the seed paper's Table 2 and headline figures.

The seed paper (hybrid Mask R-CNN + radiomics + ResNet-50 + patient metadata classifier for
dermoscopy, PMC11347612) reports per-diagnosis AUROC, sensitivity and specificity (percent, ± SD as
printed) with the decision threshold for three test cohorts: ISIC 2018 (internal), Jinan and
Longhua (external); "Overall" is benign vs malignant. Its cohorts and splits are not ours: the
figures are a reference point, not a like-for-like comparison, and the report says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

SEED_PAPER = (
    "Hybrid deep learning and radiomics with patient metadata for dermoscopic skin lesion diagnosis (PMC11347612)"
)
CLIP_PAPER = "BCC-vs-SK CLIP/CoOp paper"
COHORTS: tuple[str, ...] = ("ISIC 2018", "Jinan", "Longhua")
NOTE = (
    "Published figures are from the papers' own cohorts and splits (ISIC 2018 internal test set; Jinan and "
    "Longhua external cohorts), not from these cases: a reference point, not a like-for-like comparison."
)


@dataclass(frozen=True)
class Measure:
    percent: float
    sd: float


@dataclass(frozen=True)
class Table2Row:
    """One row of the seed paper's Table 2; ``group`` is a class code or "malignant" (the paper's Overall)."""

    cohort: str
    group: str
    auroc: Measure
    sensitivity: Measure
    specificity: Measure
    threshold: Measure

    def as_dict(self) -> dict:
        return asdict(self)


def _row(cohort: str, group: str, *values: float) -> Table2Row:
    auroc, auroc_sd, sens, sens_sd, spec, spec_sd, threshold, threshold_sd = values
    return Table2Row(cohort, group, Measure(auroc, auroc_sd), Measure(sens, sens_sd), Measure(spec, spec_sd),
                     Measure(threshold, threshold_sd))  # fmt: skip


#: The seed paper's Table 2 (its SCC has no figures for Longhua).
TABLE2: tuple[Table2Row, ...] = (
    _row("ISIC 2018", "NV", 98.8, 0.02, 91.0, 3.4, 98.2, 3.1, 0.0378, 0.09),
    _row("ISIC 2018", "BKL", 96.3, 0.07, 96.5, 3.2, 98.9, 3.7, 0.0285, 0.01),
    _row("ISIC 2018", "DF", 96.8, 0.02, 92.8, 6.2, 99.7, 3.1, 0.0095, 0.07),
    _row("ISIC 2018", "VASC", 99.1, 0.05, 89.1, 2.7, 99.1, 3.0, 0.0283, 0.01),
    _row("ISIC 2018", "AK", 96.1, 0.01, 87.5, 2.2, 94.1, 2.3, 0.0417, 0.02),
    _row("ISIC 2018", "MEL", 90.9, 0.03, 71.5, 3.3, 95.3, 1.8, 0.0406, 0.06),
    _row("ISIC 2018", "BCC", 95.8, 0.03, 82.5, 4.5, 92.2, 2.9, 0.0425, 0.01),
    _row("ISIC 2018", "SCC", 96.1, 0.07, 85.5, 1.7, 96.6, 5.4, 0.0355, 0.02),
    _row("ISIC 2018", "malignant", 98.5, 0.04, 97.6, 3.4, 98.4, 3.2, 0.0344, 0.04),
    _row("Jinan", "NV", 98.9, 0.02, 93.1, 2.6, 97.0, 3.1, 0.0691, 0.01),
    _row("Jinan", "BKL", 98.2, 0.02, 93.7, 1.5, 99.0, 1.5, 0.0296, 0.01),
    _row("Jinan", "DF", 98.6, 0.01, 82.8, 2.2, 89.0, 1.6, 0.0292, 0.08),
    _row("Jinan", "VASC", 98.7, 0.09, 88.6, 4.6, 97.5, 2.7, 0.0590, 0.02),
    _row("Jinan", "AK", 97.9, 0.01, 86.2, 1.7, 93.5, 2.4, 0.0543, 0.06),
    _row("Jinan", "MEL", 86.0, 0.02, 79.3, 2.4, 94.5, 1.7, 0.0477, 0.04),
    _row("Jinan", "BCC", 90.0, 0.09, 82.7, 3.9, 96.0, 5.8, 0.0365, 0.01),
    _row("Jinan", "SCC", 93.2, 0.03, 93.1, 4.1, 98.5, 4.3, 0.0294, 0.01),
    _row("Jinan", "malignant", 94.9, 0.03, 93.9, 2.9, 96.7, 2.2, 0.0384, 0.02),
    _row("Longhua", "NV", 98.8, 0.06, 85.7, 1.3, 88.7, 1.3, 0.0422, 0.07),
    _row("Longhua", "BKL", 97.7, 0.02, 81.7, 4.4, 97.7, 4.3, 0.0854, 0.08),
    _row("Longhua", "DF", 99.5, 0.01, 87.2, 0.0, 82.8, 1.3, 0.0453, 0.02),
    _row("Longhua", "VASC", 99.5, 0.02, 94.3, 1.5, 98.2, 2.4, 0.0537, 0.01),
    _row("Longhua", "AK", 98.6, 0.02, 91.8, 2.3, 94.0, 4.3, 0.0157, 0.06),
    _row("Longhua", "MEL", 93.0, 0.01, 75.0, 2.6, 98.2, 3.2, 0.0361, 0.04),
    _row("Longhua", "BCC", 99.1, 0.03, 91.6, 1.4, 94.6, 1.3, 0.0384, 0.08),
    _row("Longhua", "malignant", 96.4, 0.02, 96.0, 1.9, 96.9, 2.6, 0.0449, 0.05),
)


@dataclass(frozen=True)
class Headline:
    figure: str
    value: float  # a fraction (0.985), as our figures are
    cohort: str
    source: str
    ours: str | None  # the key of our figure ("auroc.malignant", ...), None when we have no counterpart


#: Headline figures: the seed paper's Table 3 and the BCC-vs-SK CLIP paper.
HEADLINES: tuple[Headline, ...] = (
    Headline("AUROC, malignant vs benign", 0.985, "internal (ISIC 2018)", f"{SEED_PAPER}, Table 3", "auroc.malignant"),
    Headline("Sensitivity, malignant", 0.976, "internal (ISIC 2018)", f"{SEED_PAPER}, Table 3", "sensitivity.malignant"),
    Headline("Specificity, malignant", 0.984, "internal (ISIC 2018)", f"{SEED_PAPER}, Table 3", "specificity.malignant"),
    Headline("Accuracy", 0.978, "internal (ISIC 2018)", f"{SEED_PAPER}, Table 3", None),
    Headline("AUROC, malignant vs benign", 0.957, "external (Jinan + Longhua)",
             f"{SEED_PAPER}, Table 3 (the text says 96.8)", "auroc.malignant"),
    Headline("Sensitivity, malignant", 0.950, "external (Jinan + Longhua)", f"{SEED_PAPER}, Table 3",
             "sensitivity.malignant"),
    Headline("Specificity, malignant", 0.968, "external (Jinan + Longhua)", f"{SEED_PAPER}, Table 3",
             "specificity.malignant"),
    Headline("Accuracy", 0.969, "external (Jinan + Longhua)", f"{SEED_PAPER}, Table 3", None),
    Headline("AUROC, BCC vs SK", 0.79, "its test set", CLIP_PAPER, "auroc.bcc_vs_sk"),
    Headline("AUROC, BCC vs SK", 0.71, "its validation set", CLIP_PAPER, "auroc.bcc_vs_sk"),
)  # fmt: skip


def table2_by_group() -> dict[str, dict[str, dict]]:
    """Table 2 as {group: {cohort: row}}; a cohort without figures for a group is absent."""
    table: dict[str, dict[str, dict]] = {}
    for row in TABLE2:
        table.setdefault(row.group, {})[row.cohort] = row.as_dict()
    return table


def headlines(ours: dict[str, float | None]) -> list[dict]:
    """The headline figures, each with ours under the same key (None where we have none or too few cases)."""
    return [{**asdict(h), "ours": ours.get(h.ours) if h.ours else None} for h in HEADLINES]
