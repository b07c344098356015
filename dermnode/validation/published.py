"""Published figures shown beside ours where the classes match, each with its source.

Only figures whose source is at hand belong here; nothing is estimated or copied from memory.
The seed paper (hybrid deep learning + radiomics + patient metadata on ISIC dermoscopy, PMC11347612)
is represented by the headline AUROCs of its abstract on the internal ISIC 2018 cohort; its
per-class Table 2 is not yet entered: those figures must come from the paper itself, one
:class:`PublishedFigure` per number, with ``metric`` named as in :func:`metric_ids` below.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from dermnode.contract import CLASS_CODES


@dataclass(frozen=True)
class PublishedFigure:
    metric: str  # an id of metric_ids(), e.g. "auroc.MEL", "sensitivity.malignant"
    value: float
    source: str  # the publication and the table or sentence the number comes from
    cohort: str  # the data the figure was measured on

    def as_dict(self) -> dict:
        return asdict(self)


SEED_PAPER = (
    "Hybrid deep learning and radiomics with patient metadata for dermoscopic skin lesion diagnosis "
    "(PMC11347612), abstract"
)

PUBLISHED: tuple[PublishedFigure, ...] = (
    PublishedFigure(metric="auroc.malignant", value=0.99, source=f"{SEED_PAPER}: benign vs malignant AUROC",
                    cohort="internal ISIC 2018 challenge cohort"),
    PublishedFigure(metric="auroc.macro", value=0.985, source=f"{SEED_PAPER}: multiclass AUROC",
                    cohort="internal ISIC 2018 challenge cohort"),
    PublishedFigure(
        metric="auroc.bcc_vs_sk",
        value=0.79,
        source="BCC-vs-SK CLIP/CoOp paper",
        cohort="ISIC test cohort",
    ),
)

#: Shown in the report while the seed paper's per-class Table 2 is missing from PUBLISHED.
MISSING_NOTE = (
    "Only the seed paper's headline AUROCs (from its abstract) are shown; its Table 2 (per-class "
    "AUROC, sensitivity, specificity, PPV and NPV of the hybrid Mask R-CNN + radiomics + ResNet-50 + "
    "metadata classifier) has not been entered yet: fill it in from the paper in "
    "dermnode/validation/published.py."
)


def metric_ids() -> list[str]:
    """Every metric id a published figure may name (the keys of the report's headline figures)."""
    groups = [*CLASS_CODES, "macro", "malignant"]
    ids = [f"auroc.{g}" for g in groups] + ["auroc.bcc_vs_sk"]
    for measure in ("sensitivity", "specificity", "ppv", "npv"):
        ids += [f"{measure}.{g}" for g in groups]
    return ids


def seed_paper_table2_present() -> bool:
    """True once per-class figures of the seed paper's Table 2 are entered."""
    return any(f.metric.split(".")[1] in CLASS_CODES for f in PUBLISHED)


def comparison(ours: dict[str, float | None]) -> list[dict]:
    """One row per published figure: its value, ours under the same id, and the source."""
    return [{**figure.as_dict(), "ours": ours.get(figure.metric)} for figure in PUBLISHED]
