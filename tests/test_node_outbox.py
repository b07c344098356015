"""Export: the outbox delivers to Orthanc, waits while a destination is down, routes veto results."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydicom import dcmread

from dermnode.node.audit import AuditStore
from dermnode.node.outbox import Dispatcher, Outbox, backoff_seconds
from node_support import make_study, node_settings, storescp_on
from peers import free_port, orthanc

pytestmark = pytest.mark.peers


def _results(folder: Path, count: int = 2) -> tuple[str, list]:
    """Stand-ins for result objects: the outbox sends any DICOM instance the same way."""
    study_uid, files = make_study(folder, count, prefix=f"RES{folder.name}")
    return study_uid, [dcmread(f) for f in files]


def _wait(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_seconds(n, 1.0, 10.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_results_reach_orthanc_once_per_key(tmp_path: Path) -> None:
    with orthanc(tmp_path / "orthanc") as pacs:
        settings = node_settings(tmp_path, destinations=[pacs.address])
        audit = AuditStore(settings.database_url)
        study_uid, datasets = _results(tmp_path / "res")
        outbox = Outbox(settings, audit)
        assert outbox.put(study_uid, datasets, "key-1") is True
        assert outbox.put(study_uid, datasets, "key-1") is False, "a second put with the same key is a no-op"
        assert len(audit.deliveries(study_uid)) == 2
        assert Dispatcher(settings, audit).run_once() == 2
        stored = {pacs.tag(iid, "0008,0018") for iid in pacs.get("/instances")}
        assert stored == {str(ds.SOPInstanceUID) for ds in datasets}
        assert {row["state"] for row in audit.deliveries(study_uid)} == {"sent"}
        assert len(audit.events(study_uid, kind="sent")) == 2
        assert Dispatcher(settings, audit).run_once() == 0, "sent objects are not sent again"


def test_destination_down_then_back(tmp_path: Path) -> None:
    port = free_port()
    settings = node_settings(tmp_path, destinations=[f"STORESCP@127.0.0.1:{port}"], retry_base_seconds=0.2)
    audit = AuditStore(settings.database_url)
    study_uid, datasets = _results(tmp_path / "res")
    Outbox(settings, audit).put(study_uid, datasets, "key-down")
    dispatcher = Dispatcher(settings, audit)
    assert dispatcher.run_once() == 0
    rows = audit.deliveries(study_uid)
    assert {row["state"] for row in rows} == {"pending"} and all(row["attempts"] == 1 for row in rows)
    assert "association" in rows[0]["last_error"]
    assert audit.events(study_uid, kind="failed")
    dispatcher.start()
    try:
        time.sleep(1.0)  # a few more failed tries, backing off
        with storescp_on(tmp_path / "received", port):
            assert _wait(lambda: {r["state"] for r in audit.deliveries(study_uid)} == {"sent"}, timeout=30)
    finally:
        dispatcher.stop()
    assert len(list((tmp_path / "received").glob("*"))) == 2
    assert max(row["attempts"] for row in audit.deliveries(study_uid)) >= 2


def test_veto_results_also_go_to_the_veto_destination(tmp_path: Path) -> None:
    with storescp_on(tmp_path / "main", free_port(), "MAIN") as main, storescp_on(tmp_path / "veto", free_port(), "VETO") as veto:
        settings = node_settings(tmp_path, destinations=[main], veto_destinations=[veto])
        audit = AuditStore(settings.database_url)
        benign_uid, benign = _results(tmp_path / "benign", 1)
        veto_uid, vetoed = _results(tmp_path / "vetoed", 1)
        outbox = Outbox(settings, audit)
        outbox.put(benign_uid, benign, "benign", veto=False)
        outbox.put(veto_uid, vetoed, "vetoed", veto=True)
        assert Dispatcher(settings, audit).run_once() == 3
        assert {r["destination"] for r in audit.deliveries(benign_uid)} == {settings.destinations[0]}
        assert {r["destination"] for r in audit.deliveries(veto_uid)} == {*settings.destinations, *settings.veto_destinations}
        assert len(list((tmp_path / "veto").glob("*"))) == 1
        assert len(list((tmp_path / "main").glob("*"))) == 2
