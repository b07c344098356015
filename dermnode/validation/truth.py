"""The hospital's truth CSV: one row per lesion with its key, its diagnosis and optionally a mask.

The key column is the first of ``sop_instance_uid``, ``study_uid``, ``accession_number`` present.
``diagnosis`` holds one of the eight codes of :data:`dermnode.contract.CLASS_CODES` (or the
diagnosis spelt out, e.g. "melanoma"), or just ``benign`` / ``malignant``. ``mask`` is an optional
PNG path, relative to the CSV's folder unless absolute. Optional ``age``, ``sex`` and
``anatomic_site`` columns fill in metadata that the node did not record.

Rows that cannot be used are kept as :class:`Exclusion` with the reason; reading never fails
because of one bad row.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from dermnode.contract import CLASS_CODES, CLASS_NAMES

KEY_COLUMNS: tuple[str, ...] = ("sop_instance_uid", "study_uid", "accession_number")
BINARY_LABELS: tuple[str, ...] = ("benign", "malignant")
_LABEL_ALIASES: dict[str, str] = {
    **{code.lower(): code for code in CLASS_CODES},
    **{name.lower(): code for code, name in CLASS_NAMES.items()},
    **{label: label for label in BINARY_LABELS},
    "seborrheic keratosis": "BKL",
    "pigmented benign keratosis": "BKL",
    "nevus": "NV",
}


class TruthFileError(ValueError):
    """The truth CSV as a whole cannot be used (missing file, no key or diagnosis column)."""


@dataclass(frozen=True)
class Exclusion:
    """A truth row (or a recorded output) left out of the metrics, and why."""

    row: int | None  # 1-based data row of the truth CSV; None for a recorded output
    key: str
    reason: str

    def as_dict(self) -> dict:
        return {"row": self.row, "key": self.key, "reason": self.reason}


@dataclass(frozen=True)
class TruthRow:
    row: int
    key: str
    label: str  # one of CLASS_CODES, "benign" or "malignant"
    mask_path: Path | None
    age: float | None
    sex: str | None
    anatomic_site: str | None


@dataclass(frozen=True)
class Truth:
    path: Path
    key_column: str
    rows: list[TruthRow]
    excluded: list[Exclusion]


def normalise_label(text: str) -> str | None:
    """The label a diagnosis cell stands for (a code, "benign" or "malignant"), or None."""
    return _LABEL_ALIASES.get(" ".join(text.strip().lower().replace("_", " ").split()))


def parse_float(value: object) -> float | None:
    """A finite number from a cell (number or text); None when blank or not a number."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


_AGE_UNITS = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}


def parse_age(value: object) -> float | None:
    """Years from a number or a DICOM age string ("045Y", "006M"); None when unknown."""
    text = str(value).strip().upper() if value is not None else ""
    age = int(text[:-1]) * _AGE_UNITS[text[-1]] if text[-1:] in _AGE_UNITS and text[:-1].isdigit() else parse_float(text)
    return age if age is not None and 0 <= age < 150 else None


def parse_sex(value: object) -> str | None:
    """"male" / "female" from the DICOM code (M/F) or the word; None otherwise (O, blank)."""
    return {"M": "male", "MALE": "male", "F": "female", "FEMALE": "female"}.get(str(value or "").strip().upper())


def read_truth(path: Path) -> Truth:
    """Read and check the truth CSV; unusable rows become exclusions, never errors."""
    path = Path(path)
    if not path.is_file():
        raise TruthFileError(f"truth file {path} does not exist")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            reader.fieldnames = columns
            raw = list(reader)
    except (UnicodeDecodeError, csv.Error) as error:
        raise TruthFileError(f"{path} is not a readable UTF-8 CSV file: {error}") from None
    key_column = next((c for c in KEY_COLUMNS if c in columns), None)
    if key_column is None:
        raise TruthFileError(f"{path} has no key column: it needs one of {', '.join(KEY_COLUMNS)}")
    if "diagnosis" not in columns:
        raise TruthFileError(f"{path} has no 'diagnosis' column")

    excluded: list[Exclusion] = []
    seen: dict[str, TruthRow] = {}
    conflicting: set[str] = set()
    for number, record in enumerate(raw, start=1):
        key = (record.get(key_column) or "").strip()
        diagnosis = (record.get("diagnosis") or "").strip()
        if not key:
            excluded.append(Exclusion(number, "", f"empty {key_column}"))
            continue
        label = normalise_label(diagnosis)
        if label is None:
            reason = "no diagnosis" if not diagnosis else f"unknown diagnosis {diagnosis!r}"
            excluded.append(Exclusion(number, key, reason))
            continue
        mask_text = (record.get("mask") or "").strip()
        mask_path = None
        if mask_text:
            mask_path = Path(mask_text) if Path(mask_text).is_absolute() else path.parent / mask_text
        truth_row = TruthRow(
            row=number,
            key=key,
            label=label,
            mask_path=mask_path,
            age=parse_age(record.get("age")),
            sex=parse_sex(record.get("sex")),
            anatomic_site=(record.get("anatomic_site") or "").strip() or None,
        )
        earlier = seen.get(key)
        if earlier is None:
            seen[key] = truth_row
        elif earlier.label != label:
            conflicting.add(key)
            excluded.append(Exclusion(number, key, "listed again with a different diagnosis"))
        else:
            excluded.append(Exclusion(number, key, f"duplicate of row {earlier.row}"))
    for key in conflicting:
        earlier = seen.pop(key)
        excluded.append(Exclusion(earlier.row, key, "listed again with a different diagnosis"))
    rows = sorted(seen.values(), key=lambda r: r.row)
    excluded.sort(key=lambda e: (e.row or 0))
    return Truth(path=path, key_column=key_column, rows=rows, excluded=excluded)
