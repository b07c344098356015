"""A stateless worker: its own empty home, no database; instances and results go over HTTP.

The node side is the real intake (spool, encoders, outbox, audit) behind the real worker
endpoints served by uvicorn; the worker is the real task code with an HttpLink. The analysis
stage is a small double (test_workers_task.py says why).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from pydicom.uid import generate_uid

from dermnode.contract import AnalysisStatus, LesionAnalysis, ModelIdentity, analysis_from_wire, analysis_to_wire
from dermnode.local_processes import free_port
from dermnode.node.audit import AuditStore
from dermnode.node.intake import ResultIntake
from dermnode.node.settings import Settings, load_settings
from dermnode.web.worker_api import worker_router
from dermnode.workers import tasks
from dermnode.workers.link import HttpLink, NodeUnreachable
from worker_support import DarkAnalyzer, spool_study, truncate_pixels

TOKEN = "worker-token-for-tests"
KEY = "stateless-key-1"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Settings, AuditStore, str]]:
    """The node's intake behind the worker endpoints on a loopback port: (settings, audit, URL)."""
    settings = load_settings(home=tmp_path / "node", worker_token=TOKEN)
    audit = AuditStore(settings.database_url)
    app = FastAPI()
    app.include_router(worker_router(ResultIntake(settings, audit), settings.worker_token))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start within 20 s"
    yield settings, audit, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    audit.close()


def worker_settings(tmp_path: Path, url: str, token: str = TOKEN) -> Settings:
    return load_settings(home=tmp_path / "worker", node_url=url, worker_token=token, broker_url="redis://unused")


def test_a_worker_with_no_home_and_no_database_delivers_every_result(node, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    settings, audit, url = node
    study_uid = generate_uid()
    instances = spool_study(settings, tmp_path / "images", study_uid, [None, truncate_pixels, None])
    analyzer = DarkAnalyzer()
    monkeypatch.setattr(tasks, "_analyzer", analyzer)

    summary = tasks.process_study(worker_settings(tmp_path, url), study_uid, KEY)

    assert (summary["images"], summary["failed"], summary["vetoed"]) == (3, 1, 2)
    rows = {row["sop_instance_uid"]: row for row in audit.analysed_rows()}
    assert set(rows) == {str(ds.SOPInstanceUID) for ds in instances}
    bad = rows[str(instances[1].SOPInstanceUID)]
    assert bad["status"] == "failed" and "could not be decoded" in bad["failure_reason"] and bad["sr_sop_uid"]
    good = rows[str(instances[0].SOPInstanceUID)]
    assert good["status"] == "analysed" and good["seg_sop_uid"] and good["kos_sop_uid"]
    outbox = sorted((settings.outbox_dir / study_uid).glob("*.dcm"))
    assert len(outbox) == 2 * 3 + 1  # SEG + SR + KOS per analysed image, a failed SR for the other
    assert audit.key_state(f"analysis:{KEY}") == "done"
    worker_home = tmp_path / "worker"
    assert not worker_home.exists() or not any(worker_home.rglob("*")), "the worker wrote to its home"

    # the same task again (a redelivery): nothing analysed, nothing stored twice
    assert tasks.process_study(worker_settings(tmp_path, url), study_uid, KEY)["skipped"]
    assert analyzer.calls == 1 and len(audit.analysed_rows()) == 3


def test_a_late_instance_is_analysed_alone_through_the_node(node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, audit, url = node
    study_uid = generate_uid()
    spool_study(settings, tmp_path / "images", study_uid, [None])
    analyzer = DarkAnalyzer()
    monkeypatch.setattr(tasks, "_analyzer", analyzer)
    tasks.process_study(worker_settings(tmp_path, url), study_uid, KEY)
    late = spool_study(settings, tmp_path / "images", study_uid, [None], first_seed=5)
    summary = tasks.process_study(worker_settings(tmp_path, url), study_uid, KEY + "-late")
    assert (summary["images"], summary["earlier"]) == (1, 1)
    assert analyzer.analysed[-1] == str(late[0].SOPInstanceUID) and len(analyzer.analysed) == 2


def test_a_repeated_analysis_is_stored_once_and_answers_the_first_uids(node, tmp_path: Path) -> None:
    settings, audit, url = node
    study_uid = generate_uid()
    ds = spool_study(settings, tmp_path / "images", study_uid, [None])[0]
    analysis = DarkAnalyzer().analyze([type("Image", (), {"dataset": ds, "rgb": ds.pixel_array})()])[0]
    link = HttpLink(url, TOKEN)
    first = link.accept(study_uid, str(ds.SOPInstanceUID), KEY, analysis)
    second = link.accept(study_uid, str(ds.SOPInstanceUID), KEY + "-again", analysis)
    link.close()
    assert first["result_uids"] and first == second
    assert len(list((settings.outbox_dir / study_uid).glob("*.dcm"))) == 3
    assert len(audit.events(study_uid, kind="analysed")) == 1


def test_the_node_decides_the_veto_at_its_own_threshold(node, tmp_path: Path) -> None:
    settings, audit, url = node
    study_uid = generate_uid()
    ds = spool_study(settings, tmp_path / "images", study_uid, [None])[0]
    analysis = DarkAnalyzer().analyze([type("Image", (), {"dataset": ds, "rgb": ds.pixel_array})()])[0]
    analysis.veto_threshold = 0.9  # a worker configured otherwise: P(malignant) 0.5 would not be a veto there
    answer = HttpLink(url, TOKEN).accept(study_uid, str(ds.SOPInstanceUID), KEY, analysis)
    assert answer["result_uids"].get("kos_sop_uid")  # the node's threshold (0.3) fired the veto
    assert audit.analysed_rows()[0]["veto_threshold"] == settings.veto_threshold


def test_the_endpoints_refuse_a_wrong_token_and_a_dead_node_is_a_transient_error(node, tmp_path: Path) -> None:
    settings, audit, url = node
    study_uid = generate_uid()
    spool_study(settings, tmp_path / "images", study_uid, [None])
    with pytest.raises(RuntimeError, match="401"):
        HttpLink(url, "not-the-token").pending(study_uid, KEY)
    dead = HttpLink(f"http://127.0.0.1:{free_port()}", TOKEN, timeout=2)
    with pytest.raises(NodeUnreachable) as caught:
        dead.pending(study_uid, KEY)
    assert isinstance(caught.value, tasks.TRANSIENT_ERRORS)
    with pytest.raises(FileNotFoundError):
        HttpLink(url, TOKEN).pending(generate_uid(), KEY)  # not spooled (yet): retried as well


def test_the_wire_format_keeps_every_field_and_the_mask() -> None:
    mask = np.random.default_rng(0).random((37, 53)) > 0.5  # not a multiple of 8
    analysis = LesionAnalysis(AnalysisStatus.ANALYSED, veto_threshold=0.25, mask=mask, segmentation_confidence=0.9,
                              probabilities={"NV": 0.7, "MEL": 0.3}, bcc_probability=0.2, radiomics={"f": 1.5},
                              pixel_spacing_mm=(0.05, 0.06), models=(ModelIdentity("m", "1", "a" * 64),),
                              seconds={"segmentation": 0.1})
    back = analysis_from_wire(analysis_to_wire(analysis))
    assert np.array_equal(back.mask, mask)
    assert (back.status, back.veto_threshold, back.probabilities, back.models, back.pixel_spacing_mm) == (
        analysis.status, 0.25, analysis.probabilities, analysis.models, (0.05, 0.06))
    with pytest.raises(ValueError, match="wire format"):
        analysis_from_wire({"status": "analysed", "veto_threshold": 0.3, "mask": {"shape": [10, 10], "bits": "AA=="}})
