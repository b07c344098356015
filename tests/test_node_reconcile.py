"""The reconciler: complete, unanalysed studies with no live task are queued again, exactly once.

The broker is a stand-in here (a set of live task ids); tests/test_workers_supervision.py kills
real Redis servers and workers.
"""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread

from dermnode.node.assemble import StudyAssembler
from dermnode.node.audit import AuditStore
from dermnode.node.reconcile import Reconciler
from dermnode.node.spool import Spool
from node_support import RecordingEnqueue, make_dataset, make_study


class Broker:
    """What live_tasks would report: task ids (and arguments) of the messages a broker holds."""

    def __init__(self) -> None:
        self.live: set[str] = set()
        self.reads = 0

    def __call__(self) -> set[str]:
        self.reads += 1
        return set(self.live)


def _setup(tmp_path: Path, studies: int = 2, max_requeues: int = 3):
    spool = Spool(tmp_path / "spool")
    audit = AuditStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    uids = []
    for n in range(studies):
        study_uid, files = make_study(tmp_path / f"in{n}", 2, prefix=f"S{n}I")
        for path in files:
            spool.store(dcmread(path))
        uids.append(study_uid)
    enqueue, broker = RecordingEnqueue(), Broker()
    assembler = StudyAssembler(spool, audit, enqueue, 0.1)
    reconciler = Reconciler(assembler, broker, period=1.0, max_requeues=max_requeues, settle_seconds=0.0)
    return spool, audit, assembler, reconciler, enqueue, broker, uids


def _mark_analysed(audit: AuditStore, study_uid: str, key: str) -> None:
    audit.claim_key(f"analysis:{key}", study_uid)
    audit.mark_key(f"analysis:{key}", "done")


def test_lost_messages_are_queued_again_once(tmp_path: Path) -> None:
    spool, audit, assembler, reconciler, enqueue, broker, (lost, running) = _setup(tmp_path)
    for study_uid in (lost, running):
        assembler.complete(study_uid)
    broker.live = {"task-2"}  # the broker restarted empty, except that one worker still holds task-2
    assert reconciler.run_once() == [lost]
    assert enqueue.calls[-1] == (lost, assembler.key_for(lost))
    (event,) = audit.events(lost, kind="requeued")
    assert event["details"]["previous_task_id"] == "task-1" and event["details"]["task_id"] == "task-3"
    assert "lost" in event["details"]["reason"]
    assert audit.key_state(f"enqueue:{assembler.key_for(lost)}") == "queued"

    broker.live = {"task-2", "task-3"}  # the new message is live: nothing is queued twice
    assert reconciler.run_once() == []
    assert len(enqueue.calls) == 3 and broker.reads == 4  # two reads per pass

    _mark_analysed(audit, running, assembler.key_for(running))
    _mark_analysed(audit, lost, assembler.key_for(lost))
    broker.live = set()  # analysed and acknowledged: nothing owed, the broker is not even asked
    assert reconciler.run_once() == [] and broker.reads == 4
    assert reconciler.owed() == []


def test_a_live_message_is_recognised_by_its_key_too(tmp_path: Path) -> None:
    _, _, assembler, reconciler, enqueue, broker, (study_uid,) = _setup(tmp_path, studies=1)
    assembler.complete(study_uid)
    broker.live = {"another-task-id", assembler.key_for(study_uid)}  # e.g. a Celery retry of the study
    assert reconciler.run_once() == [] and len(enqueue.calls) == 1


def test_studies_in_their_quiet_period_wait_for_the_assembler(tmp_path: Path) -> None:
    spool, audit, assembler, reconciler, enqueue, broker, (study_uid,) = _setup(tmp_path, studies=1)
    assembler.complete(study_uid)
    assembler.note(study_uid)  # a late instance arrived: its quiet period runs
    assert reconciler.run_once() == [] and len(enqueue.calls) == 1


def test_older_content_is_superseded_not_queued(tmp_path: Path) -> None:
    spool, audit, assembler, reconciler, enqueue, broker, (study_uid,) = _setup(tmp_path, studies=1)
    assembler.complete(study_uid)
    old_key = assembler.key_for(study_uid)
    spool.store(make_dataset(tmp_path / "late", "late", study_uid=study_uid, seed=7))
    assembler.complete(study_uid)  # the new content is queued and live
    broker.live = {"task-2"}
    assert reconciler.run_once() == []
    assert audit.key_state(f"enqueue:{old_key}") == "superseded"
    assert len(enqueue.calls) == 2


def test_a_study_that_never_gets_analysed_is_given_up(tmp_path: Path) -> None:
    _, audit, assembler, reconciler, enqueue, broker, (study_uid,) = _setup(tmp_path, studies=1, max_requeues=2)
    assembler.complete(study_uid)
    for _ in range(4):  # each task fails and is acknowledged: nothing live, never analysed
        reconciler.run_once()
    assert len(audit.events(study_uid, kind="requeued")) == 2 and len(enqueue.calls) == 3
    assert audit.key_state(f"enqueue:{assembler.key_for(study_uid)}") == "abandoned"
    (error,) = audit.events(study_uid, kind="error")
    assert "giving up" in error["details"]["reason"]


def test_spooled_studies_never_queued_are_recovered_on_each_pass(tmp_path: Path) -> None:
    _, audit, assembler, reconciler, enqueue, broker, (study_uid,) = _setup(tmp_path, studies=1)
    reconciler.run_once()
    assert assembler.pending() == [study_uid] and audit.events(study_uid, kind="recovered")
    reconciler.run_once()  # waiting for its quiet period: not recovered twice
    assert len(audit.events(study_uid, kind="recovered")) == 1
