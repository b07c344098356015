"""Inputs of the fusion classifier: image and mask resizing, metadata encoding, the tensor cache.

The same functions prepare training data (through the cache) and the images the node sees at
inference, so that a model never meets inputs prepared differently from those it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

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


def encode_metadata(metadata: PatientMetadata) -> np.ndarray:
    """Age (scaled) + missing flag, sex one-hot + missing flag, site one-hot + missing flag."""
    vector = np.zeros(len(METADATA_FIELDS), dtype=np.float32)
    if metadata.age is None or not np.isfinite(metadata.age):
        vector[1] = 1.0
    else:
        vector[0] = float(metadata.age) / AGE_SCALE
    sex = (metadata.sex or "").strip().lower()
    if sex in ("male", "m"):
        vector[2] = 1.0
    elif sex in ("female", "f"):
        vector[3] = 1.0
    else:
        vector[4] = 1.0
    site = (metadata.anatomic_site or "").strip().lower()
    if site in SITES:
        vector[5 + SITES.index(site)] = 1.0
    else:
        vector[-1] = 1.0
    return vector


@dataclass
class ClassifierCache:
    """Every labelled record of a data folder, resized once: what training and ablation read."""

    image_ids: np.ndarray  # str
    collections: np.ndarray  # str
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


def build_cache(records: Sequence[ImageRecord], size: int, progress: bool = True) -> ClassifierCache:
    """Resize images and expert masks of labelled records (records without a diagnosis are skipped).

    Images are decoded in full and resized by :func:`square_image`, exactly as at inference."""
    from tqdm import tqdm

    records = [r for r in records if r.diagnosis is not None]
    images = np.zeros((len(records), size, size, 3), dtype=np.uint8)
    masks = np.zeros((len(records), size, size), dtype=bool)
    for i, record in enumerate(tqdm(records, desc=f"resizing to {size}px", disable=not progress)):
        images[i] = square_image(load_rgb(record.image_path), size)
        if record.mask_path is not None:
            masks[i] = square_mask(load_mask(record.mask_path), size)
    return ClassifierCache(
        image_ids=np.array([r.image_id for r in records]),
        collections=np.array([r.collection for r in records]),
        labels=np.array([CLASS_CODES.index(r.diagnosis) for r in records], dtype=np.int64),
        images=images,
        masks=masks,
        mask_source=np.array(["expert" if r.mask_path is not None else "none" for r in records]),
        metadata=np.stack([encode_metadata(r.metadata) for r in records]).astype(np.float32),
    )


def load_or_build_cache(data_dir: Path, work_dir: Path, size: int) -> ClassifierCache:
    """The cache of ``data_dir`` at ``size`` px kept in ``work_dir`` (built on first use)."""
    from dermnode.models.dataset_index import load_records

    path = Path(work_dir) / f"cache_{size}.npz"
    if path.is_file():
        return ClassifierCache.load(path)
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    cache = build_cache(load_records(Path(data_dir)), size)
    cache.save(path)
    return cache
