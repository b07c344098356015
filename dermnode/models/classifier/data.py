"""Inputs of the fusion classifier: image and mask resizing, metadata encoding, the tensor cache.

The same functions prepare training data (through the cache) and the images the node sees at
inference, so that a model never meets inputs prepared differently from those it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from dermnode.contract import CLASS_CODES, PatientMetadata
from dermnode.models.dataset_index import ImageRecord
from dermnode.models.images import as_rgb, load_mask, load_rgb

#: Anatomic sites of the ISIC ``anatom_site_general`` vocabulary; anything else counts as missing.
SITES: tuple[str, ...] = (
    "anterior torso",
    "head/neck",
    "lateral torso",
    "lower extremity",
    "oral/genital",
    "palms/soles",
    "posterior torso",
    "upper extremity",
)
#: Other vocabularies' words for the ISIC sites (lower case). Words that name no one ISIC site
#: ("trunk", "torso", "unknown") are missing values, never a category of their own.
SITE_SYNONYMS: dict[str, str] = {
    **{w: "head/neck" for w in ("head", "neck", "head neck", "head and neck", "head & neck", "face", "scalp",
                                 "ear", "nose", "cheek", "forehead", "lip", "chin", "periocular", "eyelid")},
    **{w: "upper extremity" for w in ("upper limb", "upper limbs", "upper extremities", "arm", "arms", "forearm",
                                       "hand", "hands", "shoulder", "elbow", "wrist", "finger", "upper arm")},
    **{w: "lower extremity" for w in ("lower limb", "lower limbs", "lower extremities", "leg", "legs", "thigh",
                                       "knee", "shin", "calf", "ankle", "buttock", "buttocks", "hip", "toe")},
    **{w: "palms/soles" for w in ("acral", "palm", "palms", "sole", "soles", "foot", "feet", "acral palms or soles",
                                  "palms or soles", "plantar", "palmar", "nail", "nails")},
    **{w: "posterior torso" for w in ("back", "upper back", "lower back", "posterior trunk")},
    **{w: "anterior torso" for w in ("chest", "abdomen", "breast", "anterior trunk", "belly")},
    **{w: "lateral torso" for w in ("flank", "lateral trunk", "side")},
    **{w: "oral/genital" for w in ("genital", "genitalia", "oral", "mouth", "mucosa", "perianal", "genital area")},
}


def normalise_site(site: str | None) -> str | None:
    """An ISIC ``anatom_site_general`` value for a site in any common vocabulary, or None (missing)."""
    word = " ".join((site or "").strip().lower().replace("_", " ").replace("-", " ").split())
    if word in SITES:
        return word
    word = word.replace(" / ", "/")
    return word if word in SITES else SITE_SYNONYMS.get(word)


#: Names of the metadata vector's entries, in order.
METADATA_FIELDS: tuple[str, ...] = (
    ("age", "age_missing", "sex_male", "sex_female", "sex_missing")
    + tuple(f"site={s}" for s in SITES)
    + ("site_missing",)
)
AGE_SCALE = 90.0


def square_image(image: np.ndarray, size: int) -> np.ndarray:
    """RGB uint8 (any size; grey or RGBA accepted) -> RGB uint8 ``size`` x ``size`` (bilinear)."""
    pil = Image.fromarray(as_rgb(image))
    return np.asarray(pil.resize((size, size), Image.BILINEAR, reducing_gap=2.0))


def square_mask(mask: np.ndarray | None, size: int) -> np.ndarray:
    """Boolean mask (any size) -> boolean ``size`` x ``size``; None gives an all-False mask."""
    if mask is None:
        return np.zeros((size, size), dtype=bool)
    pil = Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255)
    return np.asarray(pil.resize((size, size), Image.BILINEAR)) >= 128


def shades_of_gray(image: np.ndarray, power: float = 6.0) -> np.ndarray:
    """Colour constancy (Finlayson and Trezzi's Shades of Gray): divide each channel by its
    Minkowski-``power`` mean so that the scene's illuminant becomes grey; keeps the mean brightness."""
    rgb = as_rgb(image).astype(np.float32)
    sample = rgb[:: max(1, rgb.shape[0] // 128), :: max(1, rgb.shape[1] // 128)]
    illuminant = np.power(np.mean(np.power(sample, power), axis=(0, 1)), 1.0 / power)
    gains = illuminant.mean() / np.maximum(illuminant, 1.0)
    return np.clip(rgb * gains, 0, 255).astype(np.uint8)


def lesion_box(mask: np.ndarray | None, shape: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a square around the mask's bounding box, widened by ``margin``
    of its side on every side and kept inside the image; the whole image when there is no usable mask."""
    rows, cols = shape
    whole = (0, rows, 0, cols)
    if mask is None or margin <= 0:
        return whole
    ys, xs = np.nonzero(mask)
    if len(ys) < 0.002 * rows * cols:
        return whole
    side = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) * (1.0 + 2.0 * margin)
    side = int(min(max(side, 0.25 * min(rows, cols)), rows, cols))
    cy, cx = (ys.min() + ys.max() + 1) / 2.0, (xs.min() + xs.max() + 1) / 2.0
    top = int(np.clip(round(cy - side / 2.0), 0, rows - side))
    left = int(np.clip(round(cx - side / 2.0), 0, cols - side))
    return top, top + side, left, left + side


def prepare_pair(
    image: np.ndarray, mask: np.ndarray | None, size: int, colour_constancy: bool = False, crop_margin: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's view of an image and its lesion mask: colour constancy (optional), a square
    crop around the lesion with ``crop_margin`` (0: the whole image), both resized to ``size``."""
    image = shades_of_gray(image) if colour_constancy else as_rgb(image)
    top, bottom, left, right = lesion_box(mask, image.shape[:2], crop_margin)
    cropped_mask = None if mask is None else np.asarray(mask, dtype=bool)[top:bottom, left:right]
    return square_image(image[top:bottom, left:right], size), square_mask(cropped_mask, size)


def encode_metadata(metadata: PatientMetadata) -> np.ndarray:
    """Age (scaled) + missing flag, sex one-hot + missing flag, site one-hot + missing flag."""
    vector = np.zeros(len(METADATA_FIELDS), dtype=np.float32)
    if metadata.age is None or not np.isfinite(metadata.age):
        vector[1] = 1.0
    else:
        vector[0] = float(metadata.age) / AGE_SCALE
    sex = (metadata.sex or "").strip().lower()
    if sex in ("male", "m", "man"):
        vector[2] = 1.0
    elif sex in ("female", "f", "woman"):
        vector[3] = 1.0
    else:
        vector[4] = 1.0
    site = normalise_site(metadata.anatomic_site)
    if site is not None:
        vector[5 + SITES.index(site)] = 1.0
    else:
        vector[-1] = 1.0
    return vector


@dataclass
class ClassifierCache:
    """Every labelled record of a data folder, resized once: what training and ablation read."""

    image_ids: np.ndarray  # str
    collections: np.ndarray  # str
    sources: np.ndarray  # str: where each image was taken (ImageRecord.source)
    labels: np.ndarray  # int index into CLASS_CODES
    images: np.ndarray  # uint8 N x S x S x 3
    masks: np.ndarray  # bool N x S x S (all False where no mask is known)
    mask_source: np.ndarray  # str: "expert", "predicted" or "none"
    metadata: np.ndarray  # float32 N x len(METADATA_FIELDS)

    def save(self, path: Path) -> None:
        np.savez(path, **self.__dict__)

    @classmethod
    def load(cls, path: Path) -> ClassifierCache:
        with np.load(path, allow_pickle=False) as data:
            return cls(**{key: data[key] for key in data.files})

    def subset(self, index: np.ndarray) -> ClassifierCache:
        return ClassifierCache(**{key: value[index] for key, value in self.__dict__.items()})


def expert_mask(record: ImageRecord) -> tuple[np.ndarray | None, str]:
    """The data folder's expert mask of a record and its source ("expert", or "none" without one)."""
    return (load_mask(record.mask_path), "expert") if record.mask_path is not None else (None, "none")


def build_cache(
    records: Sequence[ImageRecord],
    size: int,
    progress: bool = True,
    mask_for: Callable[[ImageRecord], tuple[np.ndarray | None, str]] = expert_mask,
    colour_constancy: bool = False,
    crop_margin: float = 0.0,
) -> ClassifierCache:
    """Prepare labelled records (records without a diagnosis are skipped) exactly as at inference
    (:func:`prepare_pair`): images decoded in full, ``mask_for(record)`` gives each mask and its source."""
    from tqdm import tqdm

    records = [r for r in records if r.diagnosis is not None]
    images = np.zeros((len(records), size, size, 3), dtype=np.uint8)
    masks = np.zeros((len(records), size, size), dtype=bool)
    sources = []
    for i, record in enumerate(tqdm(records, desc=f"preparing at {size}px", disable=not progress)):
        mask, source = mask_for(record)
        images[i], masks[i] = prepare_pair(load_rgb(record.image_path), mask, size, colour_constancy, crop_margin)
        sources.append(source)
    return ClassifierCache(
        image_ids=np.array([r.image_id for r in records]),
        collections=np.array([r.collection for r in records]),
        sources=np.array([r.source for r in records]),
        labels=np.array([CLASS_CODES.index(r.diagnosis) for r in records], dtype=np.int64),
        images=images,
        masks=masks,
        mask_source=np.array(sources, dtype="<U9"),
        metadata=np.stack([encode_metadata(r.metadata) for r in records]).astype(np.float32),
    )
