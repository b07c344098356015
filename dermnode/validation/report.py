"""Assemble a validation report from cases and write it: report.json, cases.csv and report.html."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from dermnode.contract import CLASS_CODES
from dermnode.models.model_card import ModelCard
from dermnode.validation import published
from dermnode.validation.ablation import ablation
from dermnode.validation.cohort import Case
from dermnode.validation.identity import describe, models_used
from dermnode.validation.masks import Overlap, case_overlap
from dermnode.validation.minimum import MinimumCounts
from dermnode.validation.missed import missed_malignancies, thumbnails
from dermnode.validation.overlap import training_overlap
from dermnode.validation.report_metrics import (
    MALIGNANT,
    CaseArrays,
    calibration,
    confusion,
    curves,
    discrimination,
    table2,
    veto_by_diagnosis,
)
from dermnode.validation.subgroups import subgroups
from dermnode.validation.truth import Exclusion
from dermnode.validation.report_warnings import warnings

CASE_COLUMNS: tuple[str, ...] = (
    "key", "study_uid", "sop_instance_uid", "accession_number", "truth", "truth_malignant", "top_class",
    *(f"p_{code}" for code in CLASS_CODES),
    "malignancy_probability", "veto_threshold", "veto", "bcc_probability",
    "age", "sex", "anatomic_site", "dice", "iou", "mask_note", "models", "seen_in_training",
)  # fmt: skip


@dataclass(frozen=True)
class ReportOptions:
    resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95
    calibration_bins: int = 10
    progress: bool = False
    minimum: MinimumCounts = MinimumCounts()


@dataclass
class Report:
    data: dict  # everything report.json holds
    cases: list[dict] = field(default_factory=list)  # one row per case, the columns of cases.csv
    thumbnails: dict[str, bytes] = field(default_factory=dict)  # PNG per missed case key (HTML only)


def _segmentation(cases: list[Case], overlaps: dict[str, Overlap]) -> dict:
    scored = [(key, o) for key, o in overlaps.items() if o.dice is not None]

    def stats(values: list[float]) -> dict | None:
        if not values:
            return None
        return {"mean": float(np.mean(values)), "median": float(np.median(values)),
                "min": float(np.min(values)), "max": float(np.max(values))}  # fmt: skip

    return {
        "n_with_truth_mask": len(overlaps),
        "n_scored": len(scored),
        "dice": stats([o.dice for _, o in scored]),
        "iou": stats([o.iou for _, o in scored]),
        "not_scored": [{"key": key, "note": o.note} for key, o in overlaps.items() if o.dice is None],
    }


def _headline(discrimination_: dict, table: dict) -> dict[str, float | None]:
    """Our figures under the ids published figures use (operating points at the veto threshold)."""
    ours = {f"auroc.{group}": entry["auroc"] for group, entry in discrimination_.items()}
    for row in table["rows"]:
        for measure in ("sensitivity", "specificity", "ppv", "npv"):
            ours[f"{measure}.{row['group']}"] = row["at_veto"][measure] if row["at_veto"] else None
    return ours


def _case_row(case: Case, overlap: Overlap | None, seen: list[str]) -> dict:
    return {
        "key": case.key,
        **{k: case.ids.get(k) for k in ("study_uid", "sop_instance_uid", "accession_number")},
        "truth": case.truth,
        "truth_malignant": case.truth_malignant,
        "top_class": case.top_class,
        **{f"p_{code}": case.probabilities[code] for code in CLASS_CODES},
        "malignancy_probability": case.malignancy_probability,
        "veto_threshold": case.veto_threshold,
        "veto": case.veto,
        "bcc_probability": case.bcc_probability,
        "age": case.age,
        "sex": case.sex,
        "anatomic_site": case.anatomic_site,
        "dice": overlap.dice if overlap else None,
        "iou": overlap.iou if overlap else None,
        "mask_note": overlap.note if overlap else None,
        "models": describe(case.models),
        "seen_in_training": "; ".join(seen) or None,
    }


def _figures(cases: list[Case], options: ReportOptions) -> tuple[CaseArrays, dict, dict]:
    arrays = CaseArrays.of(cases)
    auroc = discrimination(arrays, options.resamples, options.seed, options.confidence, options.progress,
                           options.minimum)  # fmt: skip
    return arrays, auroc, table2(arrays, auroc, options.minimum)


def _without_seen(cases: list[Case], seen: dict[str, list[str]], options: ReportOptions) -> dict | None:
    """Discrimination and the veto's operating point over the cases no model has seen."""
    if not seen:
        return None
    unseen = [case for case in cases if case.key not in seen]
    _, auroc, table = _figures(unseen, replace(options, progress=False))
    return {"cases": len(unseen), "discrimination": auroc,
            "malignant_at_veto": next(r for r in table["rows"] if r["group"] == MALIGNANT)["at_veto"]}  # fmt: skip


def build_report(
    cases: list[Case],
    excluded: list[Exclusion],
    *,
    truth_rows: int,
    unmatched_outputs: int = 0,
    source: dict | None = None,
    options: ReportOptions = ReportOptions(),
    cards: dict[str, ModelCard] | None = None,
    images: dict[str, Path] | None = None,
) -> Report:
    """Every figure of the report, for the joined cases and the rows left out.

    ``cards`` are the model cards by weights sha256 (identity, training overlap, ablation);
    ``images`` the source DICOM files by SOP Instance UID (thumbnails of missed malignancies).
    """
    cards = cards or {}
    overlaps = {}
    for case in cases:
        overlap = case_overlap(case.truth_mask_path, case.predicted_mask)
        if overlap is not None:
            overlaps[case.key] = overlap
    arrays, auroc, table = _figures(cases, options)
    ours = _headline(auroc, table)
    models = models_used(cases, cards)
    seen = training_overlap(cases, cards)
    seen["without_seen"] = _without_seen(cases, seen["seen"], options)
    missed = missed_malignancies(cases, seen["seen"])
    data = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": source or {},
        "options": {"bootstrap_resamples": options.resamples, "seed": options.seed,
                    "confidence": options.confidence, "calibration_bins": options.calibration_bins,
                    "minimum": options.minimum.as_dict()},
        "counts": {
            "truth_rows": truth_rows,
            "cases": len(cases),
            "excluded": len(excluded),
            "recorded_outputs_without_truth": unmatched_outputs,
            "by_truth": {label: sum(c.truth == label for c in cases) for label in sorted({c.truth for c in cases})},
            "malignant": int(arrays.malignant.sum()),
            "benign": int(len(cases) - arrays.malignant.sum()),
        },
        "models": models,
        "training_overlap": seen,
        "excluded": [e.as_dict() for e in excluded],
        "discrimination": auroc,
        "table2": table,
        "veto_by_diagnosis": veto_by_diagnosis(cases, options.minimum),
        "missed_malignancies": missed,
        "confusion_matrix": confusion(arrays),
        "calibration": calibration(arrays, options.calibration_bins),
        "segmentation": _segmentation(cases, overlaps),
        "subgroups": subgroups(cases, arrays, options.minimum, options.resamples, options.seed, options.confidence),
        "published": {"note": published.NOTE, "table2": published.table2_by_group(),
                      "headlines": published.headlines(ours)},
        "ablation": ablation(models["models"], cards),
        "curves": curves(arrays, options.minimum),
    }
    data["warnings"] = warnings(data)
    rows = [_case_row(case, overlaps.get(case.key), seen["seen"].get(case.key, [])) for case in cases]
    data["cases"] = rows
    return Report(data=_json_ready(data), cases=rows, thumbnails=thumbnails(cases, missed, images or {}))


def _json_ready(value):
    """Plain JSON types: numpy scalars unwrapped, infinities and NaN as None."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_report(report: Report, out_dir: Path) -> dict[str, Path]:
    """Write report.json, cases.csv and the self-contained report.html into ``out_dir``."""
    from dermnode.validation.html_report import render_html

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "csv": out_dir / "cases.csv", "html": out_dir / "report.html"}
    paths["json"].write_text(json.dumps(report.data, indent=1))
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CASE_COLUMNS)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in report.cases)
    paths["html"].write_text(render_html(report.data, report.thumbnails), encoding="utf-8")
    return paths
