"""The report's plots, drawn from report.json's sections with matplotlib (Agg) into PNG bytes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dermnode.contract import CLASS_CODES  # noqa: E402

_COLOURS = {**dict(zip(CLASS_CODES, plt.get_cmap("tab10").colors)), "malignant": "black", "bcc_vs_sk": "#d35400"}
_LABELS = {"malignant": "malignant vs benign", "bcc_vs_sk": "BCC vs SK (BKL)"}


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def _curve_axes(axes, groups: dict, x: str, y: str, names: list[str], figures: dict[str, str]) -> None:
    """One step curve per name present in ``groups``; a panel with none says why it is empty."""
    drawn = [name for name in names if name in groups]
    for name in drawn:
        points = groups[name]
        style = {"color": _COLOURS.get(name, "black"), "lw": 2.5 if name == "malignant" else 1.4}
        axes.step(points[x], points[y], where="post", label=f"{_LABELS.get(name, name)} ({figures[name]})", **style)
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(-0.01, 1.01)
    axes.grid(alpha=0.3)
    if drawn:
        axes.legend(fontsize=8, loc="lower right" if x == "fpr" else "lower left")
    else:
        axes.text(0.5, 0.5, "no curve: the cohort lacks\ncases of both classes", ha="center", va="center", color="grey",
                  bbox={"facecolor": "white", "edgecolor": "none"})


def roc_plot(report: dict) -> bytes | None:
    """ROC curves: one-vs-rest per class (left), malignant vs benign and BCC vs SK (right)."""
    roc = report["curves"]["roc"]
    if not roc:
        return None
    auroc = {g: f"AUROC {e['auroc']:.3f}" for g, e in report["discrimination"].items() if e["auroc"] is not None}
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8))
    _curve_axes(left, roc, "fpr", "tpr", list(CLASS_CODES), auroc)
    _curve_axes(right, roc, "fpr", "tpr", ["malignant", "bcc_vs_sk"], auroc)
    for axes, title in ((left, "per class (one vs rest)"), (right, "malignant vs benign; BCC vs SK")):
        axes.plot([0, 1], [0, 1], ls=":", color="grey")
        axes.set(xlabel="1 - specificity", ylabel="sensitivity", title=title)
    return _png(figure)


def pr_plot(report: dict) -> bytes | None:
    """Precision-recall curves with average precision, laid out like the ROC plot."""
    pr = report["curves"]["precision_recall"]
    if not pr:
        return None
    ap = {g: f"AP {e['average_precision']:.3f}" for g, e in pr.items()}
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8))
    _curve_axes(left, pr, "recall", "precision", list(CLASS_CODES), ap)
    _curve_axes(right, pr, "recall", "precision", ["malignant", "bcc_vs_sk"], ap)
    for axes, title in ((left, "per class (one vs rest)"), (right, "malignant vs benign; BCC vs SK")):
        axes.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title=title)
    return _png(figure)


def confusion_plot(report: dict) -> bytes | None:
    """Counts, coloured by the share of each true class (row-normalised)."""
    matrix = report["confusion_matrix"]
    if not matrix["n"]:
        return None
    counts = np.array(matrix["counts"], dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(6.2, 5.4))
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            axes.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=9,
                      color="white" if shares[i, j] > 0.6 else "black")  # fmt: skip
    ticks = range(len(matrix["classes"]))
    axes.set_xticks(ticks, matrix["classes"])
    axes.set_yticks(ticks, matrix["classes"])
    axes.set(xlabel="top class (node)", ylabel="truth", title=f"confusion matrix, {matrix['n']} cases")
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of the true class")
    return _png(figure)


def reliability_plot(report: dict) -> bytes | None:
    """Reliability diagrams of the malignancy probability and of the top-class probability."""
    sections = [(name, report["calibration"][name]) for name in ("malignant", "top_class")]
    sections = [(name, s) for name, s in sections if s]
    if not sections:
        return None
    figure, axes_row = plt.subplots(1, len(sections), figsize=(5.5 * len(sections), 4.8), squeeze=False)
    for axes, (name, section) in zip(axes_row[0], sections):
        bins = [b for b in section["bins"] if b["count"]]
        centres = [(b["lower"] + b["upper"]) / 2 for b in section["bins"]]
        width = section["bins"][0]["upper"] - section["bins"][0]["lower"]
        total = max(sum(b["count"] for b in section["bins"]), 1)
        axes.bar(centres, [b["count"] / total for b in section["bins"]], width=width * 0.9, color="#dddddd",
                 label="share of cases")  # fmt: skip
        axes.plot([0, 1], [0, 1], ls=":", color="grey", label="perfect calibration")
        axes.plot([b["mean_predicted"] for b in bins], [b["observed_fraction"] for b in bins], "o-",
                  color="#c0392b", label="observed")  # fmt: skip
        what = "malignancy probability" if name == "malignant" else "top-class probability"
        axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel=f"predicted {what}",
                 ylabel="observed share " + ("malignant" if name == "malignant" else "correct"),
                 title=f"ECE {section['ece']:.3f}, Brier {section['brier']:.3f}")  # fmt: skip
        axes.legend(fontsize=8, loc="upper left")
    return _png(figure)


def subgroup_plot(report: dict) -> bytes | None:
    """Malignant-vs-benign AUROC per subgroup with its bootstrap interval and case count."""
    groups = report["subgroups"]
    rows = [(kind, row) for kind in ("age", "sex", "anatomic_site") for row in groups.get(kind, [])]
    if not rows:
        return None
    figure, axes = plt.subplots(figsize=(11, 0.32 * len(rows) + 1.2))
    palette = {"age": "#2e86c1", "sex": "#8e44ad", "anatomic_site": "#16a085"}
    labels = []
    for position, (kind, row) in enumerate(rows):
        value = row["auroc_malignant"]
        labels.append(f"{kind.replace('_', ' ')}: {row['group']}")
        if value is not None:
            axes.barh(position, value, color=palette[kind])
        if row.get("ci_high") is not None:
            axes.errorbar(value, position, xerr=[[value - row["ci_low"]], [row["ci_high"] - value]], color="black",
                          capsize=3, lw=1)  # fmt: skip
        reason = f" ({row['note'].split(':')[0]})" if value is None and row["note"] else ""
        axes.text(max(value or 0, row.get("ci_high") or 0) + 0.01, position, f"n={row['n']}{reason}", va="center",
                  fontsize=8)  # fmt: skip
    overall = report["discrimination"]["malignant"]["auroc"]
    if overall is not None:
        axes.axvline(overall, color="black", ls="--", lw=1, label=f"all cases {overall:.3f}")
        axes.legend(fontsize=8, loc="lower right")
    axes.set_yticks(range(len(rows)), labels, fontsize=8)
    axes.invert_yaxis()
    axes.set(xlim=(0, 1.15), xlabel="AUROC, malignant vs benign", title="subgroups")
    return _png(figure)


def all_plots(report: dict) -> dict[str, bytes]:
    """Every plot that has data, by name."""
    drawn = {
        "roc": roc_plot(report),
        "precision_recall": pr_plot(report),
        "confusion_matrix": confusion_plot(report),
        "calibration": reliability_plot(report),
        "subgroups": subgroup_plot(report),
    }
    return {name: png for name, png in drawn.items() if png is not None}
