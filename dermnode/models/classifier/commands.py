"""`dermnode train classifier` and `dermnode evaluate classifier`.

:func:`register` adds the commands to the `train` and `evaluate` sub-apps of
:mod:`dermnode.models.cli`. Heavy libraries (torch, pyradiomics) load inside the command functions.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from dermnode.contract import DEFAULT_VETO_THRESHOLD
from dermnode.errors import UserError
from dermnode.models.command_options import (
    DATA,
    PROFILE,
    RECORD,
    SOURCE,
    SUBSET,
    WEIGHTS,
    print_metrics,
    record_left_out_metrics,
    record_metrics,
    select_records,
    set_threads,
)


def train_classifier(
    data: Path = DATA,
    out: Path = typer.Option(..., "--out", help="weights directory to write"),
    profile: str = PROFILE,
    work: Path = typer.Option(Path("runs/classifier"), "--work", help="caches and checkpoints (resumed when present)"),
    folds: int = typer.Option(1, "--folds", help="k > 1: k-fold cross-validation inside the training split first"),
    epochs: int | None = typer.Option(None, "--epochs", help="stage 1 (image branch) epochs "
                                      "[default: the recipe's, see TrainSettings]"),
    finetune_epochs: int | None = typer.Option(None, "--finetune-epochs", help="stage 2 end-to-end fine-tune "
                                               "epochs [default: the recipe's]"),
    masks: str = typer.Option(
        "expert", "--masks", help="expert: the data's expert masks where present, else the starter segmenter's; "
        "predicted: the starter segmenter's mask for every image (as the node sees them)"
    ),
    leave_out: str | None = typer.Option(
        None, "--leave-out", help="leave this source (ham10000, isic-8class, isic2018-task1) and its lesions out of "
        "training, to test on it with `evaluate classifier --source`"
    ),
    mixup: float | None = typer.Option(None, "--mixup", help="stage 1 mixup Beta(a, a) parameter; 0: off "
                                       "[default: the recipe's, see TrainSettings]"),
    malignant_loss: float | None = typer.Option(None, "--malignant-loss", help="stage 1 weight of a "
                                                "malignant-vs-benign loss; 0: off [default: the recipe's]"),
    mixstyle: float | None = typer.Option(None, "--mixstyle", help="stage 1 share of batches whose early feature "
                                          "styles are mixed between images (MixStyle); 0: off [default: the recipe's]"),
    colour_jitter: float | None = typer.Option(None, "--colour-jitter", help="training views' white-balance gains "
                                               "widened by this and saturation scaled by 1 ± 2x this; 0: off "
                                               "[default: the recipe's]"),
    source_balance: float | None = typer.Option(None, "--source-balance", min=0.0, help="stage 1 draws images "
                                                "with weights (their source's size)^-this: 1 gives every source the "
                                                "same share, 0 every image once [default: the recipe's]"),
    ema: float | None = typer.Option(None, "--ema", help="stage 1 weight averaging decay per step; 0: off "
                                     "[default: the recipe's]"),
    no_metadata_head: str = typer.Option(
        "fused", "--no-metadata-head", help="the head that answers when every metadata field is missing: fused or image"),
    colour_constancy: bool | None = typer.Option(
        None, "--colour-constancy/--no-colour-constancy", help="Shades of Gray colour constancy before anything "
        "else [default: the profile's, on]"),
    crop_margin: float | None = typer.Option(None, "--crop-margin", help="crop to the lesion with this margin "
                                             "(0: the whole image) [default: the profile's, 0.2]"),
    image_size: int | None = typer.Option(None, "--image-size", min=32, help="the image branch's input size in px "
                                          "[default: the profile's, 128 (cpu) or 224 (paper)]"),
    blocks: str | None = typer.Option(None, "--blocks", help="cpu profile: BasicBlocks per stage, four counts "
                                      "such as 2,2,2,2 [default: the profile's, 1,1,1,1]"),
    init_from: Path | None = typer.Option(None, "--init-from", help="start the image branch from these pretrained "
                                          "weights (a `train classifier-pretrain` output) instead of at random"),
    seed: int = typer.Option(0, "--seed", help="seed of the initial weights, the augmentations and the batch order "
                             "(another seed trains another member of an ensemble)"),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0: torch's default)"),
) -> None:
    """Train the fusion classifier (image branch, then the fused model) and write weights + model card."""
    from dermnode.models.classifier.fit import train_classifier as run
    from dermnode.models.classifier.net import ClassifierConfig
    from dermnode.models.classifier.train import TrainSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    set_threads(threads)
    if no_metadata_head not in ("fused", "image"):
        raise UserError(f"--no-metadata-head must be 'fused' or 'image', not {no_metadata_head!r}")
    given = {"epochs": epochs, "finetune_epochs": finetune_epochs, "mixup": mixup, "malignant_loss": malignant_loss,
             "ema": ema, "mixstyle": mixstyle,
             "colour_jitter": colour_jitter, "source_balance": source_balance}
    settings = TrainSettings(seed=seed, **{name: value for name, value in given.items() if value is not None})
    chosen = {"colour_constancy": colour_constancy, "crop_margin": crop_margin, "image_size": image_size}
    if blocks is not None:
        chosen["blocks"] = block_counts(blocks)
    choices = {name: value for name, value in chosen.items() if value is not None}
    init = None
    try:
        config = ClassifierConfig.for_profile(profile, **choices)
        if init_from is not None:
            from dermnode.models.classifier.pretrain import load_pretrained

            init = load_pretrained(init_from, config)
    except (ValueError, FileNotFoundError) as error:
        raise UserError(str(error)) from error
    summary = run(data, out, profile, work, settings, folds, masks, leave_out, no_metadata_head, choices, init)
    typer.echo(json.dumps(summary, indent=2))


def train_classifier_pretrain(
    data: Path = DATA,
    out: Path = typer.Option(..., "--out", help="directory to write the pretrained image branch and its card to"),
    profile: str = PROFILE,
    work: Path = typer.Option(Path("runs/classifier"), "--work", help="caches and checkpoints (resumed when present); "
                              "`train classifier` with the same --work reuses the prepared images"),
    leave_out: str | None = typer.Option(None, "--leave-out", help="leave this source and its lesions out, as "
                                         "`train classifier --leave-out` does"),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="pretraining epochs [default: PretrainSettings']"),
    batch_size: int | None = typer.Option(None, "--batch-size", min=2, help="images per batch (each gives two "
                                          "views) [default: PretrainSettings']"),
    image_size: int | None = typer.Option(None, "--image-size", min=32, help="the views' size in px: may be smaller "
                                          "than the classifier's, to spend less per epoch [default: the profile's]"),
    blocks: str | None = typer.Option(None, "--blocks", help="as `train classifier --blocks`"),
    seed: int = typer.Option(0, "--seed", help="seed of the initial weights, the views and the batch order"),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0: torch's default)"),
) -> None:
    """Pretrain the classifier's image branch without labels (SimCLR) on the images `train classifier`
    trains on; `train classifier --init-from OUT` starts from it."""
    from dermnode.models.classifier.net import ClassifierConfig
    from dermnode.models.classifier.pretrain import PretrainSettings, TooFewImages, pretrain_classifier

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    set_threads(threads)
    given = {"epochs": epochs, "batch_size": batch_size}
    settings = PretrainSettings(seed=seed, **{name: value for name, value in given.items() if value is not None})
    chosen = {"image_size": image_size, "blocks": None if blocks is None else block_counts(blocks)}
    choices = {name: value for name, value in chosen.items() if value is not None}
    try:
        ClassifierConfig.for_profile(profile, **choices)
    except ValueError as error:
        raise UserError(str(error)) from error
    try:
        figures = pretrain_classifier(data, out, profile, work, settings, leave_out, choices)
    except TooFewImages as error:
        raise UserError(f"{error}: give more images or a smaller --batch-size") from error
    typer.echo(json.dumps(figures, indent=2))


def block_counts(text: str) -> tuple[int, ...]:
    """``"2,2,2,2"`` -> ``(2, 2, 2, 2)``; a UserError unless every count is a positive integer."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise UserError(f"--blocks takes positive counts separated by commas, such as 2,2,2,2, not {text!r}")
    return counts


def train_classifier_ensemble(
    members: list[Path] = typer.Option(..., "--member", help="a trained classifier's weights directory; give two or "
                                       "more, trained alike with other --seed values"),
    data: Path = DATA,
    out: Path = typer.Option(..., "--out", help="weights directory to write"),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0: torch's default)"),
) -> None:
    """Average classifiers trained alike into one ensemble; its per-class thresholds and validation
    figures are measured again on the members' validation split."""
    from dermnode.models.classifier.ensemble import combine, load_members
    from dermnode.models.classifier.fit import VERSION

    set_threads(threads)
    try:
        loaded = load_members(members)
    except (ValueError, FileNotFoundError) as error:
        raise UserError(str(error)) from error
    metrics = combine(loaded, members, data, out, VERSION)
    print_metrics(metrics, ("n", "auroc_malignant", "auroc_macro", "sensitivity_at_veto", "specificity_at_veto", "headline"))


def evaluate_classifier(
    data: Path = DATA,
    out: Path = typer.Option(..., "--out", help="report folder: metrics.json, ROC and confusion plots"),
    weights: Path | None = WEIGHTS,
    subset: str = SUBSET,
    veto_threshold: float = typer.Option(DEFAULT_VETO_THRESHOLD, "--veto-threshold"),
    segment_all: bool = typer.Option(False, "--segment-all", help="segment every image, ignoring expert masks"),
    source: str | None = SOURCE,
    record: bool = RECORD,
    record_left_out: Path | None = typer.Option(
        None, "--record-left-out", help="with --source: store the figures as that source's leave-one-source-out "
        "result in the model card of this weights directory (trained the same way on every source)"),
    as_choice: str | None = typer.Option(
        None, "--as-choice", help="with --record-left-out: the weights were trained another way, to measure one "
        "choice; store their figures under this name in metrics.choices_on_the_left_out_source[source]"),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0: torch's default)"),
) -> None:
    """Run segmentation -> radiomics -> classifier on a data folder and report metrics."""
    from dermnode.models.classifier.predict import FusionClassifier
    from dermnode.models.classifier.evaluate import evaluate_classifier as run
    from dermnode.models.model_card import STARTER_DIR

    if record_left_out is not None and (source is None or weights is None):
        raise UserError("--record-left-out needs --source (the left-out source) and --weights (the weights trained without it)")
    if as_choice is not None and record_left_out is None:
        raise UserError("--as-choice names a choice recorded with --record-left-out DIR")
    set_threads(threads)
    model = FusionClassifier.load(weights)
    records = select_records(data, weights or STARTER_DIR / "classifier", subset, source)
    metrics = run(model, records, out, veto_threshold=veto_threshold, segment_all=segment_all)
    if record:
        what = subset + (f", source {source}" if source else "") + (", every image segmented" if segment_all else "")
        record_metrics(weights or STARTER_DIR / "classifier", data, what, metrics)
    if record_left_out is not None:
        record_left_out_metrics(record_left_out, weights, source, metrics, as_choice)
    print_metrics(metrics, ("n", "auroc_malignant", "auroc_macro", "sensitivity_at_veto", "specificity_at_veto", "headline", "by_source"))



def register(train_app: typer.Typer, evaluate_app: typer.Typer) -> None:
    """Add the classifier's commands to `dermnode train` / `dermnode evaluate`."""
    train_app.command("classifier")(train_classifier)
    train_app.command("classifier-ensemble")(train_classifier_ensemble)
    train_app.command("classifier-pretrain")(train_classifier_pretrain)
    evaluate_app.command("classifier")(evaluate_classifier)
