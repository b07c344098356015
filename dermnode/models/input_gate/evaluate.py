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
from dermnode.models.input_gate.checks import atypicality_problems, image_problem

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def reason_kind(reason: str) -> str:
    """"greyscale image", "image very blurred", ... without the numbers of the full reason."""
    return reason.split(": ", 1)[-1].split(" (")[0]


def gate_atypicality(
    model: FusionClassifier, images: Iterable[np.ndarray], progress: bool = True
) -> list[tuple[str | None, float | None]]:
    """For each image, in the node's order: the pixel checks' reason (and no atypicality), or None and the
    image's atypicality to the classifier's feature gates with the node's own lesion mask."""
    from tqdm import tqdm

    from dermnode.models.segmentation.predict import LesionSegmenter

    segmenter = LesionSegmenter.load()
    out: list[tuple[str | None, float | None]] = []
    for image in tqdm(images, desc="input gate", disable=not progress):
        reason = image_problem(image)
        if reason is not None:
            out.append((reason, None))
            continue
        mask = segmenter.predict([image])[0].mask
        mask = mask if mask is not None and mask.any() else None
        out.append((None, float(model.atypicality([image], [mask])[0])))
    return out


def gate_decisions(model: FusionClassifier, images: Iterable[np.ndarray], progress: bool = True) -> list[str | None]:
    """The gate's reason for each image, or None where it lets the image through."""
    return [reason if reason is not None else atypicality_problems(np.array([a]))[0]
            for reason, a in gate_atypicality(model, images, progress)]


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
