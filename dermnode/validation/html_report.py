"""A self-contained HTML page from report.json's content: tables, and plots embedded as PNG data URIs.

The sections a committee reads first (warnings, models, training overlap, published figures, missed
malignancies, ablation) are in :mod:`dermnode.validation.html_committee`; the building blocks in
:mod:`dermnode.validation.html_common`.
"""

from __future__ import annotations

from collections import Counter
from html import escape

from dermnode.validation import html_committee as committee
from dermnode.validation.html_common import STYLE, f, figure, png, table, with_ci
from dermnode.validation.plots import all_plots

ROW_NAMES = {"macro": "Macro average", "malignant": "Malignant vs benign", "bcc_vs_sk": "BCC vs SK (BKL)"}


def _img(plots: dict[str, bytes], name: str, alt: str) -> str:
    if name not in plots:
        return f'<p class="note">No {escape(alt)}: not enough cases.</p>'
    return png(plots[name], alt)


def _discrimination(report: dict) -> str:
    rows = [[ROW_NAMES.get(group, group), f(entry.get("n_positive")), f(entry.get("n_negative")), with_ci(entry),
             escape(entry["note"] or "")] for group, entry in report["discrimination"].items()]  # fmt: skip
    conf = int(report["options"]["confidence"] * 100)
    return table(["", "positives", "negatives", f"AUROC ({conf}% bootstrap CI)", "note"], rows,
                 cell_classes={4: "text"})  # fmt: skip


def _points(row: dict, point: str, measures: tuple[str, ...]) -> list[str]:
    values = row[point] or {}
    return [figure(values.get(m), row["note"]) for m in measures]


def _table2(report: dict) -> str:
    rows = report["table2"]["rows"]
    classes = ["overall" if r["group"] in ("macro", "malignant") else "" for r in rows]
    measures = ("sensitivity", "specificity", "ppv", "npv")
    conf = int(report["options"]["confidence"] * 100)
    at_veto = table(
        ["", "n+", "n&minus;", f"AUROC ({conf}% CI)", "Sens", "Spec", "PPV", "NPV"],
        [[ROW_NAMES.get(r["group"], r["group"]), f(r["n_positive"]), f(r["n_negative"]), with_ci(r),
          *_points(r, "at_veto", measures)] for r in rows],
        classes,
    )  # fmt: skip
    youden = table(
        ["", "Youden threshold", "Sens", "Spec", "PPV", "NPV"],
        [[ROW_NAMES.get(r["group"], r["group"]), figure((r["youden"] or {}).get("threshold"), r["note"]),
          *_points(r, "youden", measures)] for r in rows],
        classes,
    )  # fmt: skip
    thresholds = ", ".join(f"{t:g}" for t in report["table2"]["case_thresholds"]) or "&ndash;"
    minimum = report["options"]["minimum"]
    return (
        f"<h3>At the veto threshold {report['table2']['veto_threshold']:g}</h3>{at_veto}"
        f"<h3>At each group's Youden-optimal threshold on this cohort (optimistic)</h3>{youden}"
        f'<p class="note">Cases were analysed with veto threshold(s) {thresholds}. Class rows: one vs rest on '
        "P(class). Malignant row: the malignancy probability P(MEL)+P(BCC)+P(AK)+P(SCC); at the veto threshold "
        "this is the node's veto decision. The macro row averages the classes that reach the minimum count. "
        f"Sensitivity needs at least {minimum['positives']} positives, specificity {minimum['negatives']} "
        "negatives; AUROC, PPV, NPV and thresholds need both.</p>"
    )


def _veto(report: dict) -> str:
    rows = [[r["truth"], f(r["malignant"]), str(r["n"]), str(r["flagged"]), figure(r["share_flagged"], r["note"])]
            for r in report["veto_by_diagnosis"]]  # fmt: skip
    return table(["truth", "malignant", "cases", "flagged by the veto", "share flagged"], rows)


def _calibration(report: dict) -> str:
    cal = report["calibration"]
    rows = [[name, f(cal[key]["n"]), f(cal[key]["ece"]), f(cal[key]["brier"])]
            for key, name in (("malignant", "malignancy probability"), ("top_class", "top-class probability"))
            if cal.get(key)]  # fmt: skip
    text = table(["probability", "cases", "expected calibration error", "Brier score"], rows)
    if cal.get("multiclass_brier") is not None:
        text += f'<p class="note">Multi-class Brier score (8 classes, range 0&ndash;2): {cal["multiclass_brier"]:.3f}</p>'
    return text


def _segmentation(report: dict) -> str:
    seg = report["segmentation"]
    if not seg["n_with_truth_mask"]:
        return '<p class="note">The truth CSV gives no masks (column <code>mask</code>).</p>'
    rows = [[name, f(seg[key]["mean"]), f(seg[key]["median"]), f(seg[key]["min"]), f(seg[key]["max"])]
            for key, name in (("dice", "Dice"), ("iou", "IoU")) if seg[key]]  # fmt: skip
    text = f'<p>{seg["n_scored"]} of {seg["n_with_truth_mask"]} cases with a truth mask scored.</p>'
    text += table(["", "mean", "median", "min", "max"], rows)
    reasons = Counter(n["note"] for n in seg["not_scored"])
    if reasons:
        text += table(["not scored because", "cases"], [[escape(r), str(c)] for r, c in reasons.items()],
                      cell_classes={0: "text"})  # fmt: skip
    return text


def _subgroups(report: dict) -> str:
    parts = []
    conf = int(report["options"]["confidence"] * 100)
    for kind, rows in report["subgroups"].items():
        cells = [[escape(r["group"]), str(r["n"]), str(r["n_malignant"]),
                  with_ci({"auroc": r["auroc_malignant"], **r}), figure(r["sensitivity_veto"], r["note"]),
                  figure(r["specificity_veto"], r["note"]), escape(r["note"] or "")] for r in rows]  # fmt: skip
        parts.append(f"<h3>{escape(kind.replace('_', ' '))}</h3>" + table(
            ["group", "cases", "malignant", f"AUROC malignant ({conf}% CI)", "Sens @veto", "Spec @veto", "note"],
            cells, cell_classes={6: "text"}))  # fmt: skip
    return "".join(parts)


def _excluded(report: dict) -> str:
    excluded = report["excluded"]
    if not excluded:
        return "<p>No truth row was left out.</p>"
    reasons = Counter(e["reason"] for e in excluded)
    text = table(["reason", "rows"], [[escape(r), str(c)] for r, c in reasons.most_common()], cell_classes={0: "text"})
    rows = [[f(e["row"]), escape(e["key"]), escape(e["reason"])] for e in excluded]
    return text + "<details><summary>every excluded row</summary>" + table(
        ["row", "key", "reason"], rows, cell_classes={1: "hash", 2: "text"}) + "</details>"


def render_html(report: dict, thumbnails: dict[str, bytes] | None = None) -> str:
    """The whole report as one HTML document with no external references; ``thumbnails`` (PNG by case
    key) illustrate the missed malignancies."""
    plots = all_plots(report)
    counts = report["counts"]
    source = ", ".join(f"{escape(k)}: {escape(str(v))}" for k, v in report["source"].items())
    by_truth = ", ".join(f"{escape(k)} {v}" for k, v in counts["by_truth"].items())
    sections = [
        ("Models that produced these results", committee.identity(report)),
        ("Training overlap", committee.overlap(report, ROW_NAMES)),
        ("Discrimination (AUROC)", _discrimination(report)),
        ("Sensitivity, specificity, PPV, NPV (Table 2 layout)", _table2(report)),
        ("Published figures beside ours", committee.published(report, ROW_NAMES)),
        ("The veto by diagnosis", _veto(report)),
        (f"Missed malignancies ({len(report['missed_malignancies'])})", committee.missed(report, thumbnails or {})),
        ("Ablation: image only, + metadata, + radiomics", committee.ablation(report)),
        ("ROC curves", _img(plots, "roc", "ROC curves")),
        ("Precision-recall curves", _img(plots, "precision_recall", "precision-recall curves")),
        ("Confusion matrix", _img(plots, "confusion_matrix", "confusion matrix")),
        ("Calibration", _calibration(report) + _img(plots, "calibration", "reliability diagram")),
        ("Segmentation (Dice, IoU)", _segmentation(report)),
        ("Subgroups", _img(plots, "subgroups", "subgroup plot") + _subgroups(report)),
        (f"Excluded truth rows ({counts['excluded']})", _excluded(report)),
    ]
    body = "".join(f"<h2>{title}</h2>{content}" for title, content in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dermnode validation report</title>
<style>{STYLE}</style></head><body>
<h1>dermnode validation report</h1>
<p class="note">Generated {escape(report["generated_at"])}. Source: {source or "&ndash;"}.
Not for clinical use.</p>
{committee.warning_box(report)}
<p><b>{counts["cases"]}</b> cases joined from {counts["truth_rows"]} truth rows ({counts["malignant"]} malignant,
{counts["benign"]} benign; {by_truth or "none"}); <b>{counts["excluded"]}</b> truth rows excluded;
{counts["recorded_outputs_without_truth"]} recorded outputs without truth.</p>
{body}
</body></html>
"""
