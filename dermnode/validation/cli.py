"""Commands of this room, mounted on the `dermnode` app by dermnode/cli.py: ``validate``.

Heavy imports (matplotlib, SQLAlchemy, highdicom) happen inside the command function. A user
mistake raises UserError (one line on stderr, exit 2: see dermnode/cli.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dermnode.errors import UserError


def _audit_source(config: Path | None, database_url: str | None):  # noqa: ANN202 - outputs and info
    """The audit store named by --database-url, else by the node's settings."""
    from dermnode.node.settings import describe_errors, load_settings
    from dermnode.validation.sources import outputs_from_audit

    try:
        settings = load_settings(config)
    except Exception as exc:  # noqa: BLE001 - report any settings problem in words
        raise UserError("; ".join(describe_errors(exc))) from None
    return outputs_from_audit(database_url or settings.database_url, (settings.outbox_dir, settings.results_dir))


def validate(
    truth: Annotated[Path, typer.Option("--truth", help="CSV: sop_instance_uid|study_uid|accession_number, diagnosis[, mask]")],
    out: Annotated[Path, typer.Option("--out", help="folder for report.html, report.json and cases.csv")],
    audit: Annotated[bool, typer.Option("--audit", help="read the node's outputs from its audit store")] = False,
    sr_dir: Annotated[Optional[Path], typer.Option("--sr-dir", help="read the node's outputs from SR (and SEG) files")] = None,
    database_url: Annotated[Optional[str], typer.Option("--database-url", help="audit database (default: the node's settings)")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="node TOML file (for --audit)")] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, help="bootstrap resamples for the CIs")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="seed of the bootstrap")] = 0,
) -> None:
    """Compare the node's recorded outputs with pathology: AUROC with CIs, Table 2, calibration, subgroups."""
    from dermnode.validation.cohort import join
    from dermnode.validation.report import ReportOptions, build_report, write_report
    from dermnode.validation.sources import outputs_from_sr_dir
    from dermnode.validation.truth import TruthFileError, read_truth

    if audit == (sr_dir is not None):
        raise UserError("give exactly one of --audit and --sr-dir")
    try:
        truth_table = read_truth(truth)
        outputs, source = _audit_source(config, database_url) if audit else outputs_from_sr_dir(sr_dir)
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
        options=ReportOptions(resamples=bootstrap, seed=seed, progress=True),
    )
    try:
        paths = write_report(report, out)
    except OSError as exc:
        raise UserError(f"cannot write the report into {out}: {exc}") from None
    figures = report.data["discrimination"]
    for group, name in (("macro", "macro AUROC"), ("malignant", "malignant-vs-benign AUROC")):
        value = figures[group]["auroc"]
        typer.echo(f"{name}: {'undefined (' + figures[group]['note'] + ')' if value is None else f'{value:.3f}'}")
    for kind, path in paths.items():
        typer.echo(f"{kind}: {path}")
    if not cases:  # the report still says why each truth row was left out
        raise UserError(f"no case to validate: none of the {len(truth_table.rows) + len(truth_table.excluded)} truth rows matched one of the "
                        f"{len(outputs)} recorded outputs on {truth_table.key_column}; {paths['html']} lists why")


def register(app: typer.Typer) -> None:
    """Add this room's commands (and sub-apps) to the main app."""
    app.command("validate")(validate)
