"""Study assembly: quiet period, idempotency key, retries when the broker is down, recovery."""

from __future__ import annotations

import time
from pathlib import Path

from pydicom import dcmread

from dermnode.node.assemble import StudyAssembler, idempotency_key
from dermnode.node.audit import AuditStore
from dermnode.node.spool import Spool
from node_support import RecordingEnqueue, make_dataset, make_study


def _setup(tmp_path: Path, count: int = 2, enqueue=None, quiet: float = 0.3):
    spool = Spool(tmp_path / "spool")
    audit = AuditStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    study_uid, files = make_study(tmp_path / "in", count)
    for path in files:
        spool.store(dcmread(path))
    enqueue = enqueue or RecordingEnqueue()
    return spool, audit, study_uid, StudyAssembler(spool, audit, enqueue, quiet, retry_seconds=0.2), enqueue


def _wait(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_key_depends_on_content_not_order() -> None:
    assert idempotency_key("1.2", ["1.2.3", "1.2.4"]) == idempotency_key("1.2", ["1.2.4", "1.2.3"])
    assert idempotency_key("1.2", ["1.2.3"]) != idempotency_key("1.2", ["1.2.3", "1.2.4"])


def test_quiet_period_then_once_per_content(tmp_path: Path) -> None:
    spool, audit, study_uid, assembler, enqueue = _setup(tmp_path, quiet=0.4)
    assembler.start()
    try:
        assembler.note(study_uid)
        time.sleep(0.2)
        assembler.note(study_uid)  # a new arrival restarts the quiet period
        time.sleep(0.3)
        assert enqueue.calls == [], "not complete while instances keep arriving"
        assert _wait(lambda: len(enqueue.calls) == 1)
        assert enqueue.calls[0] == (study_uid, assembler.key_for(study_uid))
        assembler.note(study_uid)  # same content again: not queued twice
        time.sleep(0.8)
        assert len(enqueue.calls) == 1
        assert audit.events(study_uid, kind="already_queued")
        spool.store(make_dataset(tmp_path / "more", "late", study_uid=study_uid, seed=99))
        assembler.note(study_uid)  # new content: a new key, queued again
        assert _wait(lambda: len(enqueue.calls) == 2)
        assert enqueue.calls[1][1] != enqueue.calls[0][1]
    finally:
        assembler.stop()


def test_broker_down_is_retried(tmp_path: Path) -> None:
    spool, audit, study_uid, assembler, enqueue = _setup(tmp_path, enqueue=RecordingEnqueue(fail_times=2), quiet=0.1)
    assembler.start()
    try:
        assembler.note(study_uid)
        assert _wait(lambda: len(enqueue.calls) == 1)
    finally:
        assembler.stop()
    errors = audit.events(study_uid, kind="error")
    assert len(errors) == 2 and "broker unreachable" in errors[0]["details"]["reason"]


def test_recover_finds_studies_never_queued(tmp_path: Path) -> None:
    spool, audit, study_uid, assembler, enqueue = _setup(tmp_path, quiet=0.1)
    assert assembler.recover() == [study_uid]
    assert assembler.complete(study_uid) is not None
    restarted = StudyAssembler(Spool(spool.root), audit, enqueue, 0.1)
    assert restarted.recover() == [], "a queued study is not recovered again"
