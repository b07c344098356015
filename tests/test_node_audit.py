"""The audit store (SQLite, and a private PostgreSQL started for the run), the idempotency keys and the audit commands."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from sqlalchemy import insert
from typer.testing import CliRunner

from dermnode.cli import app
from dermnode.contract import AnalysisStatus, LesionAnalysis, ModelIdentity
from dermnode.node.audit import FIXED_COLUMNS, AuditStore
from dermnode.node.schema import deliveries
from pg_support import postgres_schema_url, postgres_server  # noqa: F401 - the fixture


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditStore]:
    if request.param == "sqlite":
        store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
        yield store
        store.close()
        return
    for url in postgres_schema_url(request.getfixturevalue("postgres_server")):
        store = AuditStore(url)
        yield store
        store.close()


def _analysis(veto: bool) -> LesionAnalysis:
    probabilities = {"NV": 0.5, "MEL": 0.3, "BCC": 0.05, "BKL": 0.05, "AK": 0.02, "SCC": 0.02, "DF": 0.03, "VASC": 0.03}
    if not veto:
        probabilities.update(NV=0.8, MEL=0.0)
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:5, 2:6] = True
    return LesionAnalysis(
        status=AnalysisStatus.ANALYSED, mask=mask, segmentation_confidence=0.9, probabilities=probabilities,
        bcc_probability=0.7, pixel_spacing_mm=(0.1, 0.1),
        models=(ModelIdentity("segmentation", "1.0", "a" * 64), ModelIdentity("classifier", "2.0", "b" * 64)),
        seconds={"segmentation": 0.5, "classifier": 0.25},
    )


def _fill(store: AuditStore) -> None:
    store.record("received", "1.2.3", "1.2.3.1", calling_ae="PACS")
    store.record("received", "1.2.3", "1.2.3.2", calling_ae="PACS")
    store.record("queued", "1.2.3", idempotency_key="k", task_id="t1")
    header = {"study_uid": "1.2.3", "series_uid": "1.2.3.9", "sop_instance_uid": "1.2.3.1", "accession_number": "A1",
              "patient_id": "P1", "age": 55.0, "sex": "female", "anatomic_site": "anterior torso"}
    store.record_analysis(header, _analysis(veto=True), {"seg_sop_uid": "9.1", "sr_sop_uid": "9.2", "kos_sop_uid": "9.3"},
                          idempotency_key="k")
    header2 = dict(header, sop_instance_uid="1.2.3.2")
    store.record_analysis(header2, _analysis(veto=False), {"seg": "9.4", "sr": "9.5", "kos": None}, idempotency_key="k")
    rows = [{"study_uid": "1.2.3", "sop_instance_uid": uid, "sop_class_uid": "1.2", "path": "/x", "destination": dest,
             "state": "sent", "attempts": 1, "next_try_at": 0.0} for uid in ("9.1", "9.2", "9.3") for dest in ("PACS@h:1",)]
    rows.append({**rows[0], "sop_instance_uid": "9.4"})
    store.execute(insert(deliveries), rows)


def test_events_studies_and_cohort_rows(store: AuditStore) -> None:
    _fill(store)
    assert [e["kind"] for e in store.events("1.2.3")] == ["received", "received", "queued", "analysed", "analysed"]
    analysed = store.events("1.2.3", kind="analysed")[0]["details"]
    assert analysed["models"][0] == {"name": "segmentation", "version": "1.0", "sha256": "a" * 64}
    assert analysed["veto"] is True and analysed["bcc_sk_call"] == "BCC" and analysed["seconds"]["classifier"] == 0.25
    [study] = store.studies()
    assert (study["received"], study["analysed"], study["veto"]) == (2, 2, True)
    assert study["models"] == "classifier 2.0, segmentation 1.0"
    rows = store.analysed_rows()
    assert len(rows) == 2
    first, second = rows
    assert set(FIXED_COLUMNS) <= set(first)
    assert first["calling_ae"] == "PACS" and first["received_at"]
    assert first["p_MEL"] == pytest.approx(0.3) and first["malignancy_probability"] == pytest.approx(0.39)
    assert first["veto"] is True and second["veto"] is False
    assert first["lesion_area"] == pytest.approx(12 * 0.01) and first["lesion_area_unit"] == "mm2"
    assert first["model_classifier_version"] == "2.0" and first["model_segmentation_sha256"] == "a" * 64
    assert first["seconds_segmentation"] == 0.5
    assert first["kos_sop_uid"] == "9.3" and second["kos_sop_uid"] is None
    assert first["sent_to"] == "PACS@h:1", "all three objects acknowledged"
    assert second["sent_to"] == "", "the SR of the second image was not acknowledged"
    assert first["age"] == 55.0 and first["sex"] == "female"


def test_one_analysed_row_per_image(store: AuditStore) -> None:
    header = {"study_uid": "1.2.3", "sop_instance_uid": "1.2.3.1"}
    assert store.record_analysis(header, _analysis(veto=False), {}, idempotency_key="k1") is True
    assert store.record_analysis(header, _analysis(veto=True), {}, idempotency_key="k1") is False, "redelivered"
    assert store.record_analysis(header, _analysis(veto=True), {}, idempotency_key="k2") is False, "a later key"
    assert [row["veto"] for row in store.analysed_rows()] == [False]
    assert len(store.events("1.2.3", kind="analysed")) == 1
    assert store.analysed_images("1.2.3") == {"1.2.3.1"} and store.analysed_images("9.9") == set()


def test_idempotency_keys(store: AuditStore) -> None:
    assert store.claim_key("enqueue:k1", "1.2") is True
    assert store.claim_key("enqueue:k1", "1.2") is True, "a claim that never finished may be retried"
    store.mark_key("enqueue:k1", "queued", "task-1")
    assert store.claim_key("enqueue:k1", "1.2") is False
    assert store.key_state("enqueue:k1") == "queued" and store.key_state("enqueue:other") is None


def test_audit_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DERMNODE_HOME", str(tmp_path))
    monkeypatch.delenv("DERMNODE_DATABASE_URL", raising=False)
    monkeypatch.delenv("DERMNODE_CONFIG", raising=False)
    store = AuditStore(f"sqlite:///{tmp_path / 'dermnode.db'}")
    _fill(store)
    runner = CliRunner()
    listing = runner.invoke(app, ["audit", "list"])
    assert listing.exit_code == 0 and "1.2.3" in listing.output and "classifier 2.0" in listing.output
    shown = runner.invoke(app, ["audit", "show", "1.2.3"])
    assert shown.exit_code == 0 and "queued" in shown.output and "PACS@h:1: sent" in shown.output
    assert runner.invoke(app, ["audit", "show", "9.9.9"]).exit_code == 1
    out = tmp_path / "cohort.csv"
    exported = runner.invoke(app, ["audit", "export", "--csv", str(out)])
    assert exported.exit_code == 0, exported.output
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and rows[0]["veto"] == "True" and rows[0]["model_segmentation_version"] == "1.0"
    assert list(rows[0])[: len(FIXED_COLUMNS)] == list(FIXED_COLUMNS)
