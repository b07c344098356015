"""Commands of the node room: serve, config check, send, prune, requeue, retry, cancel, audit list|show|export|verify.

Heavy imports (pynetdicom, SQLAlchemy, the workers) happen inside the command functions. A user
mistake raises UserError (one line on stderr, exit 2: see dermnode/cli.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dermnode.errors import UserError

ConfigOption = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML file (default: $DERMNODE_CONFIG or <home>/dermnode.toml)")]


def _settings(config: Path | None):  # noqa: ANN202 - Settings, imported lazily
    from dermnode.node.settings import describe_errors, load_settings

    try:
        return load_settings(config)
    except Exception as exc:  # noqa: BLE001 - report any settings problem in words
        raise UserError("; ".join(describe_errors(exc))) from None


def _audit(config: Path | None):  # noqa: ANN202 - AuditStore, imported lazily
    """The node's existing audit store (never a new, empty one)."""
    from dermnode.node.audit import open_existing

    settings = _settings(config)
    return open_existing(settings.database_url, settings.audit_hmac_key)


def serve(config: ConfigOption = None) -> None:
    """Run the node: DICOM SCP, study assembly, export (and the embedded queue when no broker is set)."""
    from dermnode.node.serve import serve as run

    settings = _settings(config)
    try:
        run(settings)
    except OSError as exc:
        raise UserError(f"cannot serve on {settings.host}:{settings.port}: {exc.strerror or exc}") from None


def config_check(config: ConfigOption = None) -> None:
    """Check the settings and the environment; print every problem in words, exit 1 if any."""
    from dermnode.node.check import check_settings
    from dermnode.node.settings import config_path, printable_settings

    settings = _settings(config)
    path = config_path(config)
    typer.echo(f"config file: {path if path else '(none: environment and defaults)'}")
    for name, value in printable_settings(settings).items():
        typer.echo(f"  {name} = {value}")
    problems = check_settings(settings)
    for problem in problems:
        typer.secho(f"error: {problem}", fg="red", err=True)
    if problems:
        raise typer.Exit(1)
    typer.secho("configuration OK", fg="green")


def send(
    paths: Annotated[list[Path], typer.Argument(help="DICOM files or folders (searched recursively)")],
    to: Annotated[str, typer.Option("--to", help="destination AE@HOST:PORT")],
    calling_ae: Annotated[str, typer.Option("--calling-ae", help="our AE title")] = "DERMNODE",
) -> None:
    """C-STORE files and folders to a DICOM destination."""
    from dermnode.node.send import collect_files, store_files
    from dermnode.node.settings import parse_destination

    try:
        destination = parse_destination(to)
        files = collect_files(paths)
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    if not files:
        raise UserError(f"no files to send in {', '.join(map(str, paths))}")
    outcomes = store_files(files, destination, calling_ae=calling_ae)
    failed = [o for o in outcomes if not o.stored]
    for outcome in failed:
        typer.secho(f"not stored: {outcome.path}: {outcome.error}", fg="red", err=True)
    typer.echo(f"{len(outcomes) - len(failed)} of {len(outcomes)} files stored at {destination}")
    if failed:
        raise typer.Exit(1)


def audit_list(config: ConfigOption = None) -> None:
    """One line per study: instances received, analyses, veto, models, state per destination, last event."""
    from rich.console import Console
    from rich.table import Column, Table

    from dermnode.node.studies import destination_states

    store = _audit(config)
    states = destination_states(store)
    table = Table("first seen (UTC)", "received", "analysed", "veto", "models", "deliveries", "last event")
    table.columns.insert(0, Column("study UID", no_wrap=True))  # whole, so it can be pasted into `audit show`
    for study in store.studies():
        veto = "yes" if study["veto"] else ("no" if study["analysed"] else "")
        delivered = ", ".join(f"{where}: {state}" for where, state in states.get(study["study_uid"], {}).items())
        table.add_row(study["study_uid"], f"{study['first_at']:%Y-%m-%d %H:%M:%S}", str(study["received"]),
                      str(study["analysed"]), veto, study["models"], delivered, study["last_event"])
    Console(width=max(200, Console().width)).print(table)


def audit_show(study_uid: str, config: ConfigOption = None) -> None:
    """Every event of one study, then its deliveries and its state per destination."""
    import json

    from dermnode.node.studies import destination_states

    store = _audit(config)
    found = store.events(study_uid)
    if not found:
        typer.secho(f"no events for study {study_uid}", fg="red", err=True)
        raise typer.Exit(1)
    for item in found:
        sop = f" {item['sop_instance_uid']}" if item["sop_instance_uid"] else ""
        typer.echo(f"{item['at']:%Y-%m-%d %H:%M:%S.%f} {item['kind']:<14}{sop} {json.dumps(item['details'], default=str)}")
    for row in store.deliveries(study_uid):
        typer.echo(f"delivery {row['sop_instance_uid']} -> {row['destination']}: {row['state']}, "
                   f"{row['attempts']} attempts{', last error: ' + row['last_error'] if row['last_error'] else ''}")
    for destination, state in destination_states(store, study_uid).get(study_uid, {}).items():
        typer.echo(f"destination {destination}: {state}")


def audit_export(
    csv: Annotated[Path, typer.Option("--csv", help="CSV file to write: one row per analysed image")],
    config: ConfigOption = None,
) -> None:
    """Export the analysed images (cohort columns, see AuditStore.analysed_rows) as CSV."""
    from dermnode.node.audit import write_csv

    rows = _audit(config).analysed_rows()
    write_csv(rows, csv)
    typer.echo(f"{len(rows)} analysed images written to {csv}")


def audit_verify(config: ConfigOption = None) -> None:
    """Walk the audit log's hash chain: exit 0 with a count when intact, 1 naming the first broken link."""
    store = _audit(config)
    report = store.verify_chain()
    store.close()
    unchained = f" ({report.unchained} written before the chain began, unchained)" if report.unchained else ""
    if not report.intact:
        typer.secho(f"audit chain broken at event {report.broken_at}: {report.problem}", fg="red", err=True)
        typer.echo(f"{report.events} events read{unchained}")
        raise typer.Exit(1)
    typer.secho(f"audit chain intact: {report.events - report.unchained} events verified{unchained}", fg="green")
    if report.unsigned:
        typer.secho(f"warning: {report.unsigned} events carry a plain SHA-256 link, not an HMAC: a process "
                    "writing the log runs without audit_hmac_key", fg="yellow", err=True)


def prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only list what would be pruned")] = False,
    older_than: Annotated[Optional[float], typer.Option("--older-than", min=0.0, help="days (default: the retention_days setting)")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="at most this many studies")] = 1000,
    config: ConfigOption = None,
) -> None:
    """Remove the spool, outbox and result files of studies every destination acknowledged long ago (audited)."""
    from dermnode.node.retention import Pruner

    settings = _settings(config)
    days = settings.retention_days if older_than is None else older_than
    if days <= 0:
        given = "retention_days" if older_than is None else "--older-than"
        raise UserError(f"{given} is 0, which keeps everything: give --older-than DAYS (more than 0)")
    store = _audit(config)
    report = Pruner(settings, store).run_once(days, limit=limit, max_seconds=3600.0, dry_run=dry_run)
    store.close()
    for study_uid in report.studies:
        typer.echo(f"{'would prune' if dry_run else 'pruned'} study {study_uid}")
    for study_uid in report.kept_unanalysed:
        typer.echo(f"kept study {study_uid}: an instance has no analysis yet")
    verb = "would be pruned" if dry_run else "pruned"
    typer.echo(f"{len(report.studies)} studies ({report.files} files, {report.bytes / 2**20:.1f} MiB) {verb}: "
               f"every destination acknowledged them more than {days:g} days ago")
    if len(report.studies) + len(report.kept_unanalysed) >= limit:
        typer.echo(f"stopped at --limit {limit}: run it again for more")


def _operator() -> str:
    """How the audit log names whoever runs an action command: ``cli:<login>@<host>``."""
    import getpass
    import socket

    return f"cli:{getpass.getuser()}@{socket.gethostname()}"


def _act(action, *args):  # noqa: ANN001, ANN202 - a node/actions.py function and its arguments
    from dermnode.node.actions import ActionRefused

    try:
        return action(*args)
    except ActionRefused as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None


def requeue(study_uid: Annotated[str, typer.Argument(help="Study Instance UID")], config: ConfigOption = None) -> None:
    """Queue a study that still owes results again (also lifts a cancellation); the running node
    picks it up within reconcile_seconds."""
    from dermnode.node.actions import requeue as run
    from dermnode.node.audit import AuditStore

    settings = _settings(config)
    key = _act(run, settings, AuditStore.from_settings(settings), study_uid, _operator())
    typer.echo(f"study {study_uid} will be queued again (content key {key[:12]}) by the running node "
               f"within {settings.reconcile_seconds:.0f} s")


def retry(destination: Annotated[str, typer.Option("--destination", "-d", help="AE title or AE@host:port")],
          study: Annotated[Optional[str], typer.Option(help="only this study's deliveries")] = None,
          config: ConfigOption = None) -> None:
    """Make the failed or waiting deliveries to a destination due now (attempts counted afresh)."""
    from dermnode.node.actions import retry as run
    from dermnode.node.audit import AuditStore

    count = _act(run, AuditStore.from_settings(_settings(config)), destination, _operator(), study)
    typer.echo(f"{count} deliveries to {destination} are due now")


def cancel(study_uid: Annotated[str, typer.Argument(help="Study Instance UID")], config: ConfigOption = None) -> None:
    """Stop all further work on a study: not queued, not analysed, not exported (requeue undoes it)."""
    from dermnode.node.actions import cancel as run
    from dermnode.node.audit import AuditStore

    stopped = _act(run, AuditStore.from_settings(_settings(config)), study_uid, _operator())
    typer.echo(f"study {study_uid} cancelled ({stopped} waiting deliveries cancelled)")


def register(app: typer.Typer) -> None:
    """Add this room's commands (and sub-apps) to the main app."""
    app.command()(serve)
    app.command()(send)
    app.command()(prune)
    app.command()(requeue)
    app.command()(retry)
    app.command()(cancel)
    config_app = typer.Typer(help="Settings of the node.", no_args_is_help=True)
    config_app.command("check")(config_check)
    app.add_typer(config_app, name="config")
    audit_app = typer.Typer(help="The audit log: studies, events, cohort export, chain check.", no_args_is_help=True)
    audit_app.command("list")(audit_list)
    audit_app.command("show")(audit_show)
    audit_app.command("export")(audit_export)
    audit_app.command("verify")(audit_verify)
    app.add_typer(audit_app, name="audit")
