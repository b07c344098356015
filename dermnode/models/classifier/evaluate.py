"""`dermnode evaluate classifier`: the node's chain on a data folder, metrics.json and report plots.

For each image: the data folder's expert mask where present (unless ``segment_all``), otherwise the
segmenter's mask; radiomics on that mask; then the classifier (fused model and ablation heads).
Images where the segmenter finds no lesion are classified with an empty mask and no radiomics, and
counted in ``n_no_lesion`` (the node itself would report them as NO_LESION).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dermnode.contract import CLASS_CODES, DEFAULT_VETO_THRESHOLD, MALIGNANT_CODES, PatientMetadata
from dermnode.models.classifier.predict import FUSED_PLAIN, FUSED_TTA, IMAGE_TTA, FusionClassifier
from dermnode.models.plots import plot_confusion, plot_roc
from dermnode.models.dataset_index import ImageRecord
from dermnode.models.images import load_mask, load_rgb
from dermnode.models.metrics.bootstrap import bootstrap_intervals
from dermnode.models.metrics.calibration import expected_calibration_error
from dermnode.models.metrics.classification import (
    balanced_accuracy,
    confusion_matrix,
    has_both_classes,
    one_vs_rest_auroc,
    operating_point,
    roc_auc,
    youden_threshold,
)

MALIGNANT_INDEX = [CLASS_CODES.index(c) for c in MALIGNANT_CODES]


def is_malignant(labels: np.ndarray) -> np.ndarray:
    """1 where the class index is a malignant diagnosis, else 0."""
    return np.isin(labels, MALIGNANT_INDEX).astype(int)


def malignant_score(probs: np.ndarray) -> np.ndarray:
    """P(malignant): the malignant classes' probabilities summed (cases x classes -> cases)."""
    return probs[:, MALIGNANT_INDEX].sum(axis=1)

#: The fused model with every metadata field missing: how the image stands alone.
NO_METADATA = "fused, no metadata"
NO_METADATA_PLAIN = f"{FUSED_PLAIN}, no metadata"
NO_METADATA_TTA = f"{FUSED_TTA}, no metadata"
#: the mean of the fused head (temperature-scaled, every metadata field missing) and the image-only head (plain softmax)
BOTH_HEADS_NO_METADATA = "fused and image heads averaged, no metadata"
#: Inference choices measured side by side: (probabilities with the cases' metadata, without any).
CHOICES: dict[str, tuple[str, str]] = {
    "shipped (as the model's config answers)": ("fused", NO_METADATA),
    "fused head": (FUSED_PLAIN, NO_METADATA_PLAIN),
    "fused head, 4 flips": (FUSED_TTA, NO_METADATA_TTA),
    "fused head; image head when no metadata": (FUSED_PLAIN, "image"),
    "fused head, 4 flips; image head, 4 flips when no metadata": (FUSED_TTA, IMAGE_TTA),
    "fused head; fused and image heads averaged when no metadata": (FUSED_PLAIN, BOTH_HEADS_NO_METADATA),
}
BCC, BKL = CLASS_CODES.index("BCC"), CLASS_CODES.index("BKL")


@dataclass
class ChainOutputs:
    labels: np.ndarray
    probabilities: dict[str, np.ndarray]  # variant -> cases x classes
    mask_sources: list[str]
    image_sources: list[str] | None = None  # where each image was taken (ImageRecord.source)


def run_chain(
    model: FusionClassifier, records: list[ImageRecord], segment_all: bool = False, batch: int = 32, progress=True
) -> ChainOutputs:
    """Segmentation (where needed) -> radiomics -> classifier for every record."""
    from tqdm import tqdm

    from dermnode.models.radiomics import RadiomicsExtractor

    records = [r for r in records if r.diagnosis is not None]
    if not records:
        raise ValueError("no labelled images to evaluate")
    extractor = RadiomicsExtractor()
    segmenter = None
    if segment_all or any(r.mask_path is None for r in records):
        from dermnode.models.segmentation.predict import LesionSegmenter

        segmenter = LesionSegmenter.load()
    variants: dict[str, list[np.ndarray]] = {}
    sources: list[str] = []
    for start in tqdm(range(0, len(records), batch), desc="classifier chain", disable=not progress):
        chunk = records[start : start + batch]
        images = [load_rgb(r.image_path) for r in chunk]
        masks: list[np.ndarray | None] = [
            load_mask(r.mask_path) if r.mask_path is not None and not segment_all else None for r in chunk
        ]
        need = [i for i, r in enumerate(chunk) if masks[i] is None]
        if need:
            for i, result in zip(need, segmenter.predict([images[i] for i in need])):
                masks[i] = result.mask
        sources += [
            "expert" if (r.mask_path is not None and not segment_all) else ("predicted" if m is not None else "no lesion")
            for r, m in zip(chunk, masks)
        ]
        radiomics = [extractor.extract(im, m).features if m is not None else None for im, m in zip(images, masks)]
        out = model.predict_variants(images, masks, [r.metadata for r in chunk], radiomics)
        bare = model.predict_variants(images, masks, [PatientMetadata()] * len(chunk), radiomics)
        out[NO_METADATA], out[NO_METADATA_PLAIN], out[NO_METADATA_TTA] = bare["fused"], bare[FUSED_PLAIN], bare[FUSED_TTA]
        out[BOTH_HEADS_NO_METADATA] = (bare[FUSED_PLAIN] + bare["image"]) / 2
        for name, probs in out.items():
            variants.setdefault(name, []).append(probs)
    labels = np.array([CLASS_CODES.index(r.diagnosis) for r in records])
    return ChainOutputs(labels, {k: np.concatenate(v) for k, v in variants.items()}, sources, [r.source for r in records])


def aurocs(labels: np.ndarray, probs: np.ndarray) -> dict:
    """Malignant-vs-benign AUROC (by the summed probability) and the macro one-vs-rest AUROC."""
    return {"auroc_malignant": malignant_auroc(labels, probs),
            "auroc_macro": one_vs_rest_auroc(labels, probs, CLASS_CODES)[1]}


def headline(labels: np.ndarray, probs: np.ndarray, no_metadata: np.ndarray | None) -> dict[str, float | None]:
    """The figures to steer by, for one set of cases (also what the bootstrap resamples)."""
    malignant, score = is_malignant(labels), malignant_score(probs)
    both = has_both_classes(malignant)
    pair = np.isin(labels, [BCC, BKL])
    bcc_vs_bkl = probs[pair, BCC] / np.maximum(probs[pair, BCC] + probs[pair, BKL], 1e-12)
    out = {
        "auroc_malignant": roc_auc(malignant, score) if both else None,
        "balanced_accuracy": balanced_accuracy(labels, probs.argmax(axis=1)),
        "ece_malignant": expected_calibration_error(malignant, np.clip(score, 0, 1)),
        "auroc_bcc_vs_bkl": roc_auc((labels[pair] == BCC).astype(int), bcc_vs_bkl)
        if has_both_classes((labels[pair] == BCC).astype(int)) else None,
    }
    if no_metadata is not None:
        out["auroc_malignant_no_metadata"] = (
            roc_auc(malignant, malignant_score(no_metadata)) if both else None
        )
    return out


def headline_with_intervals(
    labels: np.ndarray, probs: np.ndarray, no_metadata: np.ndarray | None, resamples: int = 500
) -> dict[str, dict]:
    """Each headline figure with its 95 % percentile bootstrap interval over the cases."""
    values = headline(labels, probs, no_metadata)
    intervals = bootstrap_intervals(
        lambda index: headline(labels[index], probs[index], None if no_metadata is None else no_metadata[index]),
        list(values),
        len(labels),
        resamples=resamples,
    )
    return {name: {"value": value, "ci95": [intervals[name].low, intervals[name].high]} for name, value in values.items()}


def malignant_auroc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    malignant = is_malignant(labels)
    return roc_auc(malignant, malignant_score(probs)) if has_both_classes(malignant) else None


def choices_table(labels: np.ndarray, probabilities: dict[str, np.ndarray], resamples: int = 300) -> dict[str, dict]:
    """Malignant AUROC (95 % bootstrap interval) of each inference choice, with and without metadata."""
    table = {}
    for choice, (full, bare) in CHOICES.items():
        if full not in probabilities or bare not in probabilities:
            continue
        pair = {"with metadata": probabilities[full], "no metadata": probabilities[bare]}
        values = {name: malignant_auroc(labels, probs) for name, probs in pair.items()}
        intervals = bootstrap_intervals(lambda index: {name: malignant_auroc(labels[index], probs[index])
                                                       for name, probs in pair.items()},
                                        list(values), len(labels), resamples=resamples)
        table[choice] = {name: {"value": value, "ci95": [intervals[name].low, intervals[name].high]}
                         for name, value in values.items()}
    return table


def youden_thresholds(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Per class, the Youden-optimal one-vs-rest threshold (for the classes present but not alone)."""
    return {
        code: youden_threshold((labels == i).astype(int), probabilities[:, i])
        for i, code in enumerate(CLASS_CODES)
        if 0 < (labels == i).sum() < len(labels)
    }


def classification_metrics(
    outputs: ChainOutputs, class_thresholds: dict[str, float], veto_threshold: float = DEFAULT_VETO_THRESHOLD
) -> dict:
    """metrics.json content: fused-model metrics, per-class operating points, veto, ablation."""
    labels, probs = outputs.labels, outputs.probabilities["fused"]
    malignant, score = is_malignant(labels), malignant_score(probs)
    per_class_auroc, _ = one_vs_rest_auroc(labels, probs, CLASS_CODES)
    per_class = {}
    for index, code in enumerate(CLASS_CODES):
        positives = (labels == index).astype(int)
        threshold = class_thresholds.get(code)
        point = operating_point(positives, probs[:, index], threshold) if threshold is not None else None
        per_class[code] = {
            "n": int(positives.sum()),
            "auroc": per_class_auroc.get(code),
            "threshold": threshold,
            "sensitivity": point.sensitivity if point else None,
            "specificity": point.specificity if point else None,
        }
    veto = operating_point(malignant, score, veto_threshold)
    predicted = probs.argmax(axis=1)
    metrics = {
        "n": int(len(labels)),
        "n_malignant": int(malignant.sum()),
        **aurocs(labels, probs),
        "per_class": per_class,
        "veto_threshold": veto_threshold,
        "sensitivity_at_veto": veto.sensitivity,
        "specificity_at_veto": veto.specificity,
        "ppv_at_veto": veto.ppv,
        "npv_at_veto": veto.npv,
        "balanced_accuracy": balanced_accuracy(labels, predicted),
        "confusion_matrix": {"classes": list(CLASS_CODES), "rows_true_cols_predicted": confusion_matrix(labels, predicted, len(CLASS_CODES)).tolist()},
        "mask_sources": {s: outputs.mask_sources.count(s) for s in sorted(set(outputs.mask_sources))},
        "n_no_lesion": outputs.mask_sources.count("no lesion"),
        "ablation": {
            name: aurocs(labels, p) for name, p in outputs.probabilities.items() if name != "fused"
        }
        | {"shipped (fused head, fine-tuned)": aurocs(labels, probs)},
    }
    no_metadata = outputs.probabilities.get(NO_METADATA)
    metrics["headline"] = headline_with_intervals(labels, probs, no_metadata)
    metrics["inference_choices"] = choices_table(labels, outputs.probabilities)
    if outputs.image_sources is not None:
        sources = np.array(outputs.image_sources)
        metrics["by_source"] = {
            source: {"n": int((sources == source).sum())}
            | headline(labels[sources == source], probs[sources == source],
                       None if no_metadata is None else no_metadata[sources == source])
            for source in sorted(set(outputs.image_sources))
        }
    return metrics


def write_report(outputs: ChainOutputs, metrics: dict, records: list[ImageRecord], out_dir: Path) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    labels = outputs.labels
    malignant = is_malignant(labels)
    plot_roc(
        {name: (malignant, malignant_score(p)) for name, p in outputs.probabilities.items()},
        out_dir / "roc_malignant.png",
        "malignant vs benign (ablation)",
    )
    fused = outputs.probabilities["fused"]
    plot_roc(
        {code: ((labels == i).astype(int), fused[:, i]) for i, code in enumerate(CLASS_CODES)},
        out_dir / "roc_per_class.png",
        "one-vs-rest per class",
    )
    plot_confusion(confusion_matrix(labels, fused.argmax(axis=1), len(CLASS_CODES)), CLASS_CODES, out_dir / "confusion.png", "fused classifier")
    with (out_dir / "predictions.csv").open("w") as handle:
        labelled = [r for r in records if r.diagnosis is not None]
        handle.write("image_id,collection,diagnosis,mask_source," + ",".join(f"p_{c}" for c in CLASS_CODES) + "\n")
        for record, source, row in zip(labelled, outputs.mask_sources, fused):
            handle.write(f"{record.image_id},{record.collection},{record.diagnosis},{source}," + ",".join(f"{v:.6f}" for v in row) + "\n")


def evaluate_classifier(
    model: FusionClassifier,
    records: list[ImageRecord],
    out_dir: Path | None,
    veto_threshold: float = DEFAULT_VETO_THRESHOLD,
    segment_all: bool = False,
    progress: bool = True,
) -> dict:
    outputs = run_chain(model, records, segment_all=segment_all, progress=progress)
    metrics = classification_metrics(outputs, model.class_thresholds, veto_threshold)
    metrics["model"] = {"name": model.identity.name, "version": model.identity.version, "sha256": model.identity.sha256}
    if out_dir is not None:
        write_report(outputs, metrics, records, out_dir)
    return metrics
