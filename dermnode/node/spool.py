"""The spool: received instances on disk, one folder per study, one file per SOP instance.

Layout: ``<root>/<StudyInstanceUID>/<SOPInstanceUID>.dcm``. Every file is written durably
(see durable.py) before the SCP answers success, so a study survives a crash of the node.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

from pydicom import Dataset, dcmwrite

from dermnode.dicom_templates.uids import check_uid
from dermnode.node.durable import ensure_dir, remove_temporaries, write_durably

SUFFIX = ".dcm"


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        ensure_dir(self.root)
        remove_temporaries(self.root)
        self._lock = threading.Lock()
        self._index: dict[str, Path] = {path.stem: path for path in self.root.glob(f"*/*{SUFFIX}")}

    def path_for(self, study_uid: str, sop_uid: str) -> Path:
        return self.root / check_uid(study_uid, "Study Instance UID") / f"{check_uid(sop_uid, 'SOP Instance UID')}{SUFFIX}"

    def contains(self, sop_uid: str) -> bool:
        with self._lock:
            return sop_uid in self._index

    def store(self, ds: Dataset) -> Path:
        """Write a dataset (with its file_meta) durably; returns its path. Raises on failure.

        An instance that is already spooled is kept as it is (the first copy wins).
        """
        buffer = io.BytesIO()
        dcmwrite(buffer, ds, enforce_file_format=True)
        path, _ = self.store_encoded(ds.StudyInstanceUID, ds.SOPInstanceUID, buffer.getvalue())
        return path

    def store_encoded(self, study_uid: str, sop_uid: str, data: bytes) -> tuple[Path, bool]:
        """Write an encoded DICOM file durably; returns (path, True if new, False if a duplicate)."""
        path = self.path_for(study_uid, sop_uid)
        if self.contains(sop_uid):
            return self._index[sop_uid], False
        is_new = write_durably(path, data, replace=False)
        with self._lock:
            self._index.setdefault(sop_uid, path)
        return path, is_new

    def study_files(self, study_uid: str) -> list[Path]:
        """The spooled files of a study, sorted by name (empty if there are none)."""
        folder = self.root / check_uid(study_uid, "Study Instance UID")
        return sorted(folder.glob(f"*{SUFFIX}"))

    def forget(self, study_uid: str) -> None:
        """Drop a study's instances from the duplicate index (before retention.py removes its folder):
        an instance sent again afterwards is stored again."""
        with self._lock:
            for path in self.study_files(study_uid):
                if self._index.get(path.stem) == path:
                    del self._index[path.stem]

    def studies(self) -> list[str]:
        """Study Instance UIDs with at least one spooled file."""
        return sorted(folder.name for folder in self.root.iterdir() if folder.is_dir() and any(folder.glob(f"*{SUFFIX}")))
