"""Fault: a worker killed (SIGKILL) in the middle of a study; the study is still processed exactly once.

Real redis-server, real Celery worker subprocesses, the real task, outbox and audit store. Only the
analysis stage is a double (it sleeps, so that the kill lands mid-task, and returns a plain lesion
mask with fixed probabilities): this test is about delivery, not about the models.

Run as a script, this file is that worker: ``python tests/test_workers_redelivery.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dermnode.contract import CLASS_CODES, AnalysisStatus, LesionAnalysis, ModelIdentity
from dermnode.workers.pipeline import Analyzer

SLEEP_ENV = "DERMNODE_TEST_ANALYSIS_SECONDS"
MARKER_ENV = "DERMNODE_TEST_ANALYSIS_MARKER"


class SlowAnalyzer(Analyzer):
    """Writes its pid to a marker file when it starts, sleeps, then calls the darker half the lesion."""

    def __init__(self, seconds: float, marker: Path) -> None:
        super().__init__(None, None, None, None)
        self.seconds, self.marker = seconds, marker

    @property
    def identities(self) -> tuple[ModelIdentity, ...]:
        return (ModelIdentity("analysis-double", "test", "0" * 64),)

    def analyze(self, images):
        with self.marker.open("a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(self.seconds)
        probabilities = dict.fromkeys(CLASS_CODES, 0.0)
        probabilities.update(NV=0.6, MEL=0.4)
        return [
            LesionAnalysis(AnalysisStatus.ANALYSED, mask=image.rgb.mean(axis=2) < np.median(image.rgb.mean(axis=2)),
                           segmentation_confidence=0.9, probabilities=dict(probabilities), bcc_probability=0.2,
                           models=self.identities, seconds={"segmentation": self.seconds})
            for image in images
        ]


def start_worker(env: dict[str, str], seconds: float, log: Path) -> subprocess.Popen:
    env = dict(env, **{SLEEP_ENV: str(seconds)})
    with log.open("ab") as handle:
        return subprocess.Popen([sys.executable, __file__], env=env, stdout=handle, stderr=subprocess.STDOUT)


def wait_until(condition, timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    tails = "\n".join(f"--- {log}\n{log.read_text()[-3000:]}" for log in logs if log.exists())
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


@pytest.mark.peers
def test_worker_killed_mid_task_study_is_processed_exactly_once(tmp_path: Path) -> None:
    from peers import redis_server, stop

    from dermnode.dicom_templates.image_conversion import dicomize_image
    from dermnode.contract import PatientMetadata
    from dermnode.node.assemble import idempotency_key
    from dermnode.node.audit import AuditStore
    from dermnode.node.settings import load_settings
    from dermnode.node.spool import Spool
    from dermnode.workers.celery_app import celery_for, live_tasks
    from dermnode.workers.demo import synthetic_images
    from dermnode.workers.tasks import enqueue_study

    with redis_server(tmp_path / "redis") as url:
        home, marker = tmp_path / "home", tmp_path / "analysis-started"
        env = dict(os.environ, DERMNODE_HOME=str(home), DERMNODE_BROKER_URL=url, DERMNODE_QUEUE="redelivery",
                   DERMNODE_VISIBILITY_TIMEOUT="3", DERMNODE_RESTORE_INTERVAL="1", **{MARKER_ENV: str(marker)})
        env.pop("DERMNODE_CONFIG", None)
        settings = load_settings(home=home, broker_url=url, queue="redelivery")
        (image,) = synthetic_images(tmp_path / "images", 1)
        ds = dicomize_image(image, "REDELIVERY1", PatientMetadata(60.0, "female", None))
        Spool(settings.spool_dir).store(ds)
        study_uid, key = str(ds.StudyInstanceUID), idempotency_key(str(ds.StudyInstanceUID), [str(ds.SOPInstanceUID)])
        audit = AuditStore(settings.database_url)
        logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]

        first = start_worker(env, 120.0, logs[0])
        second = None
        try:
            enqueue_study(settings, study_uid, key)
            started = lambda: marker.exists() and len(marker.read_text().split()) >= 1  # noqa: E731
            wait_until(started, 60, "the first worker to start the study", logs)
            first.kill()  # SIGKILL: no warm shutdown, no requeue by the dying worker
            first.wait()
            assert audit.events(study_uid, kind="outbox") == []  # it really died mid-task
            # Unacknowledged, the dead worker's message is still live for serve's reconciler, which
            # therefore leaves the study to the visibility timeout instead of queueing it again.
            assert key in live_tasks(settings)

            second = start_worker(env, 0.5, logs[1])
            done = lambda: audit.events(study_uid, kind="study_analysed")  # noqa: E731
            wait_until(done, 90, "the second worker to finish the redelivered study", logs)

            starts = marker.read_text().split()
            assert len(starts) == 2 and starts[0] == str(first.pid) and starts[1] == str(second.pid)
            assert len(audit.events(study_uid, kind="outbox")) == 1
            assert len(audit.events(study_uid, kind="analysed")) == 1
            assert len(audit.events(study_uid, kind="study_analysed")) == 1
            wait_until(lambda: key not in live_tasks(settings), 30, "the acknowledgement", logs)  # nothing live left
            results = sorted(p.name for p in (settings.outbox_dir / study_uid).glob("*.dcm"))
            assert len(results) == 3  # SEG, SR and (P(MEL) 0.4 >= 0.3) KOS: one result set

            # The same study delivered once more (e.g. a visibility timeout too short): skipped.
            again = enqueue_study(settings, study_uid, key)
            summary = celery_for(settings).AsyncResult(again).get(timeout=60)
            assert summary == {"study_uid": study_uid, "skipped": True}
            assert len(marker.read_text().split()) == 2
            assert len(audit.events(study_uid, kind="outbox")) == 1
            assert sorted(p.name for p in (settings.outbox_dir / study_uid).glob("*.dcm")) == results
        finally:
            stop(first)
            if second is not None:
                stop(second)
            audit.close()


if __name__ == "__main__":
    from dermnode.workers import tasks
    from dermnode.workers.celery_app import make_celery, worker_settings

    tasks.use_analyzer(SlowAnalyzer(float(os.environ[SLEEP_ENV]), Path(os.environ[MARKER_ENV])))
    worker_config = worker_settings()
    make_celery(worker_config).worker_main([
        "worker", "--pool", "solo", "--queues", worker_config.queue, "--loglevel", "INFO",
        "--without-mingle", "--without-gossip", "--hostname", f"redelivery-{os.getpid()}@%h",
    ])
