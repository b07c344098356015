"""Retention: exported studies' spool, outbox and result files pruned after retention_days, never what is owed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest
from pydicom import dcmread
from sqlalchemy import insert, update

from dermnode.node.audit import AuditStore
from dermnode.node.outbox import Outbox
from dermnode.node.retention import prunable_studies
from dermnode.node.schema import deliveries, events
from dermnode.node.studies import destination_states
from node_support import RecordingEnqueue, make_study, node_settings, running_node, storescp_on, storescu
from peers import free_port
from pg_support import postgres_schema_url, postgres_server  # noqa: F401 - the fixture
from test_node_audit import _analysis

LONG_AGO = datetime.now(timezone.utc) - timedelta(days=40)


def _wait(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not condition():
        time.sleep(0.2)
    return condition()


def _backdate(audit: AuditStore, study_uid: str) -> None:
    """Pretend the study arrived and was delivered 40 days ago."""
    audit.execute(update(deliveries).where(deliveries.c.study_uid == study_uid, deliveries.c.state == "sent")
                  .values(sent_at=LONG_AGO))
    audit.execute(update(events).where(events.c.study_uid == study_uid).values(at=LONG_AGO))


def _analysed_and_put(audit: AuditStore, outbox: Outbox, tmp: Path, study_uid: str, files: list[Path], veto: bool) -> None:
    """Record an analysis per received image and put stand-in result objects in the outbox."""
    for path in files:
        ds = dcmread(path)
        header = {"study_uid": study_uid, "sop_instance_uid": str(ds.SOPInstanceUID)}
        audit.record_analysis(header, _analysis(veto), {"sr": f"{ds.SOPInstanceUID}.9"}, idempotency_key=f"k-{path.stem}")
    _, results = make_study(tmp / f"results-{files[0].stem}", 1, prefix=f"RES{files[0].stem}")  # UIDs follow the name
    result = dcmread(results[0])
    result.StudyInstanceUID = study_uid
    assert outbox.put(study_uid, [result], f"put-{study_uid}", veto=veto)


def _dermnode(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERMNODE_")}
    env.update(DERMNODE_HOME=str(home), DERMNODE_RETENTION_DAYS="30")
    return subprocess.run([sys.executable, "-m", "dermnode.cli", "prune", *args], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.peers
def test_only_studies_every_destination_has_are_pruned(tmp_path: Path) -> None:
    with storescp_on(tmp_path / "pacs", free_port(), "PACS") as pacs:
        veto_down = f"VETO@127.0.0.1:{free_port()}"  # nobody listens: the veto destination is down
        settings = node_settings(tmp_path, destinations=[pacs], veto_destinations=[veto_down], retention_days=30)
        with running_node(settings, RecordingEnqueue()) as node:
            outbox = Outbox(settings, node.audit)
            studies = {}
            for name, veto in (("old", False), ("owed", True), ("recent", False)):
                study_uid, files = make_study(tmp_path / name, 2, prefix=name.upper())
                assert storescu(settings, files).returncode == 0
                _analysed_and_put(node.audit, outbox, tmp_path, study_uid, files, veto)
                studies[name] = (study_uid, files)
            old, owed, recent = (studies[name][0] for name in ("old", "owed", "recent"))
            assert _wait(lambda: destination_states(node.audit, old)[old] == {pacs: "sent"})
            assert _wait(lambda: destination_states(node.audit, owed)[owed] == {pacs: "sent", veto_down: "retrying"})
            _backdate(node.audit, old)
            _backdate(node.audit, owed)

            # the command line, while serve runs: a dry run lists and touches nothing
            dry = _dermnode(settings.home, "--dry-run")
            assert dry.returncode == 0, dry.stderr
            assert f"would prune study {old}" in dry.stdout and owed not in dry.stdout and recent not in dry.stdout
            assert (settings.spool_dir / old).is_dir() and not node.audit.events(old, kind="pruned")

            report = node.pruner.run_once()
            assert report.studies == [old] and report.files == 3  # two received instances, one result object
            assert not (settings.spool_dir / old).exists() and not (settings.outbox_dir / old).exists()
            for kept in (owed, recent):
                assert len(list((settings.spool_dir / kept).glob("*.dcm"))) == 2
                assert len(list((settings.outbox_dir / kept).glob("*.dcm"))) == 1
            (pruned,) = node.audit.events(old, kind="pruned")
            assert pruned["details"]["files"] == 3 and pruned["details"]["folders"] == [f"spool/{old}", f"outbox/{old}"]
            assert node.pruner.run_once().studies == [], "a pruned study is not pruned again"

            # the same instances sent again are stored again (the SCP's duplicate index forgot them)
            assert storescu(settings, studies["old"][1]).returncode == 0
            assert len(node.spool.study_files(old)) == 2
            assert len(node.audit.events(old, kind="received")) == 4 and not node.audit.events(old, kind="duplicate")

    again = _dermnode(settings.home)
    assert again.returncode == 0 and "0 studies" in again.stdout, again.stdout + again.stderr


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditStore]:
    urls = ([f"sqlite:///{tmp_path / 'audit.db'}"] if request.param == "sqlite"
            else postgres_schema_url(request.getfixturevalue("postgres_server")))
    for url in urls:
        audit = AuditStore(url)
        yield audit
        audit.close()


def test_prunable_studies_rules(store: AuditStore) -> None:
    now = datetime.now(timezone.utc)
    cutoff = now - timedelta(days=30)

    def study(uid: str, states: list[str], sent_days_ago: float, received_days_ago: float,
              pruned_days_ago: float | None = None) -> None:
        store.record("received", uid, f"{uid}.1")
        store.execute(update(events).where(events.c.study_uid == uid)
                      .values(at=now - timedelta(days=received_days_ago)))
        store.execute(insert(deliveries), [
            {"study_uid": uid, "sop_instance_uid": f"{uid}.{i}", "sop_class_uid": "1.2", "path": "/x",
             "destination": f"D{i}@h:1", "state": state, "attempts": 1, "next_try_at": 0.0,
             "sent_at": now - timedelta(days=sent_days_ago) if state == "sent" else None}
            for i, state in enumerate(states, start=2)])
        if pruned_days_ago is not None:
            store.record("pruned", uid, files=1)
            store.execute(update(events).where(events.c.study_uid == uid, events.c.kind == "pruned")
                          .values(at=now - timedelta(days=pruned_days_ago)))

    study("1.1", ["sent", "sent"], 40, 41)               # prunable
    study("1.2", ["sent", "pending"], 40, 41)            # owed to one destination
    study("1.3", ["sent", "failed"], 40, 41)             # given up: still owed
    study("1.4", ["sent"], 10, 41)                       # delivered recently
    study("1.5", ["sent"], 40, 5)                        # a late instance arrived recently
    study("1.6", ["sent"], 40, 41, pruned_days_ago=35)   # already pruned after its last delivery
    study("1.7", ["sent"], 40, 41, pruned_days_ago=60)   # pruned, then a late instance was delivered
    assert sorted(prunable_studies(store, cutoff, limit=10)) == ["1.1", "1.7"]
    assert len(prunable_studies(store, cutoff, limit=1)) == 1
