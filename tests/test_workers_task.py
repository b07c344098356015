"""The per-study task with the real spool, encoders, outbox and audit store.

The analysis stage is a small double (this test is about what the task does around it: decoding
failures, one result set per key, audit rows that name what went out); the real models run in
test_workers_analyze.py and the end-to-end test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.encaps import encapsulate, generate_frames

from dermnode.contract import AnalysisStatus, PatientMetadata
from dermnode.dicom_templates.sr_reading import read_sr
from dermnode.node.audit import AuditStore
from dermnode.node.settings import load_settings
from dermnode.node.spool import Spool
from dermnode.workers import tasks
from dermnode.workers.demo import synthetic_images
from peers import assert_dciodvfy_clean
from worker_support import DarkAnalyzer

KEY = "study-key-1"


@pytest.fixture
def study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings, a spooled study of two images (the second with truncated JPEG data), the analyzer."""
    from dermnode.dicom_templates.image_conversion import dicomize_image
    from pydicom.uid import generate_uid

    settings = load_settings(home=tmp_path / "home", broker_url="redis://unused")
    spool = Spool(settings.spool_dir)
    study_uid = generate_uid()
    for i, image in enumerate(synthetic_images(tmp_path / "images", 2)):
        ds = dicomize_image(image, f"TASK{i}", PatientMetadata(40.0, "male", "head/neck"))
        ds.StudyInstanceUID = study_uid
        if i == 1:
            frame = next(generate_frames(ds.PixelData, number_of_frames=1))
            ds.PixelData = encapsulate([frame[: len(frame) // 3]])
        spool.store(ds)
    analyzer = DarkAnalyzer()
    monkeypatch.setattr(tasks, "_analyzer", analyzer)
    audit = AuditStore(settings.database_url)
    yield settings, study_uid, analyzer, audit
    audit.close()


def test_study_results_go_to_the_outbox_and_the_audit(study) -> None:
    settings, study_uid, analyzer, audit = study
    summary = tasks.process_study(settings, study_uid, KEY, audit=audit)
    assert summary["images"] == 2 and summary["failed"] == 1 and summary["vetoed"] == 1

    rows = sorted(audit.analysed_rows(), key=lambda row: row["status"])
    assert [row["status"] for row in rows] == ["analysed", "failed"]
    good, bad = rows
    assert "could not be decoded" in bad["failure_reason"]
    assert bad["seg_sop_uid"] is None and bad["kos_sop_uid"] is None and bad["sr_sop_uid"]
    assert good["veto"] is True and good["seg_sop_uid"] and good["kos_sop_uid"]
    assert good["age"] == 40.0 and good["sex"] == "male"

    written = {path.stem: path for path in (settings.outbox_dir / study_uid).glob("*.dcm")}
    named = {row[f"{kind}_sop_uid"] for row in rows for kind in ("seg", "sr", "kos")} - {None}
    assert set(written) == named and len(written) == 4  # SEG, SR, KOS + the failed image's SR
    for path in written.values():
        assert_dciodvfy_clean(path)
    (finding,) = read_sr(written[bad["sr_sop_uid"]])  # the SR says, in coded form, that it failed and why
    assert finding.analysis.status is AnalysisStatus.FAILED and "could not be decoded" in finding.analysis.failure_reason


def test_a_study_already_analysed_is_skipped(study) -> None:
    settings, study_uid, analyzer, audit = study
    tasks.process_study(settings, study_uid, KEY, audit=audit)
    assert tasks.process_study(settings, study_uid, KEY, audit=audit) == {"study_uid": study_uid, "skipped": True}
    assert analyzer.calls == 1
    assert len(audit.analysed_rows()) == 2


def test_a_rerun_after_a_crash_past_the_outbox_records_what_went_out(study, monkeypatch) -> None:
    """The worker died after the outbox stored the first image's results but before its audit row:
    the redelivered task stores nothing new for that image, its row names the objects the first run
    stored, and the second image gets its results once."""
    settings, study_uid, analyzer, audit = study
    original = AuditStore.record_analysis

    def crash(*args, **kwargs):
        raise SystemExit("worker killed")

    monkeypatch.setattr(AuditStore, "record_analysis", crash)
    with pytest.raises(SystemExit):
        tasks.process_study(settings, study_uid, KEY, audit=audit)
    first = {path.stem for path in (settings.outbox_dir / study_uid).glob("*.dcm")}
    assert first and audit.analysed_rows() == []
    monkeypatch.setattr(AuditStore, "record_analysis", original)

    tasks.process_study(settings, study_uid, KEY, audit=audit)
    assert analyzer.calls == 2
    written = {path.stem for path in (settings.outbox_dir / study_uid).glob("*.dcm")}
    rows = audit.analysed_rows()
    assert len(rows) == 2
    assert {row[f"{kind}_sop_uid"] for row in rows for kind in ("seg", "sr", "kos")} - {None} == written
    assert first < written and len(written) == 4  # SEG, SR, KOS of the first image, the failed SR of the second
    outbox_events = audit.events(study_uid, kind="outbox")
    assert sorted(event["details"]["idempotency_key"] for event in outbox_events) == sorted(
        f"image:{row['sop_instance_uid']}" for row in rows)
