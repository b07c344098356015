"""Commands of this room, mounted on the `dermnode` app by dermnode/cli.py: worker, analyze, demo.

A user mistake raises UserError (one line on stderr, exit 2: see dermnode/cli.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from dermnode.errors import UserError

CONFIG_HELP = "TOML settings file (default: $DERMNODE_CONFIG or <home>/dermnode.toml)."


def _settings(config: Optional[Path], **overrides):
    from dermnode.node.settings import describe_errors, load_settings

    try:
        return load_settings(config, **overrides)
    except Exception as error:  # noqa: BLE001 - bad settings end the command with sentences
        raise UserError("settings: " + "; ".join(describe_errors(error))) from None


def worker(
    queues: Optional[str] = typer.Option(
        None, "--queues", "-Q", help="Comma list of queues to consume (default: the node's queue and GPU queue)."
    ),
    pool: str = typer.Option("solo", help="Celery pool: solo (one warm process) or prefork."),
    concurrency: int = typer.Option(1, min=1, help="Processes for the prefork pool (each loads the models)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    loglevel: Optional[str] = typer.Option(None, help="Log level (default: the log_level setting)."),
) -> None:
    """Consume studies from the configured broker (DERMNODE_BROKER_URL) and analyse them."""
    from dermnode.workers.celery_app import analysis_queue, make_celery, worker_node_name

    settings = _settings(config)
    if not settings.broker_url:
        raise UserError("no broker: set DERMNODE_BROKER_URL=redis://host:port/db (or broker_url in the TOML file); "
                        "`dermnode serve` without a broker runs its own embedded worker")
    if pool not in ("solo", "prefork"):
        raise UserError(f"--pool {pool!r}: use solo or prefork")
    if settings.batch_images:  # studies run side by side in threads and share model batches (batching.py)
        pool, concurrency = "threads", settings.batch_images
    app = make_celery(settings)
    names = queues or ",".join(sorted({settings.queue, analysis_queue(settings)}))
    app.worker_main([
        "worker", "--pool", pool, "--concurrency", str(concurrency), "--queues", names,
        "--loglevel", loglevel or settings.log_level, "--hostname", worker_node_name(),
    ])


def analyze(
    paths: list[Path] = typer.Argument(..., help="Image files (JPEG, PNG...), DICOM files, or folders of them."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the masks (and SEG/SR/KOS for DICOM input)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line and image on stdout."),
    metadata: Optional[Path] = typer.Option(
        None, "--metadata", help="CSV of patient metadata (image_id, age_approx, sex, anatom_site_general)."
    ),
    batch_size: int = typer.Option(8, min=1, help="Images per model call."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
) -> None:
    """Analyse images without the network: masks, class probabilities, veto, BCC/SK."""
    from dermnode.dicom_templates.dicomize import read_metadata_csv
    from dermnode.workers.analyze import analyze_files, collect_inputs
    from dermnode.workers.pipeline import Analyzer

    settings = _settings(config)
    files = collect_inputs(paths)
    if not files:
        raise UserError("no images or DICOM files found in the given paths")
    try:
        table = read_metadata_csv(metadata) if metadata else {}
    except (OSError, ValueError) as error:
        raise UserError(f"--metadata: {error}") from None
    try:
        analyzer = Analyzer.load(settings, batch_size=batch_size)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load the models: {error}") from None
    records = []
    failed = refused = 0
    for item in analyze_files(files, out, analyzer, settings, table, progress=len(files) > batch_size):
        failed += item["status"] == "failed"
        refused += item["status"] == "not_analysable"
        if as_json:
            typer.echo(json.dumps(item))
            sys.stdout.flush()
        else:
            records.append(item)
    if not as_json:
        _print_table(records)
    if refused:
        typer.echo(f"{refused} of {len(files)} images are not analysable dermoscopy (see failure_reason)", err=True)
    if failed:
        typer.echo(f"{failed} of {len(files)} images could not be analysed (see failure_reason)", err=True)
        raise typer.Exit(1)


def _print_table(records: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="dermnode analyze")
    for column in ("image", "status", "top class", "P(mal.)", "veto", "P(BCC)", "seconds"):
        table.add_column(column, no_wrap=True)
    for item in records:
        def number(value):
            return "-" if value is None else f"{value:.3f}"

        table.add_row(
            Path(item["image"]).name, item["status"], item["top_class"] or "-", number(item["malignancy_probability"]),
            {True: "VETO", False: "no", None: "-"}[item["veto"]], number(item["bcc_probability"]),
            f"{item['seconds']:.2f}",
        )
    Console().print(table)
    masks = [item["mask"] for item in records if item["mask"]]
    if masks:
        Console().print(f"masks (and SEG/SR/KOS for DICOM input) in {Path(masks[0]).parent}")
    for item in records:
        if item["failure_reason"]:
            Console(stderr=True).print(f"{Path(item['image']).name}: {item['failure_reason']}")


def demo(
    images: Optional[Path] = typer.Argument(None, help="Folder of dermoscopy images (default: synthetic ones)."),
    count: int = typer.Option(3, min=1, max=50, help="How many studies to send."),
    keep: Optional[Path] = typer.Option(None, help="Keep the demo's home folder here instead of a temporary one."),
) -> None:
    """Start a node with embedded defaults and a local destination, send a few studies, show the results."""
    from dermnode.workers.demo import run_demo

    raise typer.Exit(run_demo(images, count, keep))


def register(app: typer.Typer) -> None:
    """Add this room's commands (and sub-apps) to the main app."""
    app.command()(worker)
    app.command()(analyze)
    app.command()(demo)
