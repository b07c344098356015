"""Evaluation of the BCC-versus-SK model on a data folder: metrics.json, ROC and confusion plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dermnode.models.bcc_sk.predict import NEGATIVE, POSITIVE, BccSkModel
from dermnode.models.plots import plot_confusion, plot_roc
from dermnode.models.dataset_index import ImageRecord, Split, load_records, one_row_per_image
from dermnode.models.images import load_rgb
from dermnode.models.metrics.classification import (
    confusion_matrix,
    has_both_classes,
    operating_point,
    roc_auc,
    youden_threshold,
)


def evaluation_records(data_dir: Path, split: Split | None) -> list[ImageRecord]:
    """BCC and BKL records of the data folder (the split's validation part when a split is given)."""
    records = one_row_per_image(load_records(Path(data_dir)))
    if split is not None:
        records = split.validation(records)
    return [r for r in records if r.diagnosis in (POSITIVE, NEGATIVE)]


def evaluate_bcc_sk(
    model: BccSkModel, records: list[ImageRecord], out_dir: Path | None = None, batch: int = 32, progress=True
) -> dict:
    """Predict P(BCC) for every record from its image file; metrics at 0.5 and at the Youden point."""
    from tqdm import tqdm

    if not records:
        raise ValueError("no BCC or BKL images to evaluate")
    scores: list[float] = []
    for start in tqdm(range(0, len(records), batch), desc="BCC/SK", disable=not progress):
        scores += model.predict([load_rgb(r.image_path) for r in records[start : start + batch]])
    labels = np.array([1 if r.diagnosis == POSITIVE else 0 for r in records])
    scores_array = np.array(scores)
    metrics: dict = {"n": len(records), "n_bcc": int(labels.sum()), "n_sk": int((1 - labels).sum())}
    if has_both_classes(labels):
        at_half = operating_point(labels, scores_array, 0.5)
        youden = youden_threshold(labels, scores_array)
        metrics.update(
            auroc=roc_auc(labels, scores_array),
            threshold=0.5,
            sensitivity=at_half.sensitivity,
            specificity=at_half.specificity,
            ppv=at_half.ppv,
            npv=at_half.npv,
            youden=operating_point(labels, scores_array, youden).as_dict(),
        )
    metrics["sk_side"] = "BKL (benign keratosis) stands in for seborrheic keratosis"
    metrics["model"] = {"name": model.identity.name, "version": model.identity.version, "sha256": model.identity.sha256}
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        plot_roc({"BCC vs SK": (labels, scores_array)}, out_dir / "roc.png", "BCC versus seborrheic keratosis")
        called = (scores_array >= 0.5).astype(int)
        plot_confusion(confusion_matrix(1 - labels, 1 - called, 2), ["BCC", "SK"], out_dir / "confusion.png", "BCC/SK at 0.5")
        plot_attention(model, records, scores, out_dir / "attention.png")
        with (out_dir / "predictions.csv").open("w") as handle:
            handle.write("image_id,collection,diagnosis,p_bcc\n")
            for record, score in zip(records, scores):
                handle.write(f"{record.image_id},{record.collection},{record.diagnosis},{score:.6f}\n")
    return metrics


def plot_attention(model: BccSkModel, records: list[ImageRecord], scores: list[float], path: Path, per_class: int = 4) -> Path:
    """Grad-CAM overlays of the first few BCC and SK images, titled with diagnosis and P(BCC)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [i for i, r in enumerate(records) if r.diagnosis == POSITIVE][:per_class]
    chosen += [i for i, r in enumerate(records) if r.diagnosis == NEGATIVE][:per_class]
    figure, axes = plt.subplots(2, len(chosen), figsize=(2.2 * len(chosen), 4.6), squeeze=False)
    for column, index in enumerate(chosen):
        image = load_rgb(records[index].image_path)
        axes[0, column].imshow(image)
        axes[1, column].imshow(image)
        axes[1, column].imshow(model.attention_map(image), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        axes[0, column].set_title(f"{records[index].diagnosis} P(BCC)={scores[index]:.2f}", fontsize=8)
        for row in (0, 1):
            axes[row, column].axis("off")
    figure.suptitle("BCC/SK Grad-CAM attention (bottom row)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)
