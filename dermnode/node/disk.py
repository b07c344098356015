"""The disk watermark: below ``disk_watermark_mb`` MiB free in the home folder the node takes nothing in.

``DiskWatermark.shortfall()`` is checked before each C-STORE is stored (receive.py): it gives the
reason to answer 0xA700 (out of resources) with, or None while there is room. Crossing the
watermark either way is logged once, not once per instance. ``/readyz`` can ask the same object.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

log = logging.getLogger("dermnode.disk")
MIB = 1024 * 1024


def free_mib(folder: Path) -> float:
    """Free space (for unprivileged users) of the file system holding ``folder``, in MiB."""
    return shutil.disk_usage(folder).free / MIB


class DiskWatermark:
    """Whether ``folder``'s file system has at least ``watermark_mb`` MiB free (0 turns the check off)."""

    def __init__(self, folder: Path, watermark_mb: float) -> None:
        self.folder = Path(folder)
        self.watermark_mb = watermark_mb
        self._low = False
        self._lock = threading.Lock()

    def shortfall(self) -> str | None:
        """The reason new data cannot be taken in (free space below the watermark), or None."""
        if self.watermark_mb <= 0:
            return None
        free = free_mib(self.folder)
        low = free < self.watermark_mb
        with self._lock:
            changed, self._low = low != self._low, low
        if changed and low:
            log.error("free disk %.0f MiB in %s is below the watermark of %.0f MiB: refusing new instances "
                      "(0xA700) until space is freed", free, self.folder, self.watermark_mb)
        elif changed:
            log.warning("free disk %.0f MiB in %s is above the watermark again: accepting instances",
                        free, self.folder)
        return f"disk full: {free:.0f} MiB free, below the {self.watermark_mb:.0f} MiB watermark" if low else None
