"""Commands of this room, mounted on the `dermnode` app by dermnode/cli.py: ``validate``.

Heavy imports (matplotlib, SQLAlchemy, highdicom) happen inside the command function. A user
mistake raises UserError (one line on stderr, exit 2: see dermnode/cli.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dermnode.errors import UserError


def _audit_source(config: Path | None, database_url: str | None):  # noqa: ANN202 - outputs, info, settings
    """The audit store named by --database-url, else by the node's settings (returned too: models, spool)."""
    from dermnode.node.settings import describe_errors, load_settings
    from dermnode.validation.sources import outputs_from_audit

    try:
        settings = load_settings(config)
    except Exception as exc:  # noqa: BLE001 - report any settings problem in words
        raise UserError("; ".join(describe_errors(exc))) from None
    url = database_url or settings.database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise UserError(f"no audit database at {url.removeprefix('sqlite:///')} (set --database-url or DERMNODE_HOME)")
    return (*outputs_from_audit(url, (settings.outbox_dir, settings.results_dir)), settings)


def validate(
    truth: Annotated[Path, typer.Option("--truth", help="CSV: sop_instance_uid|study_uid|accession_number, diagnosis[, mask]")],
    out: Annotated[Path, typer.Option("--out", help="folder for report.html, report.json and cases.csv")],
    audit: Annotated[bool, typer.Option("--audit", help="read the node's outputs from its audit store")] = False,
    sr_dir: Annotated[Optional[Path], typer.Option("--sr-dir", help="read the node's outputs from SR (and SEG) files")] = None,
    database_url: Annotated[Optional[str], typer.Option("--database-url", help="audit database (default: the node's settings)")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="node TOML file (for --audit)")] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, help="bootstrap resamples for the CIs")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="seed of the bootstrap")] = 0,
    models_dir: Annotated[Optional[Path], typer.Option("--models-dir", help="folder of model folders with their "
                          "cards (default: the node's models_dir; the starter cards are always searched)")] = None,
    images: Annotated[Optional[Path], typer.Option("--images", help="folder of the source DICOM images, for the "
                      "thumbnails of missed malignancies (default with --audit: the node's spool)")] = None,
    min_positives: Annotated[int, typer.Option("--min-positives", min=1, help="fewer positives: 'n too small'")] = 10,
    min_negatives: Annotated[int, typer.Option("--min-negatives", min=1, help="fewer negatives: 'n too small'")] = 10,
) -> None:
    """Compare the node's recorded outputs with pathology: model identity, training overlap, AUROC with CIs,
    Table 2 beside the published one, missed malignancies, calibration, subgroups."""
    from dermnode.validation.cohort import join
    from dermnode.validation.identity import find_cards
    from dermnode.validation.minimum import MinimumCounts
    from dermnode.validation.report import ReportOptions, build_report, write_report
    from dermnode.validation.sources import outputs_from_sr_dir, source_images
    from dermnode.validation.truth import TruthFileError, read_truth

    if audit == (sr_dir is not None):
        raise UserError("give exactly one of --audit and --sr-dir")
    settings = None
    try:
        truth_table = read_truth(truth)
        if audit:
            outputs, source, settings = _audit_source(config, database_url)
        else:
            outputs, source = outputs_from_sr_dir(sr_dir)
    except (TruthFileError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    cases, excluded, unmatched = join(truth_table, outputs)
    excluded = truth_table.excluded + excluded
    excluded.sort(key=lambda e: e.row or 0)
    source["truth"] = str(truth)
    source["key_column"] = truth_table.key_column
    typer.echo(
        f"{len(cases)} cases joined on {truth_table.key_column}; {len(excluded)} truth rows excluded; "
        f"{unmatched} recorded outputs without truth"
    )
    report = build_report(
        cases,
        excluded,
        truth_rows=len(truth_table.rows) + len(truth_table.excluded),
        unmatched_outputs=unmatched,
        source=source,
        options=ReportOptions(resamples=bootstrap, seed=seed, progress=True,
                              minimum=MinimumCounts(min_positives, min_negatives)),
        cards=find_cards([models_dir or (settings.models_dir if settings else None)]),
        images=source_images(images or (settings.spool_dir if settings else None)),
    )  # fmt: skip
    try:
        paths = write_report(report, out)
    except OSError as exc:
        raise UserError(f"cannot write the report into {out}: {exc}") from None
    for line in summary_lines(report.data):
        typer.echo(line)
    for kind, path in paths.items():
        typer.echo(f"{kind}: {path}")
    if not cases:  # the report still says why each truth row was left out
        raise UserError(f"no case to validate: none of the {len(truth_table.rows) + len(truth_table.excluded)} truth rows matched one of the "
                        f"{len(outputs)} recorded outputs on {truth_table.key_column}; {paths['html']} lists why")


def summary_lines(report: dict) -> list[str]:
    """The console summary: the warnings, then the headline AUROCs under the same small-numbers rule as the HTML."""
    lines = [f"WARNING: {warning}" for warning in report["warnings"]]
    figures = report["discrimination"]
    for group, name in (("macro", "macro AUROC"), ("malignant", "malignant-vs-benign AUROC")):
        entry = figures[group]
        if entry["auroc"] is None:
            lines.append(f"{name}: {entry['note']}")
            continue
        interval = f" ({entry['ci_low']:.3f}-{entry['ci_high']:.3f})" if entry["ci_low"] is not None else ""
        lines.append(f"{name}: {entry['auroc']:.3f}{interval}" + (f"; {entry['note']}" if entry["note"] else ""))
    without = report["training_overlap"]["without_seen"]
    if without is not None:
        entry = without["discrimination"]["malignant"]
        value = entry["note"] if entry["auroc"] is None else f"{entry['auroc']:.3f}"
        value = value if without["cases"] else "none: every checked case was seen in training"
        lines.append(f"malignant-vs-benign AUROC without the {report['training_overlap']['n_seen']} cases seen in "
                     f"training ({without['cases']} cases): {value}")  # fmt: skip
    return lines


def register(app: typer.Typer) -> None:
    """Add this room's commands (and sub-apps) to the main app."""
    app.command("validate")(validate)
