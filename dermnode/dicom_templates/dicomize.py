"""`dermnode dicomize`: a folder of JPEG/PNG dermoscopy images plus an ISIC-style CSV -> DICOM files."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from dermnode.contract import PatientMetadata
from dermnode.dicom_templates.image_conversion import InvalidInstance, dicomize_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
METADATA_COLUMNS = ("image_id", "age_approx", "sex", "anatom_site_general")


def read_metadata_csv(path: Path) -> dict[str, PatientMetadata]:
    """image_id -> PatientMetadata from a CSV with image_id, age_approx, sex, anatom_site_general.

    ValueError, in words, for an empty file, missing columns or an age that is not a number.
    """
    table: dict[str, PatientMetadata] = {}
    with Path(path).open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            raise ValueError(f"{path} is empty; it needs the header line {','.join(METADATA_COLUMNS)}")
        missing = set(METADATA_COLUMNS) - set(reader.fieldnames)
        if missing:
            raise ValueError(f"{path} lacks the column(s) {', '.join(sorted(missing))}")
        for row in reader:
            age = (row["age_approx"] or "").strip()
            try:
                years = float(age) if age else None
            except ValueError:
                raise ValueError(f"{path} line {reader.line_num}: age_approx of {row['image_id']} is not a number "
                                 "(years, or empty when unknown)") from None
            table.setdefault(
                row["image_id"].strip(),
                PatientMetadata(
                    age=years,
                    sex=(row["sex"] or "").strip().lower() or None,
                    anatomic_site=(row["anatom_site_general"] or "").strip().lower() or None,
                ),
            )
    return table


@dataclass
class Converted:
    image: Path
    output: Path | None
    error: str | None = None


def image_files(images_dir: Path) -> list[Path]:
    return sorted(p for p in Path(images_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def dicomize_folder(images: list[Path], metadata: dict[str, PatientMetadata], out_dir: Path) -> Iterator[Converted]:
    """Convert each image (file stem = image_id) to ``out_dir/<image_id>.dcm``; one result per image.

    A bad image is reported and skipped; the others are still converted. Images without a
    metadata row get unknown age, sex and site.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for image in images:
        image_id = image.stem
        try:
            ds = dicomize_image(image, image_id, metadata.get(image_id, PatientMetadata()))
        except InvalidInstance as error:
            yield Converted(image, None, str(error))
            continue
        target = out_dir / f"{image_id}.dcm"
        temporary = target.with_suffix(".dcm.part")
        ds.save_as(temporary, enforce_file_format=True)
        temporary.replace(target)
        yield Converted(image, target)
