"""One odd instance never drops its study: each image is reported on its own, with the real spool,
encoders, outbox and audit store (the analysis is a double, see worker_support.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from dermnode.contract import AnalysisStatus
from dermnode.dicom_templates.results import TYPE2_CARRIED
from dermnode.dicom_templates.sr_reading import read_sr
from dermnode.node.audit import AuditStore
from dermnode.node.settings import load_settings
from dermnode.workers import tasks
from peers import assert_dciodvfy_clean
from worker_support import DarkAnalyzer, spool_study, truncate_pixels

KEY = "odd-study-key"
SEG, SR, KOS = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.88.59"
PATIENT_NAME = "Doe^Jane"


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    settings = load_settings(home=tmp_path / "home", broker_url="redis://unused")
    analyzer = DarkAnalyzer()
    monkeypatch.setattr(tasks, "_analyzer", analyzer)
    audit = AuditStore(settings.database_url)
    yield settings, analyzer, audit
    audit.close()


def _rows(audit: AuditStore) -> dict[str, dict]:
    return {row["sop_instance_uid"]: row for row in audit.analysed_rows()}


def _outbox(settings, study_uid: str) -> dict[str, object]:
    """The result objects in the outbox, by SOP Instance UID (each checked with dciodvfy)."""
    found = {}
    for path in (settings.outbox_dir / study_uid).glob("*.dcm"):
        assert_dciodvfy_clean(path)
        found[path.stem] = dcmread(path)
    return found


def without(*keywords: str):
    def edit(ds) -> None:
        for keyword in keywords:
            delattr(ds, keyword)
    return edit


def garbage_character_set(ds) -> None:
    ds.SpecificCharacterSet = "GARBAGE"
    ds.PatientName = PATIENT_NAME


def test_a_study_with_odd_instances_gets_every_result(node, tmp_path: Path) -> None:
    """No PatientID and an unknown character set are carried through (full results); undecodable
    pixel data gets a failed SR; each with its audit row."""
    settings, analyzer, audit = node
    study_uid = generate_uid()
    no_id, garbage, undecodable = spool_study(settings, tmp_path / "src", study_uid,
                                              [without("PatientID"), garbage_character_set, truncate_pixels])
    summary = tasks.process_study(settings, study_uid, KEY, audit=audit)
    assert (summary["images"], summary["failed"]) == (3, 1)

    rows = _rows(audit)
    objects = _outbox(settings, study_uid)
    for ds in (no_id, garbage):
        row = rows[str(ds.SOPInstanceUID)]
        assert row["status"] == "analysed" and row["seg_sop_uid"] and row["sr_sop_uid"] and row["kos_sop_uid"]
        assert {objects[row[f"{kind}_sop_uid"]].SOPClassUID for kind in ("seg", "sr", "kos")} == {SEG, SR, KOS}
    assert objects[rows[str(no_id.SOPInstanceUID)]["sr_sop_uid"]].PatientID == ""
    sr = objects[rows[str(garbage.SOPInstanceUID)]["sr_sop_uid"]]
    assert sr.SpecificCharacterSet == "ISO_IR 192" and str(sr.PatientName) == PATIENT_NAME

    bad = rows[str(undecodable.SOPInstanceUID)]
    assert bad["status"] == "failed" and "could not be decoded" in bad["failure_reason"]
    assert bad["seg_sop_uid"] is None and bad["kos_sop_uid"] is None
    (finding,) = read_sr(settings.outbox_dir / study_uid / f"{bad['sr_sop_uid']}.dcm")
    assert finding.analysis.status is AnalysisStatus.FAILED
    assert len(objects) == 7  # two images x SEG, SR, KOS + the failed SR
    assert len(audit.events(study_uid, kind="analysed")) == 3


def test_every_missing_type2_patient_and_study_attribute_is_carried_through(node, tmp_path: Path) -> None:
    settings, analyzer, audit = node
    study_uid = generate_uid()
    (ds,) = spool_study(settings, tmp_path / "src", study_uid, [without(*TYPE2_CARRIED)])
    tasks.process_study(settings, study_uid, KEY, audit=audit)
    objects = _outbox(settings, study_uid)
    assert len(objects) == 3
    for result in objects.values():
        assert all(result.get(keyword) == "" for keyword in TYPE2_CARRIED)


def test_images_without_their_uids_or_unreadable_get_an_audit_row(node, tmp_path: Path) -> None:
    """No result object can reference an image without a Series Instance UID, nor a file that is
    not DICOM: they get a failed audit row; the good image gets its results."""
    settings, analyzer, audit = node
    study_uid = generate_uid()
    good, no_series = spool_study(settings, tmp_path / "src", study_uid, [None, without("SeriesInstanceUID")])
    unreadable_uid = generate_uid()
    (settings.spool_dir / study_uid / f"{unreadable_uid}.dcm").write_bytes(b"not DICOM at all" * 20)

    summary = tasks.process_study(settings, study_uid, KEY, audit=audit)
    assert (summary["images"], summary["failed"]) == (3, 2)
    rows = _rows(audit)
    assert rows[str(good.SOPInstanceUID)]["status"] == "analysed"
    assert "SeriesInstanceUID" in rows[str(no_series.SOPInstanceUID)]["failure_reason"]
    assert "not readable DICOM" in rows[unreadable_uid]["failure_reason"]
    for uid in (str(no_series.SOPInstanceUID), unreadable_uid):
        assert {rows[uid][f"{kind}_sop_uid"] for kind in ("seg", "sr", "kos")} == {None}
    assert len(_outbox(settings, study_uid)) == 3
    assert analyzer.analysed == [str(good.SOPInstanceUID)]


class PickyAnalyzer(DarkAnalyzer):
    """Raises, naming the patient, whenever a given image is in the batch."""

    def __init__(self, bad_uid: str) -> None:
        super().__init__()
        self.bad_uid = bad_uid

    def analyze(self, images):
        for image in images:
            if str(image.dataset.SOPInstanceUID) == self.bad_uid:
                raise ValueError(f"cannot analyse the image of {image.dataset.PatientName} ({image.dataset.PatientID})")
        return super().analyze(images)


def test_an_analysis_error_fails_one_image_without_patient_data(node, tmp_path, monkeypatch, caplog) -> None:
    settings, _, audit = node
    study_uid = generate_uid()

    def named(ds) -> None:
        ds.PatientName = PATIENT_NAME

    good, bad = spool_study(settings, tmp_path / "src", study_uid, [named, named])
    monkeypatch.setattr(tasks, "_analyzer", PickyAnalyzer(str(bad.SOPInstanceUID)))
    with caplog.at_level(logging.DEBUG):
        tasks.process_study(settings, study_uid, KEY, audit=audit)

    rows = _rows(audit)
    assert rows[str(good.SOPInstanceUID)]["status"] == "analysed"
    failed = rows[str(bad.SOPInstanceUID)]
    assert failed["status"] == "failed" and failed["sr_sop_uid"]
    assert "cannot analyse the image of <PatientName>" in failed["failure_reason"]
    for text in (failed["failure_reason"], caplog.text, str(audit.events(study_uid))):
        assert PATIENT_NAME not in text and str(bad.PatientID) not in text
    assert str(bad.SOPInstanceUID) in caplog.text
