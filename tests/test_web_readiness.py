"""/readyz and /metrics see what keeps a node from analysing: a missing models folder, a dead worker, a
dead broker, a killed embedded worker; serve logs which check fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from peers import redis_server, stop
from test_web_api import metrics
from web_support import Served, running_serve, served_studies, wait_until  # noqa: F401

pytestmark = pytest.mark.peers


def failing(served: Served) -> dict[str, str]:
    reply = served.get("/readyz")
    body = reply.json()
    assert (reply.status == 200) == (body["status"] == "ready") and (reply.status in (200, 503))
    return body["failing"]


def test_a_missing_models_folder_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-models-here"
    with running_serve(tmp_path / "home", DERMNODE_MODELS_DIR=str(missing)) as served:
        problem = wait_until(lambda: "no model_card.json" in failing(served).get("models", "") and failing(served),
                             90, "the worker to report its models", served.log)
        assert str(missing) in problem["models"] and served.get("/readyz").status == 503
        found = metrics(served)
        assert found[("dermnode_check_ok", (("check", "models"),))] == 0
        assert found[("dermnode_workers_alive", (("models", "failed"),))] == 1
        assert found[("dermnode_ready", ())] == 0
        wait_until(lambda: "no model_card.json" in served.log.read_text(), 10, "serve to log the failing check")
    log = served.log.read_text()
    assert "not ready yet: " in log and "models: " in log and "ready: every check passes" not in log


def test_a_dead_worker_and_a_dead_broker(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as broker_url, \
            running_serve(tmp_path / "home", DERMNODE_BROKER_URL=broker_url) as served:
        assert wait_until(lambda: failing(served).get("workers"), 30, "readyz").startswith("no worker is alive")
        worker_log = (tmp_path / "worker.log").open("wb")
        worker = subprocess.Popen([sys.executable, "-m", "dermnode.cli", "worker"], env=served.env, stdout=worker_log,
                                  stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: served.get("/readyz").status == 200, 120, "the worker to load its models",
                       tmp_path / "worker.log")
            assert metrics(served)[("dermnode_workers_alive", (("models", "loaded"),))] == 1
            worker.kill()  # SIGKILL: no goodbye; its heartbeat expires
            worker.wait()
            problem = wait_until(lambda: failing(served).get("workers"), 30, "the dead worker to show")
            assert problem.startswith("no worker is alive")
            assert metrics(served)[("dermnode_workers_alive", (("models", "loaded"),))] == 0
        finally:
            stop(worker)
            worker_log.close()
        redis.Redis.from_url(broker_url).shutdown(nosave=True)
        problem = wait_until(lambda: failing(served).get("broker"), 30, "the dead broker to show")
        assert problem.startswith("not reachable")
        found = metrics(served)
        assert found[("dermnode_check_ok", (("check", "broker"),))] == 0
        assert ("dermnode_queue_depth", (("queue", "dermnode"),)) not in found
        assert served.get("/healthz").status == 200  # alive all the same


def test_a_killed_embedded_worker_shows_in_readyz_and_metrics(served_studies: Served) -> None:
    served = served_studies
    wait_until(lambda: served.get("/readyz").status == 200, 60, "readiness")
    before = metrics(served)[("dermnode_embedded_worker_restarts_total", ())]
    (worker,) = served.readyz()["workers"]
    os.kill(worker["pid"], signal.SIGKILL)
    problem = wait_until(lambda: failing(served).get("workers"), 10, "the killed worker to show")
    assert "embedded worker" in problem
    assert metrics(served)[("dermnode_check_ok", (("check", "workers"),))] == 0
    wait_until(lambda: served.get("/readyz").status == 200, 120, "the restarted worker", served.log)
    assert metrics(served)[("dermnode_embedded_worker_restarts_total", ())] == before + 1
    # the killed worker's last heartbeat lingers until it expires (a few seconds)
    wait_until(lambda: len(served.readyz()["workers"]) == 1, 30, "the killed worker's heartbeat to expire", served.log)
    (restarted,) = served.readyz()["workers"]
    assert restarted["pid"] != worker["pid"] and restarted["models"] == "loaded"
