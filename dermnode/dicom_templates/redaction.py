"""Errors in words without patient data: an exception's text with a dataset's text values removed."""

from __future__ import annotations

from pydicom import Dataset

#: Value representations whose values may carry patient information (replaced in error texts).
_TEXT_VRS = {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UT"}


def redact(message: str, ds: Dataset | None) -> str:
    """``message`` with every text value (3 characters or more) of ``ds`` replaced by ``<Keyword>``."""
    if ds is None:
        return message
    values = []
    for element in ds.iterall():
        if element.VR in _TEXT_VRS and element.value not in (None, ""):
            for value in element.value if element.VM > 1 else [element.value]:
                if len(str(value).strip()) >= 3:
                    values.append((str(value).strip(), f"<{element.keyword or element.tag}>"))
    for value, keyword in sorted(values, key=lambda item: -len(item[0])):
        message = message.replace(value, keyword)
    return message


def describe(error: BaseException, ds: Dataset | None = None) -> str:
    """An exception in words without element values: its type and its redacted first line."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {redact(text, ds)[:300]}" if text else type(error).__name__
