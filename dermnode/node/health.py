"""Is the node ready to take studies? The checks behind /readyz and serve's "ready" line.

Each check answers ``None`` when it passes, else the problem in words:

* ``database``: a ``SELECT 1`` on the audit store;
* ``spool``: a file can be created in the spool folder;
* ``disk``: the home folder has more than ``disk_watermark_mb`` MiB free;
* ``broker``: the broker answers PING;
* ``workers``: at least one worker's heartbeat is fresh (node/heartbeat.py) and, with the embedded
  queue, the embedded worker process runs and is among them;
* ``models``: every live worker loaded its models (weights verified against their model cards'
  sha256), and at least one did.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import text

from dermnode.node.audit import AuditStore
from dermnode.node.heartbeat import WorkerBeat, read_workers, redis_client
from dermnode.node.settings import Settings

MIB = 1024 * 1024
#: Seconds serve waits for the first "ready" before it logs which checks fail.
READY_WAIT_SECONDS = 120.0


@dataclass
class Readiness:
    """The outcome of every check: ``failing`` maps each failing check to its problem."""

    checks: dict[str, str | None]
    workers: list[WorkerBeat]

    @property
    def failing(self) -> dict[str, str]:
        return {name: problem for name, problem in self.checks.items() if problem is not None}

    @property
    def ready(self) -> bool:
        return not self.failing

    def describe(self) -> str:
        """The failing checks in one line, for the log."""
        return "; ".join(f"{name}: {problem}" for name, problem in self.failing.items()) or "every check passes"


def free_disk_mb(settings: Settings) -> float:
    """Free space of the file system of the home folder, in MiB."""
    return shutil.disk_usage(settings.home).free / MIB


class HealthChecks:
    """The readiness checks of one node. ``embedded_worker_pid`` gives the pid of serve's embedded
    worker while it runs (None when it does not); leave it out with an external broker."""

    def __init__(self, settings: Settings, audit: AuditStore,
                 embedded_worker_pid: Callable[[], int | None] | None = None) -> None:
        self.settings = settings
        self.audit = audit
        self.embedded_worker_pid = embedded_worker_pid

    def run(self) -> Readiness:
        checks: dict[str, str | None] = {"database": self._database(), "spool": self._spool(), "disk": self._disk()}
        workers: list[WorkerBeat] = []
        try:
            workers = read_workers(redis_client(self.settings.broker_url))
            checks["broker"] = None
        except Exception as error:  # noqa: BLE001 - unreachable, refused, timed out: all say "not reachable"
            checks["broker"] = f"not reachable ({type(error).__name__}: {error})"
        checks["workers"] = self._workers(workers, checks["broker"] is None)
        checks["models"] = self._models(workers)
        return Readiness(checks, workers)

    def _database(self) -> str | None:
        try:
            with self.audit.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as error:  # noqa: BLE001 - any database error means not ready
            return f"not reachable ({type(error).__name__})"
        return None

    def _spool(self) -> str | None:
        try:
            self.settings.spool_dir.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(prefix=".readyz-", dir=self.settings.spool_dir)
            os.close(handle)
            os.unlink(name)
        except OSError as error:
            return f"{self.settings.spool_dir} is not writable ({error.strerror or type(error).__name__})"
        return None

    def _disk(self) -> str | None:
        try:
            free = free_disk_mb(self.settings)
        except OSError as error:
            return f"cannot read the free space of {self.settings.home} ({error.strerror})"
        if free <= self.settings.disk_watermark_mb:
            return f"{free:.0f} MiB free in {self.settings.home}, at or below the watermark of {self.settings.disk_watermark_mb} MiB"
        return None

    def _workers(self, workers: list[WorkerBeat], broker_ok: bool) -> str | None:
        if self.embedded_worker_pid is not None:
            pid = self.embedded_worker_pid()
            if pid is None:
                return "the embedded worker is not running (it is restarted with back-off; see logs/worker.log)"
            if broker_ok and not any(beat.pid == pid for beat in workers):
                return f"the embedded worker (pid {pid}) has not reported yet (starting?)"
        if not broker_ok:
            return "unknown: the broker is not reachable"
        if not workers:
            return "no worker is alive (none wrote a heartbeat to the broker in the last few seconds)"
        return None

    def _models(self, workers: list[WorkerBeat]) -> str | None:
        problems = [f"{beat.name} (pid {beat.pid}): {beat.error or 'failed to load'}"
                    for beat in workers if beat.models == "failed"]
        problems += [f"{beat.name} (pid {beat.pid}): still loading" for beat in workers if beat.models == "loading"]
        if problems:
            return "; ".join(problems)
        if not workers:
            return "no worker has loaded the models"
        return None


class ReadinessLog:
    """Logs readiness as serve sees it: "ready" once every check passes. Until then each change of the
    failing checks is logged (INFO), and, ``wait_seconds`` after the start, which ones still fail (ERROR);
    afterwards every change either way."""

    def __init__(self, checks: HealthChecks, log: logging.Logger, wait_seconds: float = READY_WAIT_SECONDS) -> None:
        self.checks = checks
        self.log = log
        self.deadline = time.monotonic() + wait_seconds
        self.wait_seconds = wait_seconds
        self.ready: bool | None = None  # None: not ready yet, still within the wait
        self._failing: dict[str, str] = {}

    def check(self) -> bool:
        readiness = self.checks.run()
        failing = readiness.failing
        if readiness.ready:
            if self.ready is not True:
                self.log.info("ready: every check passes (%s)", ", ".join(readiness.checks))
        elif self.ready is None and time.monotonic() >= self.deadline:
            self.log.error("not ready %.0f s after the start: %s; studies are received and wait", self.wait_seconds,
                           readiness.describe())
            self.ready = False
        elif self.ready is True:
            self.log.error("not ready: %s", readiness.describe())
        elif failing != self._failing:
            log = self.log.info if self.ready is None else self.log.error
            log("not ready%s: %s", " yet" if self.ready is None else "", readiness.describe())
        if readiness.ready or self.ready is True:
            self.ready = readiness.ready
        self._failing = failing
        return readiness.ready
