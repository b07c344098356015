"""Commands of this room, mounted on the `dermnode` app by dermnode/cli.py.

``train_app`` and ``evaluate_app`` are the ``dermnode train`` and ``dermnode evaluate`` sub-apps;
each model adds its own command to them (segmentation here, the classifiers in their modules).
Heavy libraries are imported inside the command functions so that ``dermnode --help`` stays fast.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from dermnode.models import classification_commands

train_app = typer.Typer(help="Train a model on a data folder laid out like ../shared/data.", no_args_is_help=True)
evaluate_app = typer.Typer(help="Evaluate a model on a data folder; writes metrics.json and plots.", no_args_is_help=True)


class SegmentationProfile(str, Enum):
    cpu = "cpu"
    paper = "paper"


class Subset(str, Enum):
    all = "all"
    validation = "validation"


@train_app.command("segmentation")
def train_segmentation(
    data: Path = typer.Option(..., exists=True, file_okay=False, help="data folder (metadata.csv, */images, */masks)"),
    profile: SegmentationProfile = typer.Option(SegmentationProfile.cpu, help="cpu: small U-Net; paper: Mask R-CNN R50-FPN 512"),
    out: Path = typer.Option(..., help="output folder for weights, model card, split and checkpoints"),
    resume: bool = typer.Option(False, help="continue from the checkpoint in --out"),
    epochs: int | None = typer.Option(None, help="override the profile's number of epochs"),
    device: str | None = typer.Option(None, help="torch device (default: cuda when present, else cpu)"),
    cache: Path | None = typer.Option(None, help="folder for the resized-tensor cache (default: OUT/cache)"),
    threads: int | None = typer.Option(None, help="CPU threads for torch (1 is fastest on a shared CPU)"),
) -> None:
    """Train the lesion segmenter (seeded split by image_id, augmentation, checkpoint and resume)."""
    from dermnode.models.segmentation_train import train_segmentation as run

    card = run(data, profile.value, out, resume=resume, epochs=epochs, device=device, cache_dir=cache, threads=threads)
    typer.echo(f"model written to {out} (sha256 {card.weights_sha256[:12]}): {card.metrics}")


@evaluate_app.command("segmentation")
def evaluate_segmentation(
    data: Path = typer.Option(..., exists=True, file_okay=False, help="data folder (metadata.csv, */images, */masks)"),
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
    from dermnode.models.segmentation import STARTER, LesionSegmenter
    from dermnode.models.segmentation_eval import evaluate_records

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


def register(app: typer.Typer) -> None:
    """Add this room's commands (and sub-apps) to the main app."""
    classification_commands.register(train_app, evaluate_app)
    app.add_typer(train_app, name="train")
    app.add_typer(evaluate_app, name="evaluate")
