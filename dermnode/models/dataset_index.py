"""The data folder's index (metadata.csv), the seeded train/validation splits and the image sources.

A data folder is laid out like ../shared/data: ``metadata.csv`` plus ``<collection>/images`` and,
where a collection has them, ``<collection>/masks/<image_id>_segmentation.png``. The same image can
sit in two collections and one lesion often has several images, so splits are drawn over lesions
(``lesion_id``, else the image_id), never over files.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dermnode.contract import CLASS_CODES, PatientMetadata

SPLIT_FILE = "split.json"


@dataclass(frozen=True)
class ImageRecord:
    image_id: str
    collection: str
    image_path: Path
    mask_path: Path | None
    diagnosis: str | None  # one of CLASS_CODES, or None when unknown
    metadata: PatientMetadata
    lesion_id: str | None = None
    confirmed_by: str | None = None

    @property
    def group(self) -> str:
        """What a split keeps together: the lesion where known, else the image."""
        return self.lesion_id or self.image_id

    @property
    def source(self) -> str:
        """Where the image was taken: HAM10000 images (those with a ``HAM_`` lesion id) are one source
        whichever collection files them; other images belong to their collection's source."""
        return "ham10000" if (self.lesion_id or "").startswith("HAM_") else self.collection


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def load_records(data_dir: Path, collection: str | None = None) -> list[ImageRecord]:
    """Every row of ``metadata.csv`` whose image file exists (optionally one collection only)."""
    data_dir = Path(data_dir)
    csv_path = data_dir / "metadata.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path} not found: a data folder needs metadata.csv")
    records: list[ImageRecord] = []
    with csv_path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if collection and row["collection"] != collection:
                continue
            images = data_dir / row["collection"] / "images"
            image_path = next(
                (p for ext in (".jpg", ".jpeg", ".png") if (p := images / f"{row['image_id']}{ext}").is_file()),
                None,
            )
            if image_path is None:
                continue
            mask = data_dir / row["collection"] / "masks" / f"{row['image_id']}_segmentation.png"
            diagnosis = row.get("diagnosis") or None
            records.append(
                ImageRecord(
                    image_id=row["image_id"],
                    collection=row["collection"],
                    image_path=image_path,
                    mask_path=mask if mask.is_file() else None,
                    diagnosis=diagnosis if diagnosis in CLASS_CODES else None,
                    metadata=PatientMetadata(
                        age=_float_or_none(row.get("age_approx", "")),
                        sex=row.get("sex") or None,
                        anatomic_site=row.get("anatom_site_general") or None,
                    ),
                    lesion_id=row.get("lesion_id") or None,
                    confirmed_by=row.get("diagnosis_confirmed_by") or None,
                )
            )
    return records


@dataclass(frozen=True)
class Split:
    seed: int
    validation_fraction: float
    train_ids: tuple[str, ...]
    validation_ids: tuple[str, ...]
    unit: str = "image"  # what was drawn: "image" ids or "lesion" ids (images of a lesion together)

    def save(self, directory: Path) -> Path:
        path = Path(directory) / SPLIT_FILE
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, directory_or_file: Path) -> Split:
        path = Path(directory_or_file)
        if path.is_dir():
            path = path / SPLIT_FILE
        raw = json.loads(path.read_text())
        return cls(raw["seed"], raw["validation_fraction"], tuple(raw["train_ids"]), tuple(raw["validation_ids"]),
                   raw.get("unit", "image"))

    def card_ids(self) -> dict[str, list[str]]:
        """Both sides' image ids, as a model card's ``split_ids`` holds them."""
        return {"train": list(self.train_ids), "validation": list(self.validation_ids)}

    def describe(self) -> str:
        return (f"split_by_{self.unit} seed {self.seed}, validation fraction {self.validation_fraction} "
                f"({len(self.train_ids)} train / {len(self.validation_ids)} validation image ids; split.json)")

    def train(self, records: list[ImageRecord]) -> list[ImageRecord]:
        ids = set(self.train_ids)
        return [r for r in records if r.image_id in ids]

    def validation(self, records: list[ImageRecord]) -> list[ImageRecord]:
        ids = set(self.validation_ids)
        return [r for r in records if r.image_id in ids]


def split_by_lesion(
    data_dir: Path | None = None,
    seed: int = 20261203,
    validation_fraction: float = 0.2,
    records: list[ImageRecord] | None = None,
) -> Split:
    """A seeded split of the whole data folder (or ``records``) that keeps every lesion on one side.

    Groups are lesion ids where the data has them, else image ids; an image filed in two collections
    lands on one side with all images of its lesion. Every model trained on the folder shares it."""
    records = load_records(data_dir) if records is None else records
    group_of: dict[str, str] = {}
    for record in records:  # an image seen with a lesion id anywhere belongs to that lesion everywhere
        if record.lesion_id or record.image_id not in group_of:
            group_of[record.image_id] = record.group
    groups = sorted(set(group_of.values()))
    order = np.random.default_rng(seed).permutation(len(groups))
    val_groups = {groups[i] for i in order[: int(round(len(groups) * validation_fraction))]}
    val = sorted(i for i, g in group_of.items() if g in val_groups)
    train = sorted(i for i, g in group_of.items() if g not in val_groups)
    return Split(seed, validation_fraction, tuple(train), tuple(val), "lesion")


def one_row_per_image(records: list[ImageRecord]) -> list[ImageRecord]:
    """The same image filed in two collections, once: the row with an expert mask, else the first."""
    chosen: dict[str, ImageRecord] = {}
    for record in records:
        kept = chosen.get(record.image_id)
        if kept is None or (kept.mask_path is None and record.mask_path is not None):
            chosen[record.image_id] = record
    return list(chosen.values())


def source_weights(sources: Sequence[str], power: float = 1.0) -> np.ndarray:
    """Sampling weights of images from ``sources`` (each image's :attr:`ImageRecord.source`): each weight
    is its source's image count ** -``power``, so power 1 gives every source the same share of an epoch
    and 0 every image the same chance."""
    counts = Counter(sources)
    return np.array([counts[source] ** -power for source in sources], dtype=np.float64)


def leave_source_out(records: list[ImageRecord], source: str) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Training records from the other sources and test records from ``source`` (see
    :attr:`ImageRecord.source`); images or lesions that appear in the test source never train."""
    test = [r for r in records if r.source == source]
    if not test:
        known = sorted({r.source for r in records})
        raise ValueError(f"no image of source {source!r} in the data: sources are {', '.join(known)}")
    held_images, held_groups = {r.image_id for r in test}, {r.group for r in test}
    train = [r for r in records if r.source != source and r.image_id not in held_images and r.group not in held_groups]
    return train, test


def training_images(records: list[ImageRecord], leave_out: str | None = None) -> list[ImageRecord]:
    """Each image once, without the ``leave_out`` source, its images and its lesions. The source is
    left out before one row per image is kept: an image filed in two collections (the left-out one
    among them) never trains, whichever of its rows would have been kept."""
    return one_row_per_image(leave_source_out(records, leave_out)[0] if leave_out else records)


def split_by_image_id(data_dir: Path, seed: int = 20261122, validation_fraction: float = 0.2) -> Split:
    """A seeded split of all image_ids of the data folder (both collections together).

    The split covers the whole folder so that every model trained on it shares one validation set.
    """
    ids = sorted({r.image_id for r in load_records(data_dir)})
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = int(round(len(ids) * validation_fraction))
    val = sorted(ids[i] for i in order[:n_val])
    train = sorted(ids[i] for i in order[n_val:])
    return Split(seed, validation_fraction, tuple(train), tuple(val))
