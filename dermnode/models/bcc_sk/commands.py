"""`dermnode train bcc-sk` and `dermnode evaluate bcc-sk`.

:func:`register` adds the commands to the `train` and `evaluate` sub-apps of
:mod:`dermnode.models.cli`. Heavy libraries (torch, open_clip) load inside the command functions.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from dermnode.models.command_options import (
    DATA,
    PROFILE,
    RECORD,
    SOURCE,
    SUBSET,
    WEIGHTS,
    print_metrics,
    record_metrics,
    select_records,
    set_threads,
)


def train_bcc_sk(
    data: Path = DATA,
    out: Path = typer.Option(..., "--out", help="weights directory to write"),
    profile: str = PROFILE,
    work: Path = typer.Option(Path("runs/bcc_sk"), "--work", help="caches and checkpoints (resumed when present)"),
    encoder_epochs: int = typer.Option(24, "--encoder-epochs", help="cpu profile: epochs training the encoders"),
    coop_epochs: int = typer.Option(40, "--coop-epochs", help="epochs of CoOp context + probe"),
    leave_out: str | None = typer.Option(None, "--leave-out", help="leave this source and its lesions out of training"),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0: torch's default)"),
) -> None:
    """Train the BCC-versus-SK CLIP model (CoOp + linear probe) and write weights + model card."""
    from dermnode.models.bcc_sk.train import BccSkSettings
    from dermnode.models.bcc_sk.train import train_bcc_sk as run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    set_threads(threads)
    try:
        settings = BccSkSettings(encoder_epochs=encoder_epochs, coop_epochs=coop_epochs)
        metrics = run(data, out, profile, work, settings, leave_out)
    except FileNotFoundError as error:
        raise typer.BadParameter(str(error)) from error
    print_metrics(metrics, ("n", "auroc", "sensitivity", "specificity"))


def evaluate_bcc_sk(
    data: Path = DATA,
    out: Path = typer.Option(..., "--out", help="report folder: metrics.json, ROC and confusion plots"),
    weights: Path | None = WEIGHTS,
    subset: str = SUBSET,
    source: str | None = SOURCE,
    record: bool = RECORD,
) -> None:
    """Evaluate the BCC-versus-SK model on the BCC and BKL images of a data folder."""
    from dermnode.models.bcc_sk.predict import BccSkModel
    from dermnode.models.bcc_sk.evaluate import NEGATIVE, POSITIVE, evaluate_bcc_sk
    from dermnode.models.model_card import STARTER_DIR

    try:
        model = BccSkModel.load(weights)
    except FileNotFoundError as error:
        raise typer.BadParameter(str(error)) from error
    records = [r for r in select_records(data, weights or STARTER_DIR / "bcc_sk", subset, source) if r.diagnosis in (POSITIVE, NEGATIVE)]
    metrics = evaluate_bcc_sk(model, records, out)
    if record:
        record_metrics(weights or STARTER_DIR / "bcc_sk", data, subset, metrics)
    print_metrics(metrics, ("n", "auroc", "sensitivity", "specificity"))



def register(train_app: typer.Typer, evaluate_app: typer.Typer) -> None:
    """Add the BCC/SK model's commands to `dermnode train` / `dermnode evaluate`."""
    train_app.command("bcc-sk")(train_bcc_sk)
    evaluate_app.command("bcc-sk")(evaluate_bcc_sk)
