"""A self-contained HTML page from report.json's content: tables, and plots embedded as PNG data URIs."""

from __future__ import annotations

import base64
from collections import Counter
from html import escape

from dermnode.validation.plots import all_plots

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1360px; color: #222; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 2px solid #ccc; padding-bottom: 3px; margin-top: 32px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #eef2f6; white-space: normal; } td:first-child, th:first-child { text-align: left; }
tr.overall td { font-weight: bold; background: #f7f7f7; }
.note { color: #666; font-size: 13px; } .warn { color: #a04000; font-weight: bold; }
img { max-width: 100%; border: 1px solid #eee; margin: 6px 0; }
"""

_ROW_NAMES = {"macro": "Macro average", "malignant": "Malignant vs benign", "bcc_vs_sk": "BCC vs SK (BKL)"}


def _f(value, digits: int = 3) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def _ci(entry: dict) -> str:
    text = _f(entry.get("auroc"))
    if entry.get("ci_low") is not None:
        text += f" ({entry['ci_low']:.3f}&ndash;{entry['ci_high']:.3f})"
    return text


def _table(header: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    css = classes or [""] * len(rows)
    body = "".join(
        (f'<tr class="{c}">' if c else "<tr>") + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
        for row, c in zip(rows, css)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(plots: dict[str, bytes], name: str, alt: str) -> str:
    if name not in plots:
        return f'<p class="note">No {escape(alt)}: not enough cases.</p>'
    data = base64.b64encode(plots[name]).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _discrimination(report: dict) -> str:
    rows = []
    for group, entry in report["discrimination"].items():
        rows.append([_ROW_NAMES.get(group, group), _f(entry.get("n_positive")), _f(entry.get("n_negative")),
                     _ci(entry), escape(entry["note"] or "")])  # fmt: skip
    conf = int(report["options"]["confidence"] * 100)
    return _table(["", "positives", "negatives", f"AUROC ({conf}% bootstrap CI)", "note"], rows)


def _table2(report: dict) -> str:
    table = report["table2"]
    header = ["", "n+", "n&minus;", f"AUROC ({int(report['options']['confidence'] * 100)}% CI)"]
    header += [f"{m} @veto" for m in ("Sens", "Spec", "PPV", "NPV")]
    header += ["Youden thr."] + [f"{m} @Youden" for m in ("Sens", "Spec", "PPV", "NPV")]
    rows, classes = [], []
    for row in table["rows"]:
        cells = [_ROW_NAMES.get(row["group"], row["group"]), _f(row["n_positive"]), _f(row["n_negative"]), _ci(row)]
        for point in ("at_veto", "youden"):
            values = row[point] or {}
            if point == "youden":
                cells.append(_f(values.get("threshold")))
            cells += [_f(values.get(m)) for m in ("sensitivity", "specificity", "ppv", "npv")]
        rows.append(cells)
        classes.append("overall" if row["group"] in ("macro", "malignant") else "")
    thresholds = ", ".join(f"{t:g}" for t in table["case_thresholds"]) or "&ndash;"
    return _table(header, rows, classes) + (
        f'<p class="note">Veto threshold {table["veto_threshold"]:g} (cases were analysed with: {thresholds}). '
        "Class rows: one vs rest on P(class). Malignant row: the malignancy probability "
        "P(MEL)+P(BCC)+P(AK)+P(SCC); at the veto threshold this is the node's veto decision. The Youden "
        "threshold is chosen on this same cohort, so its figures are optimistic.</p>"
    )


def _veto(report: dict) -> str:
    rows = [[r["truth"], _f(r["malignant"]), str(r["n"]), str(r["flagged"]), _f(r["share_flagged"])]
            for r in report["veto_by_diagnosis"]]  # fmt: skip
    return _table(["truth", "malignant", "cases", "flagged by the veto", "share flagged"], rows)


def _calibration(report: dict) -> str:
    cal = report["calibration"]
    rows = [[name, _f(cal[key]["n"]), _f(cal[key]["ece"]), _f(cal[key]["brier"])]
            for key, name in (("malignant", "malignancy probability"), ("top_class", "top-class probability"))
            if cal.get(key)]  # fmt: skip
    text = _table(["probability", "cases", "expected calibration error", "Brier score"], rows)
    if cal.get("multiclass_brier") is not None:
        text += f'<p class="note">Multi-class Brier score (8 classes, range 0&ndash;2): {cal["multiclass_brier"]:.3f}</p>'
    return text


def _segmentation(report: dict) -> str:
    seg = report["segmentation"]
    if not seg["n_with_truth_mask"]:
        return '<p class="note">The truth CSV gives no masks (column <code>mask</code>).</p>'
    rows = [[name, _f(seg[key]["mean"]), _f(seg[key]["median"]), _f(seg[key]["min"]), _f(seg[key]["max"])]
            for key, name in (("dice", "Dice"), ("iou", "IoU")) if seg[key]]  # fmt: skip
    text = f'<p>{seg["n_scored"]} of {seg["n_with_truth_mask"]} cases with a truth mask scored.</p>'
    text += _table(["", "mean", "median", "min", "max"], rows)
    reasons = Counter(n["note"] for n in seg["not_scored"])
    if reasons:
        text += _table(["not scored because", "cases"], [[escape(r), str(c)] for r, c in reasons.items()])
    return text


def _subgroups(report: dict) -> str:
    parts = []
    for kind, rows in report["subgroups"].items():
        cells = [[escape(r["group"]), str(r["n"]), str(r["n_malignant"]), _f(r["auroc_malignant"]),
                  _f(r["auroc_macro"]), _f(r["sensitivity_veto"]), _f(r["specificity_veto"]), escape(r["note"] or "")]
                 for r in rows]  # fmt: skip
        parts.append(f"<h3>{escape(kind.replace('_', ' '))}</h3>" + _table(
            ["group", "cases", "malignant", "AUROC malignant", "AUROC macro", "Sens @veto", "Spec @veto", "note"], cells))
    return "".join(parts)


def _metric_name(metric: str) -> str:
    """"auroc.bcc_vs_sk" -> "AUROC, BCC vs SK (BKL)"."""
    measure, _, group = metric.partition(".")
    label = {"auroc": "AUROC", "ppv": "PPV", "npv": "NPV"}.get(measure, measure.capitalize())
    return f"{label}, {escape(_ROW_NAMES.get(group, group))}"


def _published(report: dict) -> str:
    pub = report["published"]
    rows = [[_metric_name(r["metric"]), _f(r["value"]), _f(r["ours"]), escape(r["cohort"]), escape(r["source"])]
            for r in pub["comparison"]]  # fmt: skip
    text = _table(["figure", "published", "this cohort", "published cohort", "source"], rows)
    if pub["note"]:
        text += f'<p class="warn">{escape(pub["note"])}</p>'
    return text


def _excluded(report: dict) -> str:
    excluded = report["excluded"]
    if not excluded:
        return "<p>No truth row was left out.</p>"
    reasons = Counter(e["reason"] for e in excluded)
    text = _table(["reason", "rows"], [[escape(r), str(c)] for r, c in reasons.most_common()])
    rows = [[_f(e["row"]), escape(e["key"]), escape(e["reason"])] for e in excluded]
    return text + "<details><summary>every excluded row</summary>" + _table(["row", "key", "reason"], rows) + "</details>"


def render_html(report: dict) -> str:
    """The whole report as one HTML document with no external references."""
    plots = all_plots(report)
    counts = report["counts"]
    source = ", ".join(f"{escape(k)}: {escape(str(v))}" for k, v in report["source"].items())
    by_truth = ", ".join(f"{escape(k)} {v}" for k, v in counts["by_truth"].items())
    sections = [
        ("Discrimination (AUROC)", _discrimination(report)),
        ("Sensitivity, specificity, PPV, NPV (Table 2 layout)", _table2(report)),
        ("The veto by diagnosis", _veto(report)),
        ("ROC curves", _img(plots, "roc", "ROC curves")),
        ("Precision-recall curves", _img(plots, "precision_recall", "precision-recall curves")),
        ("Confusion matrix", _img(plots, "confusion_matrix", "confusion matrix")),
        ("Calibration", _calibration(report) + _img(plots, "calibration", "reliability diagram")),
        ("Segmentation (Dice, IoU)", _segmentation(report)),
        ("Subgroups", _img(plots, "subgroups", "subgroup plot") + _subgroups(report)),
        ("Published figures", _published(report)),
        (f"Excluded truth rows ({counts['excluded']})", _excluded(report)),
    ]
    body = "".join(f"<h2>{title}</h2>{content}" for title, content in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dermnode validation report</title>
<style>{_STYLE}</style></head><body>
<h1>dermnode validation report</h1>
<p class="note">Generated {escape(report["generated_at"])}. Source: {source or "&ndash;"}.
Not for clinical use.</p>
<p><b>{counts["cases"]}</b> cases joined from {counts["truth_rows"]} truth rows ({counts["malignant"]} malignant,
{counts["benign"]} benign; {by_truth or "none"}); <b>{counts["excluded"]}</b> truth rows excluded;
{counts["recorded_outputs_without_truth"]} recorded outputs without truth.</p>
{body}
</body></html>
"""
