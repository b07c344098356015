"""`dermnode train segmentation` and `dermnode evaluate segmentation`.

:func:`register` adds the commands to the `train` and `evaluate` sub-apps of
:mod:`dermnode.models.cli`. Heavy libraries (torch) load inside the command functions.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from dermnode.models.command_options import data_folder


class SegmentationProfile(str, Enum):
    cpu = "cpu"
    paper = "paper"


class Subset(str, Enum):
    all = "all"
    validation = "validation"


def train_segmentation(
    data: Path = typer.Option(..., callback=data_folder, help="data folder (metadata.csv, */images, */masks)"),
    profile: SegmentationProfile = typer.Option(SegmentationProfile.cpu, help="cpu: small U-Net; paper: Mask R-CNN R50-FPN 512"),
    out: Path = typer.Option(..., help="output folder for weights, model card, split and checkpoints"),
    resume: bool = typer.Option(False, help="continue from the checkpoint in --out"),
    epochs: int | None = typer.Option(None, help="override the profile's number of epochs"),
    device: str | None = typer.Option(None, help="torch device (default: cuda when present, else cpu)"),
    cache: Path | None = typer.Option(None, help="folder for the resized-tensor cache (default: OUT/cache)"),
    threads: int | None = typer.Option(None, help="CPU threads for torch (1 is fastest on a shared CPU)"),
    init: Path | None = typer.Option(None, exists=True, file_okay=False,
                                     help="start from this model folder's weights (fine-tune one of our own models)"),
    lr: float | None = typer.Option(None, help="override the profile's peak learning rate (lower for fine-tuning)"),
    balance_sources: bool = typer.Option(False, help="give every source the same share of each epoch"),
) -> None:
    """Train the lesion segmenter (seeded split by lesion, augmentation, checkpoint and resume)."""
    from dermnode.models.segmentation.train import train_segmentation as run

    card = run(data, profile.value, out, resume=resume, epochs=epochs, device=device, cache_dir=cache, threads=threads,
               init=init, learning_rate=lr, balance_sources=balance_sources)
    typer.echo(f"model written to {out} (sha256 {card.weights_sha256[:12]}): {card.metrics}")


def evaluate_segmentation(
    data: Path = typer.Option(..., callback=data_folder, help="data folder (metadata.csv, */images, */masks)"),
    out: Path = typer.Option(..., help="folder for metrics.json, per_image.csv and the overlay sheet"),
    weights: Path | None = typer.Option(None, help="model folder (default: the starter weights in the package)"),
    subset: Subset = typer.Option(Subset.all, help="all images with masks, or the validation ids of the split.json beside the weights"),
    collection: str | None = typer.Option(None, help="only this collection of the data folder"),
    device: str | None = typer.Option(None, help="torch device (default: cuda when present, else cpu)"),
    record: bool = typer.Option(False, help="also write the metrics into the model card of --weights"),
) -> None:
    """Score the segmenter against expert masks: Dice, Jaccard, ISIC 2018 thresholded Jaccard."""
    import json

    from dermnode.models.dataset_index import Split, load_records
    from dermnode.models.model_card import ModelCard
    from dermnode.models.segmentation.predict import STARTER, LesionSegmenter
    from dermnode.models.segmentation.evaluate import evaluate_records

    segmenter = LesionSegmenter.load(weights, device=device)
    records = [r for r in load_records(data, collection) if r.mask_path is not None]
    if subset is Subset.validation:
        records = Split.load(weights or STARTER).validation(records)
    if not records:
        raise typer.BadParameter(f"no images with expert masks in {data} for subset {subset.value}")
    metrics = evaluate_records(segmenter, records, out)
    typer.echo(json.dumps(metrics, indent=1))
    if record:
        card = ModelCard.load(weights or STARTER)
        card.metrics = {**card.metrics, **metrics, "evaluated_on": f"{len(records)} images with expert masks of the data folder's "
                        f"{collection or 'collections'} ({subset.value} subset)"}
        card.save(weights or STARTER)


def register(train_app: typer.Typer, evaluate_app: typer.Typer) -> None:
    """Add the segmenter's commands to `dermnode train` / `dermnode evaluate`."""
    train_app.command("segmentation")(train_segmentation)
    evaluate_app.command("segmentation")(evaluate_segmentation)
