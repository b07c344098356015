"""`dermnode evaluate gate`: how often the input gate refuses images, and why.

Run on real dermoscopy (a data folder) the refusals are false refusals; run on a folder of other
pictures (``--others``: photographs, slides, greyscale scans) they are the gate doing its job. Each
image goes through the node's order: pixel checks, segmentation, then the classifier's feature gate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from dermnode.models.classifier.predict import FusionClassifier
from dermnode.models.input_gate.checks import image_problem

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def reason_kind(reason: str) -> str:
    """"greyscale image", "image very blurred", ... without the numbers of the full reason."""
    return reason.split(": ", 1)[-1].split(" (")[0]


def gate_decisions(model: FusionClassifier, images: Iterable[np.ndarray], progress: bool = True) -> list[str | None]:
    """The gate's reason for each image, or None where it lets the image through."""
    from tqdm import tqdm

    from dermnode.models.segmentation.predict import LesionSegmenter

    segmenter = LesionSegmenter.load()
    decisions: list[str | None] = []
    for image in tqdm(images, desc="input gate", disable=not progress):
        reason = image_problem(image)
        if reason is None:
            mask = segmenter.predict([image])[0].mask
            mask = mask if mask is not None and mask.any() else None
            reason = model.atypical([image], [mask])[0]
        decisions.append(reason)
    return decisions


def refusal_summary(decisions: list[str | None]) -> dict:
    refused = [reason_kind(d) for d in decisions if d is not None]
    return {
        "n": len(decisions),
        "refused": len(refused),
        "refusal_rate": len(refused) / len(decisions) if decisions else None,
        "by_reason": {kind: refused.count(kind) for kind in sorted(set(refused))},
    }


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def load_any(path: Path) -> np.ndarray:
    """An image file as it is stored: greyscale stays 2-D (the gate must see it as greyscale)."""
    from PIL import Image

    with Image.open(path) as image:
        if image.mode in ("L", "I", "I;16", "1"):
            return np.asarray(image.convert("L"))
        return np.asarray(image.convert("RGB"))
