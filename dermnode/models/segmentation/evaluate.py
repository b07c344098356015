"""Evaluation of a lesion segmenter on a data folder: metrics.json, per-image scores, overlay sheet."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dermnode.models.dataset_index import ImageRecord
from dermnode.models.images import load_mask, load_rgb
from dermnode.models.metrics.segmentation import dice, false_corner, jaccard, summarise
from dermnode.models.segmentation.predict import LesionSegmenter

SHEET_FILE = "overlays_worst_best.png"


def evaluate_records(segmenter: LesionSegmenter, records: list[ImageRecord], out: Path,
                     chunk: int = 16, n_sheet: int = 6) -> dict:
    """Score ``records`` (with expert masks) at their source size; write metrics.json,
    per_image.csv and the worst/best overlay sheet under ``out``; return the metrics."""
    records = [r for r in records if r.mask_path is not None]
    if not records:
        raise ValueError("no images with expert masks to evaluate")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tqdm(total=len(records), desc="evaluating", unit="img") as bar:
        for start in range(0, len(records), chunk):
            batch = records[start:start + chunk]
            results = segmenter.predict([load_rgb(r.image_path) for r in batch])
            for record, result in zip(batch, results):
                truth = load_mask(record.mask_path)
                if result.mask is not None and result.mask.shape != truth.shape:
                    raise ValueError(f"{record.image_id}: mask {truth.shape} and image sizes differ")
                rows.append({"image_id": record.image_id, "collection": record.collection,
                             "dice": dice(result.mask, truth), "jaccard": jaccard(result.mask, truth),
                             "false_corner": false_corner(result.mask, truth),
                             "confidence": result.confidence, "no_lesion": result.mask is None})
            bar.update(len(batch))
    metrics = _summary(rows)
    collections = sorted({r["collection"] for r in rows})
    if len(collections) > 1:
        metrics["by_collection"] = {name: _summary([r for r in rows if r["collection"] == name]) for name in collections}
    metrics["model"] = {"name": segmenter.identity.name, "version": segmenter.identity.version,
                        "sha256": segmenter.identity.sha256}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    with (out / "per_image.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    by_id = {r.image_id: r for r in records}
    ranked = sorted(rows, key=lambda r: r["dice"])
    picks = ranked[:n_sheet] + ranked[-n_sheet:] if len(ranked) > 2 * n_sheet else ranked
    overlay_sheet([by_id[r["image_id"]] for r in picks], segmenter, out / SHEET_FILE)
    return {k: v for k, v in metrics.items() if k != "model"}


def _summary(rows: list[dict]) -> dict:
    return summarise([r["dice"] for r in rows], [r["jaccard"] for r in rows], sum(r["no_lesion"] for r in rows),
                     [r["false_corner"] for r in rows])


def overlay_sheet(records: list[ImageRecord], segmenter: LesionSegmenter, path: Path) -> Path:
    """A PNG grid of images with the expert outline (green) and the predicted outline (red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = [load_rgb(r.image_path) for r in records]
    results = segmenter.predict(images)
    cols = min(6, len(records))
    rows = int(np.ceil(len(records) / cols))
    figure, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 3.1 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, record, image, result in zip(axes.flat, records, images, results):
        truth = load_mask(record.mask_path)
        ax.imshow(image)
        ax.contour(truth, levels=[0.5], colors="lime", linewidths=1.2)
        if result.mask is not None:
            ax.contour(result.mask, levels=[0.5], colors="red", linewidths=1.2)
        label = "no lesion" if result.mask is None else f"Dice {dice(result.mask, truth):.2f}"
        ax.set_title(f"{record.image_id}\n{label}", fontsize=8)
    figure.suptitle("worst (top) and best (bottom): expert green, predicted red", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
