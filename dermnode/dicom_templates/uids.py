"""UIDs the node can file and reference: dotted digits, at most 64 characters."""

from __future__ import annotations

import re

from pydicom import Dataset

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
#: The UIDs a result object needs to reference its source image.
REFERENCE_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


class InvalidUID(ValueError):
    """A UID that is not a dotted string of digits (it would be unsafe as a file name)."""


def check_uid(uid: object, what: str) -> str:
    """The UID as text; InvalidUID (in words) when it is empty, too long or not dotted digits."""
    text = str(uid or "").strip()
    if not text or len(text) > 64 or not _UID.match(text):
        raise InvalidUID(f"{what} {text!r} is not a valid DICOM UID (digits and dots, at most 64)")
    return text


def unreferencable(ds: Dataset) -> str | None:
    """Why no result object can reference ``ds`` (a reference UID missing or invalid), or None."""
    missing = []
    for keyword in REFERENCE_UIDS:
        try:
            check_uid(ds.get(keyword), keyword)
        except InvalidUID:
            missing.append(keyword)
    return f"no valid {', '.join(missing)}: no result object can reference the image" if missing else None
