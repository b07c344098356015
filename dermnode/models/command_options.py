"""Options and helpers shared by the models' `dermnode train` / `dermnode evaluate` commands.

The commands themselves live in each model's ``commands`` module (:mod:`dermnode.models.classifier.commands`,
:mod:`dermnode.models.bcc_sk.commands`, :mod:`dermnode.models.input_gate.commands`). Heavy libraries
load inside the functions, so that ``dermnode --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer



def data_folder(path: Path | None) -> Path | None:
    """--data: a folder with metadata.csv (a usage error in one line otherwise)."""
    if path is not None and not (path / "metadata.csv").is_file():
        raise typer.BadParameter(f"{path} is not a data folder: it has no metadata.csv (see ../shared/data)")
    return path


DATA = typer.Option(..., "--data", callback=data_folder,
                    help="data folder laid out like ../shared/data (metadata.csv, <collection>/images)")
PROFILE = typer.Option("cpu", "--profile", help="cpu (small model, trains on a CPU) or paper (the seed paper's sizes, GPU hosts)")
WEIGHTS = typer.Option(None, "--weights", help="weights directory (model_card.json); default: the starter weights")
SUBSET = typer.Option(
    "validation",
    "--subset",
    help="validation: the validation split of the weights' split.json (the shared split when the data folder is the "
    "training folder); all: every labelled image (an external cohort)",
)


SOURCE = typer.Option(
    None, "--source", help="only images of this source (ham10000 = every HAM10000 image, isic-8class, isic2018-task1): "
    "the left-out source of a `train classifier --leave-out` run"
)


def select_records(data: Path, weights_dir: Path, subset: str, source: str | None = None):
    from dermnode.models.dataset_index import Split, load_records, one_row_per_image

    records = load_records(data)
    if source is not None:  # before one row per image: an image filed in two collections counts for both sources
        records = [r for r in records if r.source == source]
        if not records:
            raise typer.BadParameter(f"no image of source {source!r} in {data}")
    records = one_row_per_image(records)
    if subset == "all":
        return records
    if subset != "validation":
        raise typer.BadParameter("--subset must be 'validation' or 'all'")
    split_file = weights_dir / "split.json"
    if not split_file.is_file():
        raise typer.BadParameter(f"{split_file} not found: use --subset all for a folder without a split")
    chosen = Split.load(split_file).validation(records)
    if not chosen:
        raise typer.BadParameter(f"no image of {data} is in the validation split of {split_file}: use --subset all")
    return chosen


RECORD = typer.Option(False, "--record", help="also store the metrics in the evaluated weights' model card")


def record_metrics(weights_dir: Path, data: Path, subset: str, metrics: dict) -> None:
    """Add the metrics to the model card (the weights and their hash stay as they are)."""
    from dermnode.models.model_card import ModelCard

    card = ModelCard.load(weights_dir)
    summary = {k: v for k, v in metrics.items() if k not in ("model", "confusion_matrix")}
    card.metrics = {**card.metrics, "evaluation": {"data": f"{data.name} ({subset} subset)", **summary}}
    card.save(weights_dir)


def record_left_out_metrics(card_dir: Path, weights_dir: Path, source: str, metrics: dict,
                            choice: str | None = None) -> None:
    """Store a leave-one-source-out evaluation (of weights trained without ``source``) in the model card
    of ``card_dir``, the weights trained the same way on every source, under
    ``metrics.leave_one_source_out[source]``; with ``choice`` (weights trained another way, to measure
    one choice) its headline figures go to ``metrics.choices_on_the_left_out_source[source][choice]``."""
    from dermnode.models.model_card import ModelCard

    card, left_out = ModelCard.load(card_dir), ModelCard.load(weights_dir)
    trained = {"trained_without_it": {"version": left_out.version, "sha256": left_out.weights_sha256,
                                      "training_data": left_out.training_data,
                                      "settings": left_out.extra.get("settings"),
                                      "preprocessing": left_out.extra.get("preprocessing"),
                                      "architecture": left_out.extra.get("architecture"),
                                      "image_branch_init": left_out.extra.get("image_branch_init", "random")}}
    if choice is not None:
        entry = {"n": metrics.get("n"), **trained, "headline": metrics.get("headline"),
                 "inference_choices": metrics.get("inference_choices")}
        choices = card.metrics.get("choices_on_the_left_out_source", {})
        card.metrics = {**card.metrics, "choices_on_the_left_out_source": {
            **choices, source: {**choices.get(source, {}), choice: entry}}}
    else:
        summary = {k: v for k, v in metrics.items() if k not in ("model", "confusion_matrix", "per_class")}
        summary["per_class_auroc"] = {code: row["auroc"] for code, row in metrics.get("per_class", {}).items()}
        card.metrics = {**card.metrics, "leave_one_source_out": {
            **card.metrics.get("leave_one_source_out", {}), source: {**trained, **summary}}}
    card.save(card_dir)


def print_metrics(metrics: dict, keys: tuple[str, ...]) -> None:
    typer.echo(json.dumps({k: metrics.get(k) for k in keys}, indent=2))


def set_threads(threads: int) -> None:
    if threads > 0:
        import torch

        torch.set_num_threads(threads)

