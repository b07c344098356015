"""`dermnode evaluate gate` and `dermnode train input-gate`.

:func:`register` adds the commands to the `evaluate` and `train` sub-apps of :mod:`dermnode.models.cli`
(the feature gates are fitted with the classifier; `train input-gate` fits them again for trained
weights). Heavy libraries load inside the command functions.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from dermnode.errors import UserError
from dermnode.models.command_options import DATA, SOURCE, SUBSET, WEIGHTS, data_folder, select_records, set_threads


def evaluate_gate(
    data: Path | None = typer.Option(None, "--data", callback=data_folder, help="a data folder of dermoscopy: refusals there are false refusals"),
    others: Path | None = typer.Option(None, "--others", help="a folder of pictures that are not dermoscopy"),
    out: Path = typer.Option(..., "--out", help="report folder: gate.json"),
    weights: Path | None = WEIGHTS,
    subset: str = SUBSET,
    source: str | None = SOURCE,
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0: torch's default)"),
) -> None:
    """Refusal rates of the input gate (pixel checks + the classifier's feature gate), by reason."""
    from dermnode.models.classifier.predict import FusionClassifier
    from dermnode.models.input_gate.evaluate import gate_decisions, image_files, load_any, refusal_summary
    from dermnode.models.images import load_rgb
    from dermnode.models.model_card import STARTER_DIR

    if data is None and others is None:
        raise typer.BadParameter("give --data, --others or both")
    set_threads(threads)
    model = FusionClassifier.load(weights)
    report: dict = {"feature_gate": bool(model.gates)}
    if data is not None:
        records = select_records(data, weights or STARTER_DIR / "classifier", subset, source)
        decisions = gate_decisions(model, (load_rgb(r.image_path) for r in records))
        report["dermoscopy"] = refusal_summary(decisions) | {
            "refused_examples": [f"{r.collection}/{r.image_id}: {d}" for r, d in zip(records, decisions) if d][:20]
        }
    if others is not None:
        files = image_files(others)
        decisions = gate_decisions(model, (load_any(p) for p in files))
        report["others"] = refusal_summary(decisions) | {
            "passed": [p.name for p, d in zip(files, decisions) if d is None]
        }
    out.mkdir(parents=True, exist_ok=True)
    (out / "gate.json").write_text(json.dumps(report, indent=2) + "\n")
    typer.echo(json.dumps(report, indent=2))


def train_input_gate(
    weights: Path = typer.Option(..., "--weights", help="a trained classifier's weights directory (one network or an ensemble)"),
    data: Path = DATA,
    work: Path = typer.Option(..., "--work", help="cache of the prepared images (give an empty folder for other weights)"),
    out: Path | None = typer.Option(None, "--out", help="weights directory to write (default: --weights, in place)"),
    version: str | None = typer.Option(None, "--version", help="the card's new version (default: unchanged)"),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0: torch's default)"),
) -> None:
    """Fit the feature gates of trained classifier weights again, on the images of their own split."""
    from dermnode.models.input_gate.refit import refit_gates

    set_threads(threads)
    try:
        model = refit_gates(weights, data, work, out or weights, version)
    except (ValueError, FileNotFoundError) as error:
        raise UserError(str(error)) from error
    typer.echo(model.card.extra["input_gate"])


def register(train_app: typer.Typer, evaluate_app: typer.Typer) -> None:
    """Add the input gate's commands to `dermnode evaluate` and `dermnode train`."""
    evaluate_app.command("gate")(evaluate_gate)
    train_app.command("input-gate")(train_input_gate)
