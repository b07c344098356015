"""The report's sections for a committee that signs it: warnings, model identity, training overlap,
published figures beside ours, missed malignancies and the ablation."""

from __future__ import annotations

from html import escape

from dermnode.contract import CLASS_CODES, CLASS_NAMES
from dermnode.validation.html_common import f, figure, png, table, with_ci
from dermnode.validation.published import COHORTS


def warning_box(report: dict) -> str:
    if not report["warnings"]:
        return ""
    items = "".join(f"<li>{escape(w)}</li>" for w in report["warnings"])
    return f'<div class="warnings"><ul>{items}</ul></div>'


def identity(report: dict) -> str:
    models = report["models"]["models"]
    if not models:
        return '<p class="note">The recorded results name no model.</p>'
    cards = [m["card"] or {} for m in models]
    fields = [
        ("version", [escape(m["version"]) + (" <b>(mixed)</b>" if m["name"] in report["models"]["mixed"] else "")
                     for m in models]),
        ("profile", [f(c.get("profile")) for c in cards]),
        ("weights sha256", [f'<span class="hash">{escape(m["sha256"])}</span>' for m in models]),
        ("included results", [str(m["results"]) for m in models]),
        ("training data", [f(c.get("training_data")) if c else "model card not found" for c in cards]),
        ("split", [f(c.get("split")) for c in cards]),
        ("image ids in the card", [f"{c['train_ids']} train, {c['validation_ids']} validation" if c else "&ndash;"
                                   for c in cards]),
        ("licence", [f(c.get("licence")) for c in cards]),
    ]  # fmt: skip
    rows = [[name, *values] for name, values in fields]
    header = [""] + [escape(m["name"]) for m in models]
    css = {i: "text" for i in range(1, len(models) + 1)}
    note = '<p class="note">Each result\'s models are listed per case in cases.csv (column <code>models</code>).</p>'
    return table(header, rows, cell_classes=css) + note


def overlap(report: dict, row_names: dict[str, str]) -> str:
    seen = report["training_overlap"]
    text = (f'<p>{seen["n_seen"]} of {seen["cases"]} cases were in the training or validation split of a model that '
            f'analysed them; {seen["not_checked"]} could not be checked. Method: {escape(seen["method"])}.</p>')
    by_model = [[escape(model), str(c["train"]), str(c["validation"])] for model, c in seen["by_model"].items()]
    if by_model:
        text += table(["model", "cases in its training split", "in its validation split"], by_model)
    without = seen["without_seen"]
    if without is None:
        return text + '<p class="note">No figures to compare: no included case was seen in training.</p>'
    if not without["cases"]:
        return text + ("<p><b>Every checked case was seen in training: these cases cannot show how the models do "
                       "on new patients, and no figures remain without them.</b></p>")
    conf = int(report["options"]["confidence"] * 100)
    rows = []
    for group, entry in report["discrimination"].items():
        other = without["discrimination"][group]
        rows.append([row_names.get(group, group), f"{f(entry.get('n_positive'))}/{f(entry.get('n_negative'))}",
                     with_ci(entry), f"{f(other.get('n_positive'))}/{f(other.get('n_negative'))}", with_ci(other)])
    veto_all = next(r for r in report["table2"]["rows"] if r["group"] == "malignant")
    for measure in ("sensitivity", "specificity"):
        rows.append([f"{measure.capitalize()} at the veto", "", figure((veto_all["at_veto"] or {}).get(measure),
                     veto_all["note"]), "", f((without["malignant_at_veto"] or {}).get(measure))])  # fmt: skip
    return text + table(
        ["", "all cases: n+/n&minus;", f"AUROC ({conf}% CI)", f"without seen cases ({without['cases']}): n+/n&minus;",
         f"AUROC ({conf}% CI)"], rows)  # fmt: skip


def _measure(entry: dict | None, digits: int = 1) -> str:
    if entry is None:
        return "&ndash;"
    return f"{entry['percent']:.{digits}f} &plusmn;{entry['sd']:g}"


def published(report: dict, row_names: dict[str, str]) -> str:
    pub = report["published"]
    by_group = {r["group"]: r for r in report["table2"]["rows"]}
    groups = [*CLASS_CODES, "malignant"]

    def name(group: str) -> str:
        return escape(CLASS_NAMES.get(group, row_names.get(group, group)))

    auroc_rows, point_rows = [], []
    for group in groups:
        ours, theirs = by_group[group], pub["table2"].get(group, {})
        youden = ours["youden"] or {}
        auroc_rows.append([name(group), with_ci(ours), figure(youden.get("threshold"), ours["note"])]
                          + [c for cohort in COHORTS for c in (_measure(theirs.get(cohort, {}).get("auroc")),
                             _measure(theirs.get(cohort, {}).get("threshold"), 4))])  # fmt: skip
        point_rows.append([name(group), figure(youden.get("sensitivity"), ours["note"]),
                           figure(youden.get("specificity"), ours["note"])]
                          + [_measure(theirs.get(cohort, {}).get(m)) for cohort in COHORTS
                             for m in ("sensitivity", "specificity")])  # fmt: skip
    auroc_head = ["", "ours AUROC (CI)", "ours thr."] + [h for c in COHORTS for h in (f"{c} AUROC %", "thr.")]
    point_head = ["", "ours Sens", "ours Spec"] + [f"{c} {m}" for c in COHORTS for m in ("Sens %", "Spec %")]
    headline_rows = [[escape(h["figure"]), escape(h["cohort"]), f(h["value"]), f(h["ours"]), escape(h["source"])]
                     for h in pub["headlines"]]  # fmt: skip
    return (
        f'<p><b>{escape(pub["note"])}</b></p>'
        "<h3>AUROC and decision threshold per diagnosis</h3>" + table(auroc_head, auroc_rows, cell_classes={0: "text"})
        + "<h3>Sensitivity and specificity per diagnosis</h3>" + table(point_head, point_rows, cell_classes={0: "text"})
        + '<p class="note">Ours: one vs rest on P(class) (malignant: the malignancy probability) at each group\'s '
        "Youden-optimal threshold on this cohort, which flatters us; the node's own operating point (the veto) "
        "is in the Table 2 layout above. Published: percent &plusmn; SD as printed in the seed paper's Table 2 "
        "(PMC11347612); its squamous cell carcinoma has no Longhua figures.</p>"
        "<h3>Headline figures</h3>"
        + table(["figure", "published cohort", "published", "this cohort", "source"], headline_rows,
                cell_classes={0: "text", 1: "text", 4: "text"})
        + '<p class="note">Our sensitivity and specificity here are the veto\'s.</p>'
    )  # fmt: skip


def missed(report: dict, thumbnails: dict[str, bytes]) -> str:
    rows = report["missed_malignancies"]
    if not rows:
        return "<p>No malignant case was missed by the veto.</p>"
    cells = [[png(thumbnails[r["key"]], f"case {r['key']}") if r["key"] in thumbnails else '<span class="small">'
              "source image not reachable</span>", escape(r["key"]), escape(r["truth"]), f(r["malignancy_probability"]),
              f(r["veto_threshold"], 2), f"{escape(r['top_class'])} {f(r['top_probability'], 2)}",
              escape(r["seen_in_training"] or "no")] for r in rows]  # fmt: skip
    return (
        '<p class="note">Malignant by truth, veto not fired; lowest malignancy probability first. The green '
        "outline is the node's lesion mask. Thumbnails need the source images (the node's spool, or "
        "<code>--images</code>).</p>"
        + table(["image", "case", "truth", "P(malignant)", "veto thr.", "top class", "seen in training"], cells,
                cell_classes={1: "hash", 6: "text"})
    )  # fmt: skip


def ablation(report: dict) -> str:
    section = report["ablation"]
    text = f'<p class="note"><b>{escape(section["cohort_note"])}</b></p>'
    for card in section["model_cards"]:
        rows = [[escape(head), f(v.get("auroc_malignant")), f(v.get("auroc_macro"))] for head, v in card["heads"].items()]
        text += (f"<p>From the model card of {escape(card['model'])}, measured on its own validation split "
                 f"({escape(card['split'])}), not on these cases:</p>"
                 + table(["head", "AUROC malignant", "AUROC macro"], rows))  # fmt: skip
    return text
