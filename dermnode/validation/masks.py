"""Lesion masks for validation: truth PNGs, the node's masks from DICOM SEG files, and their overlap.

Dice and IoU (Jaccard) come from :mod:`dermnode.models.metrics.segmentation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dermnode.models.metrics.segmentation import dice, jaccard


def read_truth_mask(path: Path) -> np.ndarray:
    """A PNG mask as booleans (any non-zero pixel is lesion; colour PNGs use their first channel)."""
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image)
    if array.ndim == 3:
        array = array[..., 0]
    return array > 0


def read_seg_mask(path: Path) -> np.ndarray:
    """The lesion mask of a SEG file the node wrote."""
    from pydicom import dcmread

    from dermnode.dicom_templates.seg import read_mask

    return read_mask(dcmread(path))


@dataclass(frozen=True)
class Overlap:
    """Dice and IoU of one case, or the reason they could not be computed."""

    dice: float | None
    iou: float | None
    note: str | None = None


def case_overlap(truth_mask_path: Path | None, predicted: np.ndarray | Path | None) -> Overlap | None:
    """Dice/IoU for one case; None when the truth gives no mask (nothing to compare)."""
    if truth_mask_path is None:
        return None
    if predicted is None:
        return Overlap(None, None, "the node's mask is not available")
    try:
        truth = read_truth_mask(truth_mask_path)
    except (OSError, ValueError) as error:
        return Overlap(None, None, f"truth mask unreadable: {error}")
    from pydicom.errors import InvalidDicomError

    try:
        mask = read_seg_mask(predicted) if isinstance(predicted, Path) else np.asarray(predicted, bool)
    except (InvalidDicomError, OSError, ValueError, KeyError, AttributeError, IndexError) as error:
        return Overlap(None, None, f"the node's SEG is unreadable: {error}")
    if truth.shape != mask.shape:
        return Overlap(None, None, f"truth mask is {truth.shape[1]}x{truth.shape[0]}, the image {mask.shape[1]}x{mask.shape[0]}")
    return Overlap(dice(mask, truth), jaccard(mask, truth))
