"""The spool: durable files, duplicates kept once, leftovers of a crash mid-write removed on start."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from dermnode.dicom_templates.uids import InvalidUID
from dermnode.node.spool import Spool
from node_support import make_dataset


def test_store_duplicate_and_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    ds = make_dataset(tmp_path / "src", "a", study_uid="1.2.3")
    path = spool.store(ds)
    assert path == tmp_path / "spool" / "1.2.3" / f"{ds.SOPInstanceUID}.dcm"
    assert dcmread(path).SOPInstanceUID == ds.SOPInstanceUID
    assert spool.contains(ds.SOPInstanceUID)
    first = path.read_bytes()
    ds.PatientID = "CHANGED"
    again, is_new = spool.store_encoded("1.2.3", ds.SOPInstanceUID, b"other content")
    assert again == path and is_new is False and path.read_bytes() == first, "the first copy wins"

    # a crash in the middle of a write leaves only a temporary file, removed when the spool opens
    leftover = path.parent / f".{ds.SOPInstanceUID}.dcm.1234abcd.tmp"
    leftover.write_bytes(first[:100])
    reopened = Spool(tmp_path / "spool")
    assert not leftover.exists()
    assert reopened.contains(ds.SOPInstanceUID) and reopened.studies() == ["1.2.3"]
    assert reopened.study_files("1.2.3") == [path]


def test_unsafe_uids_are_refused(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    for study_uid in ("../etc", "1.2/3", "", "1." * 40):
        with pytest.raises(InvalidUID):
            spool.store_encoded(study_uid, "1.2.3", b"x")
    assert list((tmp_path / "spool").iterdir()) == []
