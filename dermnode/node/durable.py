"""Durable file writes: temporary file in the same folder, write, fsync, rename, fsync the folder.

A reader never sees a half-written file under the final name: either the rename happened (and the
content is on disk) or only a ``.tmp`` file exists, which ``remove_temporaries`` clears on start.
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path

TMP_SUFFIX = ".tmp"
_rename_lock = threading.Lock()


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(directory: Path) -> None:
    """Create a folder (and parents) and make its entry durable in the parent."""
    if directory.is_dir():
        return
    directory.mkdir(parents=True, exist_ok=True)
    fsync_dir(directory.parent)


def write_durably(path: Path, data: bytes, *, replace: bool = True) -> bool:
    """Write ``data`` to ``path`` so that it survives a crash once this returns.

    With ``replace=False`` an existing file is kept (the first writer wins) and False is returned.
    Raises OSError when the data cannot be stored; no partial file is left under ``path``.
    """
    ensure_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fdatasync(handle.fileno())  # the data and the size: what a reader needs
        with _rename_lock:
            if not replace and path.exists():
                tmp.unlink()
                return False
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return True


def remove_temporaries(root: Path) -> int:
    """Delete ``*.tmp`` files left by a crash in the middle of a write; returns how many."""
    count = 0
    for tmp in root.rglob(f"*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
        count += 1
    return count
