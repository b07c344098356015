"""Overlap metrics of a predicted lesion mask against the expert mask (ISIC 2018 Task 1 style)."""

from __future__ import annotations

import numpy as np

#: ISIC 2018 Task 1: a per-image Jaccard below this scores 0.
JACCARD_THRESHOLD = 0.65


def _pair(prediction: np.ndarray | None, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(truth, dtype=bool)
    prediction = np.zeros_like(truth) if prediction is None else np.asarray(prediction, dtype=bool)
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from truth shape {truth.shape}")
    return prediction, truth


def dice(prediction: np.ndarray | None, truth: np.ndarray) -> float:
    """2|A∩B| / (|A|+|B|); a missing prediction (None) counts as empty; both empty scores 1."""
    prediction, truth = _pair(prediction, truth)
    total = prediction.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(prediction, truth).sum() / total)


def jaccard(prediction: np.ndarray | None, truth: np.ndarray) -> float:
    """|A∩B| / |A∪B|; a missing prediction (None) counts as empty; both empty scores 1."""
    prediction, truth = _pair(prediction, truth)
    union = np.logical_or(prediction, truth).sum()
    return 1.0 if union == 0 else float(np.logical_and(prediction, truth).sum() / union)


def thresholded_jaccard(value: float, threshold: float = JACCARD_THRESHOLD) -> float:
    """The ISIC 2018 score of one image: its Jaccard, or 0 when below the threshold."""
    return value if value >= threshold else 0.0


def summarise(dices: list[float], jaccards: list[float], n_no_lesion: int = 0) -> dict[str, float | int]:
    """Mean Dice, mean Jaccard, mean thresholded Jaccard and the count of images."""
    if not dices:
        raise ValueError("no images to summarise")
    return {
        "n": len(dices),
        "dice_mean": float(np.mean(dices)),
        "dice_median": float(np.median(dices)),
        "jaccard_mean": float(np.mean(jaccards)),
        "thresholded_jaccard": float(np.mean([thresholded_jaccard(j) for j in jaccards])),
        "n_no_lesion": int(n_no_lesion),
    }
