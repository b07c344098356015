"""Exactly one result set and one analysed row per image: late instances, redelivered tasks, a full
disk and transient database errors (real spool, encoders, outbox, audit store and Celery task)."""

from __future__ import annotations

import errno
from collections import Counter
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import delete
from sqlalchemy.exc import OperationalError

from dermnode.node import outbox as outbox_module
from dermnode.node.assemble import idempotency_key
from dermnode.node.audit import AuditStore
from dermnode.node.schema import study_keys
from dermnode.node.settings import load_settings
from dermnode.workers import tasks
from dermnode.workers.celery_app import ANALYSE_TASK, make_celery
from worker_support import DarkAnalyzer, spool_study

SR = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    settings = load_settings(home=tmp_path / "home", broker_url="memory://", destinations=["PACS@127.0.0.1:104"])
    analyzer = DarkAnalyzer()
    monkeypatch.setattr(tasks, "_analyzer", analyzer)
    audit = AuditStore(settings.database_url)
    yield settings, analyzer, audit
    audit.close()


def _key(settings, study_uid: str) -> str:
    return idempotency_key(study_uid, (path.stem for path in sorted((settings.spool_dir / study_uid).glob("*.dcm"))))


def _results_per_image(audit: AuditStore, study_uid: str) -> Counter:
    """How many SRs went to the outbox for each source image, and how many analysed rows it has."""
    counts: Counter = Counter()
    for event in audit.events(study_uid, kind="outbox"):
        counts[event["details"]["idempotency_key"]] += 1
    for row in audit.analysed_rows():
        counts[row["sop_instance_uid"]] += 1
    return counts


def test_a_late_instance_is_analysed_alone(node, tmp_path: Path) -> None:
    settings, analyzer, audit = node
    study_uid = generate_uid()
    early = spool_study(settings, tmp_path / "src", study_uid, [None, None])
    tasks.process_study(settings, study_uid, _key(settings, study_uid), audit=audit)
    sent_before = {row["sop_instance_uid"] for row in audit.deliveries(study_uid)}

    (late,) = spool_study(settings, tmp_path / "src", study_uid, [None], first_seed=2)
    summary = tasks.process_study(settings, study_uid, _key(settings, study_uid), audit=audit)
    assert (summary["images"], summary["earlier"]) == (1, 2)
    assert sorted(analyzer.analysed[:2]) == sorted(str(ds.SOPInstanceUID) for ds in early)
    assert analyzer.analysed[2:] == [str(late.SOPInstanceUID)]

    counts = _results_per_image(audit, study_uid)
    for ds in [*early, late]:
        assert counts[f"image:{ds.SOPInstanceUID}"] == 1 and counts[str(ds.SOPInstanceUID)] == 1
    deliveries = audit.deliveries(study_uid)
    assert sum(row["sop_class_uid"] == SR for row in deliveries) == 3, "one SR per image"
    assert len(deliveries) == 9 and sent_before < {row["sop_instance_uid"] for row in deliveries}
    assert len(audit.events(study_uid, kind="analysed")) == 3


def test_a_redelivered_task_adds_no_row(node, tmp_path: Path) -> None:
    """Redelivered after the worker died before marking the key done: nothing is analysed again."""
    settings, analyzer, audit = node
    study_uid = generate_uid()
    spool_study(settings, tmp_path / "src", study_uid, [None, None])
    key = _key(settings, study_uid)
    tasks.process_study(settings, study_uid, key, audit=audit)
    audit.execute(delete(study_keys).where(study_keys.c.key == f"analysis:{key}"))

    assert tasks.process_study(settings, study_uid, key, audit=audit) == {"study_uid": study_uid, "skipped": True}
    assert analyzer.calls == 1
    assert len(audit.analysed_rows()) == 2 and len(audit.events(study_uid, kind="analysed")) == 2


def test_a_full_disk_is_retried_without_duplicates(node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC while the outbox writes the second image's SR: the task fails as transient; the rerun
    does the second image only."""
    settings, analyzer, audit = node
    study_uid = generate_uid()
    first, second = sorted(spool_study(settings, tmp_path / "src", study_uid, [None, None]),
                           key=lambda ds: str(ds.SOPInstanceUID))  # the order the task takes them in
    key = _key(settings, study_uid)
    write, writes = outbox_module.write_durably, []

    def full_disk(path, data, **kwargs):
        writes.append(path)
        if len(writes) == 5:  # SEG, SR, KOS of the first image, then the second image's SEG, then its SR
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(path, data, **kwargs)

    monkeypatch.setattr(outbox_module, "write_durably", full_disk)
    with pytest.raises(OSError):
        tasks.process_study(settings, study_uid, key, audit=audit)
    (error,) = audit.events(study_uid, kind="error")
    assert error["details"]["transient"] is True and "ENOSPC" not in error["details"]["reason"]
    assert "[Errno 28]" in error["details"]["reason"] and str(settings.home) not in error["details"]["reason"]
    monkeypatch.setattr(outbox_module, "write_durably", write)

    tasks.process_study(settings, study_uid, key, audit=audit)
    assert analyzer.analysed == [str(first.SOPInstanceUID), str(second.SOPInstanceUID), str(second.SOPInstanceUID)]
    counts = _results_per_image(audit, study_uid)
    for ds in (first, second):
        assert counts[f"image:{ds.SOPInstanceUID}"] == 1 and counts[str(ds.SOPInstanceUID)] == 1
    assert sum(row["sop_class_uid"] == SR for row in audit.deliveries(study_uid)) == 2


def test_a_transient_database_error_is_retried_by_celery(node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, analyzer, audit = node
    study_uid = generate_uid()
    spool_study(settings, tmp_path / "src", study_uid, [None, None])
    app = make_celery(settings)
    app.conf.update(task_always_eager=True, result_backend="cache+memory://")
    task = app.tasks[ANALYSE_TASK]
    assert task.max_retries and task.retry_backoff and task.retry_jitter
    lookup, failures = AuditStore.analysed_images, []

    def locked_once(self, uid):
        if not failures:
            failures.append(uid)
            raise OperationalError("SELECT ...", {}, Exception("database is locked"))
        return lookup(self, uid)

    monkeypatch.setattr(AuditStore, "analysed_images", locked_once)
    result = task.apply(args=[study_uid, _key(settings, study_uid)])
    assert result.successful(), result.traceback
    assert result.result["images"] == 2
    (error,) = audit.events(study_uid, kind="error")
    assert error["details"] == {"idempotency_key": _key(settings, study_uid), "transient": True,
                                "reason": "OperationalError: database is locked"}
    assert len(audit.analysed_rows()) == 2


def test_a_permanent_problem_is_not_retried(node, tmp_path: Path) -> None:
    """One bad image is no error of the task: no retry, no error event, a failed row."""
    settings, analyzer, audit = node
    app = make_celery(settings)
    app.conf.update(task_always_eager=True, result_backend="cache+memory://")
    study_uid = generate_uid()
    spool_study(settings, tmp_path / "src", study_uid, [lambda ds: delattr(ds, "SeriesInstanceUID")])
    result = app.tasks[ANALYSE_TASK].apply(args=[study_uid, "k"])
    assert result.successful() and result.result["failed"] == 1
    assert audit.events(study_uid, kind="error") == []
