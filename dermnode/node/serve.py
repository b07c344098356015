"""`dermnode serve`: the SCP, the study assembler, the reconciler and the outbox dispatcher in one process.

With no ``broker_url`` the node also starts the workers' embedded queue (a private Redis and a
local worker) and restarts either when it dies. It runs in the foreground and stops cleanly on
SIGTERM or SIGINT. The node is *ready* while a worker is alive (the embedded worker runs, or a
worker answers a ping on the broker); every change is logged. The log goes to stderr and to
``<home>/logs/dermnode.log`` (rotated at LOG_FILE_BYTES, LOG_FILE_BACKUPS kept).
"""

from __future__ import annotations

import logging
import logging.handlers
import signal
import threading
from functools import partial
from pathlib import Path
from typing import Callable

from dermnode.node.assemble import Enqueue, StudyAssembler
from dermnode.node.audit import AuditStore
from dermnode.node.disk import DiskWatermark
from dermnode.node.outbox import Dispatcher
from dermnode.node.receive import Receiver, start_scp
from dermnode.node.reconcile import LiveTasks, Reconciler
from dermnode.node.retention import Pruner
from dermnode.node.settings import Settings, mask_url
from dermnode.node.spool import Spool

log = logging.getLogger("dermnode.serve")
LOG_FILE_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 5


class Node:
    """The parts of a running node, started and stopped together (``with Node(...) as node``).

    ``live_tasks`` (the broker's view, see reconcile.py) enables the reconciler; ``worker_alive``
    tells whether a worker can take studies (``ready``).
    """

    def __init__(self, settings: Settings, enqueue: Enqueue, live_tasks: LiveTasks | None = None,
                 worker_alive: Callable[[], bool] | None = None) -> None:
        self.settings = settings
        self.audit = AuditStore.from_settings(settings)
        self.spool = Spool(settings.spool_dir)
        self.assembler = StudyAssembler(self.spool, self.audit, enqueue, settings.quiet_seconds)
        self.reconciler = None if live_tasks is None else Reconciler(
            self.assembler, live_tasks, settings.reconcile_seconds, settings.reconcile_max_requeues)
        self.dispatcher = Dispatcher(settings, self.audit)
        self.disk = DiskWatermark(settings.home, settings.disk_watermark_mb)
        self.receiver = Receiver(self.spool, self.audit, self.assembler.note, self.disk)
        self.pruner = Pruner(settings, self.audit, self.spool)
        self.worker_alive = worker_alive
        self.ready: bool | None = None
        self.server = None

    def start(self) -> Node:
        self.settings.outbox_dir.mkdir(parents=True, exist_ok=True)
        self.assembler.recover()
        self.assembler.start()
        if self.reconciler is not None:
            self.reconciler.start()
        self.dispatcher.start()
        self.pruner.start()
        self.server = start_scp(self.settings, self.receiver)
        return self

    def check_ready(self) -> bool:
        """Whether a worker is alive to analyse studies; logs each change (and not-ready at start)."""
        ready = self.worker_alive is None or self.worker_alive()
        if ready != self.ready:
            if ready:
                log.info("ready: a worker is alive")
            else:
                log.error("not ready: no worker is alive; studies are received and wait in the queue")
            self.ready = ready
        return ready

    def stop(self) -> None:
        """Stop accepting associations first, then let the assembler and dispatcher finish."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        if self.reconciler is not None:
            self.reconciler.stop()
        self.assembler.stop()
        self.dispatcher.stop()
        self.pruner.stop()
        self.audit.close()

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def configure_logging(level: str, log_dir: Path) -> None:
    """Log to stderr and to a rotating ``dermnode.log`` in ``log_dir``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    to_file = logging.handlers.RotatingFileHandler(log_dir / "dermnode.log", maxBytes=LOG_FILE_BYTES,
                                                   backupCount=LOG_FILE_BACKUPS, encoding="utf-8")
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        handlers=[logging.StreamHandler(), to_file])
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def serve(settings: Settings) -> None:
    """Run the node until SIGTERM or SIGINT."""
    from dermnode.workers.celery_app import live_tasks, workers_answering
    from dermnode.workers.embedded import EmbeddedQueue
    from dermnode.workers.tasks import enqueue_study

    configure_logging(settings.log_level, settings.log_dir)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    queue = None
    if not settings.broker_url:
        queue = EmbeddedQueue(settings).start()
        settings = queue.settings
        log.info("no broker configured: embedded queue at %s with a local worker", settings.broker_url)
    worker_alive = queue.worker_alive if queue is not None else partial(workers_answering, settings)
    readiness_every = 1 if queue is not None else 10  # a ping with no worker waits a second
    try:
        with Node(settings, partial(enqueue_study, settings), partial(live_tasks, settings), worker_alive) as node:
            if queue is not None:
                queue.on_event = node.audit.record
            log.info("dermnode serve ready: spool %s, database %s, destinations %s", settings.spool_dir,
                     mask_url(settings.database_url), ", ".join(settings.destinations) or "none")
            beat = 0
            while not stopping.wait(1.0):
                if queue is not None:
                    queue.check()  # in the main thread: see EmbeddedQueue
                if beat % readiness_every == 0:
                    node.check_ready()
                beat += 1
            log.info("stopping")
    finally:
        if queue is not None:
            queue.stop()
        log.info("stopped")

