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


def false_corner(prediction: np.ndarray | None, truth: np.ndarray, fraction: float = 0.05) -> bool:
    """Whether the prediction covers a corner of the image that the expert left out: the square of
    ``fraction`` of the shorter side at each corner, more than half of it predicted and none of it in the
    truth (a dark vignette corner or a sticker taken for lesion)."""
    prediction, truth = _pair(prediction, truth)
    side = max(1, round(fraction * min(truth.shape)))
    corners = [(slice(None, side), slice(None, side)), (slice(None, side), slice(-side, None)),
               (slice(-side, None), slice(None, side)), (slice(-side, None), slice(-side, None))]
    return any(prediction[c].mean() > 0.5 and not truth[c].any() for c in corners)


def thresholded_jaccard(value: float, threshold: float = JACCARD_THRESHOLD) -> float:
    """The ISIC 2018 score of one image: its Jaccard, or 0 when below the threshold."""
    return value if value >= threshold else 0.0


def summarise(dices: list[float], jaccards: list[float], n_no_lesion: int = 0,
              false_corners: list[bool] | None = None) -> dict[str, float | int]:
    """Mean Dice, mean Jaccard, mean thresholded Jaccard, the count of images and (given
    ``false_corners``) the share of images with a corner segmented that the expert left out."""
    if not dices:
        raise ValueError("no images to summarise")
    corners = {} if false_corners is None else {"false_corner_rate": float(np.mean(false_corners))}
    return {
        "n": len(dices),
        "dice_mean": float(np.mean(dices)),
        "dice_median": float(np.median(dices)),
        "jaccard_mean": float(np.mean(jaccards)),
        "thresholded_jaccard": float(np.mean([thresholded_jaccard(j) for j in jaccards])),
        "n_no_lesion": int(n_no_lesion),
        **corners,
    }
