"""Missed malignancies: malignant by truth, veto off; each with a thumbnail and the node's mask outline
where the source image is reachable (a folder of the source DICOM files, e.g. the node's spool)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from dermnode.validation.cohort import Case
from dermnode.validation.masks import read_seg_mask

THUMBNAIL_PX = 112
OUTLINE_RGB = (0, 255, 64)


def missed_malignancies(cases: list[Case], seen: dict[str, list[str]]) -> list[dict]:
    """The false negatives at each case's own veto threshold, lowest malignancy probability first."""
    missed = sorted((c for c in cases if c.truth_malignant and not c.veto), key=lambda c: c.malignancy_probability)
    return [
        {
            "key": case.key,
            "truth": case.truth,
            "malignancy_probability": case.malignancy_probability,
            "veto_threshold": case.veto_threshold,
            "top_class": case.top_class,
            "top_probability": case.probabilities[case.top_class],
            "seen_in_training": "; ".join(seen.get(case.key, [])) or None,
        }
        for case in missed
    ]


def _outlined(rgb: np.ndarray, mask: np.ndarray | None) -> bytes:
    from PIL import Image, ImageFilter

    image = Image.fromarray(rgb)
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    pixels = np.asarray(image).copy()
    if mask is not None and mask.shape == rgb.shape[:2] and mask.any():
        small = Image.fromarray(mask.astype(np.uint8) * 255).resize(image.size, Image.Resampling.NEAREST)
        edge = np.asarray(small.filter(ImageFilter.MaxFilter(3))) != np.asarray(small.filter(ImageFilter.MinFilter(3)))
        pixels[edge] = OUTLINE_RGB
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def thumbnail(source: Path, predicted_mask: np.ndarray | Path | None) -> bytes | None:
    """A PNG thumbnail of the source image with the node's mask outlined; None when unreadable."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    from dermnode.dicom_templates.image_conversion import decode_rgb

    try:
        rgb = decode_rgb(dcmread(source))
    except (InvalidDicomError, OSError, ValueError, AttributeError):  # an unreadable source costs the thumbnail only
        return None
    mask = None
    try:
        if isinstance(predicted_mask, Path):
            mask = read_seg_mask(predicted_mask)
        elif predicted_mask is not None:
            mask = np.asarray(predicted_mask, bool)
    except (InvalidDicomError, OSError, ValueError, KeyError, AttributeError, IndexError):
        mask = None
    return _outlined(rgb, mask)


def thumbnails(cases: list[Case], rows: list[dict], images: dict[str, Path]) -> dict[str, bytes]:
    """Thumbnails of the missed cases whose source image is in ``images`` (SOP Instance UID -> file)."""
    by_key = {case.key: case for case in cases}
    found = {}
    for row in rows:
        case = by_key[row["key"]]
        source = images.get(case.ids.get("sop_instance_uid") or "")
        if source is not None and (png := thumbnail(source, case.predicted_mask)) is not None:
            found[row["key"]] = png
    return found
