"""The data folder's index (metadata.csv) and the seeded train/validation split by image_id.

A data folder is laid out like ../shared/data: ``metadata.csv`` plus ``<collection>/images`` and,
where a collection has them, ``<collection>/masks/<image_id>_segmentation.png``. The same lesion can
sit in two collections, so splits are drawn over image_ids, never over files.
"""

from __future__ import annotations

import csv
import json
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
                )
            )
    return records


@dataclass(frozen=True)
class Split:
    seed: int
    validation_fraction: float
    train_ids: tuple[str, ...]
    validation_ids: tuple[str, ...]

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
        return cls(raw["seed"], raw["validation_fraction"], tuple(raw["train_ids"]), tuple(raw["validation_ids"]))

    def train(self, records: list[ImageRecord]) -> list[ImageRecord]:
        ids = set(self.train_ids)
        return [r for r in records if r.image_id in ids]

    def validation(self, records: list[ImageRecord]) -> list[ImageRecord]:
        ids = set(self.validation_ids)
        return [r for r in records if r.image_id in ids]


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
