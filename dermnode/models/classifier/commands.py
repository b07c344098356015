"""`dermnode train classifier|bcc-sk` and `dermnode evaluate classifier|bcc-sk|gate`.

:func:`register` adds the commands to the `train` and `evaluate` sub-apps of
:mod:`dermnode.models.cli`. Heavy libraries (torch, open_clip, pyradiomics) load inside the
command functions.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from dermnode.contract import DEFAULT_VETO_THRESHOLD

DATA = typer.Option(..., "--data", help="data folder laid out like ../shared/data (metadata.csv, <collection>/images)")
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


def _records(data: Path, weights_dir: Path, subset: str, source: str | None = None):
    from dermnode.models.dataset_index import Split, load_records, one_row_per_image

    records = one_row_per_image(load_records(data))
    if source is not None:
        records = [r for r in records if r.source == source]
        if not records:
            raise typer.BadParameter(f"no image of source {source!r} in {data}")
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


def _record(weights_dir: Path, data: Path, subset: str, metrics: dict) -> None:
    """Add the metrics to the model card (the weights and their hash stay as they are)."""
    from dermnode.models.model_card import ModelCard

    card = ModelCard.load(weights_dir)
    summary = {k: v for k, v in metrics.items() if k not in ("model", "confusion_matrix")}
    card.metrics = {**card.metrics, "evaluation": {"data": f"{data.name} ({subset} subset)", **summary}}
    card.save(weights_dir)


def _print(metrics: dict, keys: tuple[str, ...]) -> None:
    typer.echo(json.dumps({k: metrics.get(k) for k in keys}, indent=2))


def _set_threads(threads: int) -> None:
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def train_classifier(
    data: Path = DATA,
    out: Path = typer.Option(..., "--out", help="weights directory to write"),
    profile: str = PROFILE,
    work: Path = typer.Option(Path("runs/classifier"), "--work", help="caches and checkpoints (resumed when present)"),
    folds: int = typer.Option(1, "--folds", help="k > 1: k-fold cross-validation inside the training split first"),
    epochs: int = typer.Option(12, "--epochs", help="stage 1 (image branch) epochs"),
    finetune_epochs: int = typer.Option(2, "--finetune-epochs", help="stage 2 end-to-end fine-tune epochs"),
    masks: str = typer.Option(
        "expert", "--masks", help="expert: the data's expert masks where present, else the starter segmenter's; "
        "predicted: the starter segmenter's mask for every image (as the node sees them)"
    ),
    leave_out: str | None = typer.Option(
        None, "--leave-out", help="leave this source (ham10000, isic-8class, isic2018-task1) and its lesions out of "
        "training, to test on it with `evaluate classifier --source`"
    ),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0: torch's default)"),
) -> None:
    """Train the fusion classifier (image branch, then the fused model) and write weights + model card."""
    from dermnode.models.classifier_fit import train_classifier as run
    from dermnode.models.classifier_train import TrainSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    _set_threads(threads)
    settings = TrainSettings(epochs=epochs, finetune_epochs=finetune_epochs)
    summary = run(data, out, profile, work, settings, folds, masks, leave_out)
    typer.echo(json.dumps(summary, indent=2))


def evaluate_classifier(
    data: Path = DATA,
    out: Path = typer.Option(..., "--out", help="report folder: metrics.json, ROC and confusion plots"),
    weights: Path | None = WEIGHTS,
    subset: str = SUBSET,
    veto_threshold: float = typer.Option(DEFAULT_VETO_THRESHOLD, "--veto-threshold"),
    segment_all: bool = typer.Option(False, "--segment-all", help="segment every image, ignoring expert masks"),
    source: str | None = SOURCE,
    record: bool = RECORD,
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0: torch's default)"),
) -> None:
    """Run segmentation -> radiomics -> classifier on a data folder and report metrics."""
    from dermnode.models.classifier import FusionClassifier
    from dermnode.models.classifier_eval import evaluate_classifier as run
    from dermnode.models.model_card import STARTER_DIR

    _set_threads(threads)
    model = FusionClassifier.load(weights)
    records = _records(data, weights or STARTER_DIR / "classifier", subset, source)
    metrics = run(model, records, out, veto_threshold=veto_threshold, segment_all=segment_all)
    if record:
        what = subset + (f", source {source}" if source else "") + (", every image segmented" if segment_all else "")
        _record(weights or STARTER_DIR / "classifier", data, what, metrics)
    _print(metrics, ("n", "auroc_malignant", "auroc_macro", "sensitivity_at_veto", "specificity_at_veto", "headline", "by_source"))


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
    from dermnode.models.bcc_sk_train import BccSkSettings
    from dermnode.models.bcc_sk_train import train_bcc_sk as run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    _set_threads(threads)
    try:
        settings = BccSkSettings(encoder_epochs=encoder_epochs, coop_epochs=coop_epochs)
        metrics = run(data, out, profile, work, settings, leave_out)
    except FileNotFoundError as error:
        raise typer.BadParameter(str(error)) from error
    _print(metrics, ("n", "auroc", "sensitivity", "specificity"))


def evaluate_bcc_sk(
    data: Path = DATA,
    out: Path = typer.Option(..., "--out", help="report folder: metrics.json, ROC and confusion plots"),
    weights: Path | None = WEIGHTS,
    subset: str = SUBSET,
    source: str | None = SOURCE,
    record: bool = RECORD,
) -> None:
    """Evaluate the BCC-versus-SK model on the BCC and BKL images of a data folder."""
    from dermnode.models.bcc_sk import BccSkModel
    from dermnode.models.bcc_sk_eval import NEGATIVE, POSITIVE, evaluate_bcc_sk
    from dermnode.models.model_card import STARTER_DIR

    try:
        model = BccSkModel.load(weights)
    except FileNotFoundError as error:
        raise typer.BadParameter(str(error)) from error
    records = [r for r in _records(data, weights or STARTER_DIR / "bcc_sk", subset, source) if r.diagnosis in (POSITIVE, NEGATIVE)]
    metrics = evaluate_bcc_sk(model, records, out)
    if record:
        _record(weights or STARTER_DIR / "bcc_sk", data, subset, metrics)
    _print(metrics, ("n", "auroc", "sensitivity", "specificity"))


def evaluate_gate(
    data: Path | None = typer.Option(None, "--data", help="a data folder of dermoscopy: refusals there are false refusals"),
    others: Path | None = typer.Option(None, "--others", help="a folder of pictures that are not dermoscopy"),
    out: Path = typer.Option(..., "--out", help="report folder: gate.json"),
    weights: Path | None = WEIGHTS,
    subset: str = SUBSET,
    source: str | None = SOURCE,
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0: torch's default)"),
) -> None:
    """Refusal rates of the input gate (pixel checks + the classifier's feature gate), by reason."""
    from dermnode.models.classifier import FusionClassifier
    from dermnode.models.gate_eval import gate_decisions, image_files, load_any, refusal_summary
    from dermnode.models.images import load_rgb
    from dermnode.models.model_card import STARTER_DIR

    if data is None and others is None:
        raise typer.BadParameter("give --data, --others or both")
    _set_threads(threads)
    model = FusionClassifier.load(weights)
    report: dict = {"feature_gate": model.gate is not None}
    if data is not None:
        records = _records(data, weights or STARTER_DIR / "classifier", subset, source)
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


def register(train_app: typer.Typer, evaluate_app: typer.Typer) -> None:
    """Add the classifier, BCC/SK and input-gate commands to `dermnode train` / `dermnode evaluate`."""
    train_app.command("classifier")(train_classifier)
    train_app.command("bcc-sk")(train_bcc_sk)
    evaluate_app.command("classifier")(evaluate_classifier)
    evaluate_app.command("bcc-sk")(evaluate_bcc_sk)
    evaluate_app.command("gate")(evaluate_gate)
