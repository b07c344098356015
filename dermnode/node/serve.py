"""`dermnode serve`: the SCP, the study assembler, the reconciler, the outbox dispatcher and the web
server (worklist, API, /healthz, /readyz, /metrics; off with http_port 0) in one process.

With no ``broker_url`` the node also starts the workers' embedded queue (a private Redis and a
local worker) and restarts either when it dies. It runs in the foreground and stops cleanly on
SIGTERM or SIGINT. It logs "ready" once every readiness check passes (node/health.py: database,
spool, disk, broker, a live worker, its models loaded), the failing checks if they still fail
after a while, and every change afterwards. The log goes to stderr and to
``<home>/logs/dermnode.log`` (rotated at LOG_FILE_BYTES, LOG_FILE_BACKUPS kept).
"""

from __future__ import annotations

import logging
import logging.handlers
import signal
import threading
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from dermnode.node.assemble import Enqueue, StudyAssembler
from dermnode.node.audit import AuditStore
from dermnode.node.disk import DiskWatermark
from dermnode.node.health import HealthChecks, ReadinessLog
from dermnode.node.outbox import Dispatcher
from dermnode.node.receive import Receiver, start_scp
from dermnode.node.reconcile import LiveTasks, Reconciler
from dermnode.node.retention import Pruner
from dermnode.node.settings import Settings, mask_url
from dermnode.node.spool import Spool

if TYPE_CHECKING:
    from dermnode.web.server import WebServer
    from dermnode.workers.embedded import EmbeddedQueue

log = logging.getLogger("dermnode.serve")
LOG_FILE_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 5


class Node:
    """The parts of a running node, started and stopped together (``with Node(...) as node``).

    ``live_tasks`` (the broker's view, see reconcile.py) enables the reconciler.
    """

    def __init__(self, settings: Settings, enqueue: Enqueue, live_tasks: LiveTasks | None = None) -> None:
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
    from dermnode.workers.celery_app import live_tasks
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
    web = None
    try:
        with Node(settings, partial(enqueue_study, settings), partial(live_tasks, settings)) as node:
            if queue is not None:
                queue.on_event = node.audit.record
            health = HealthChecks(settings, node.audit, None if queue is None else queue.embedded_worker_pid)
            if settings.http_port:
                web = start_web(settings, node, health, queue)
            log.info("dermnode serve started: spool %s, database %s, destinations %s", settings.spool_dir,
                     mask_url(settings.database_url), ", ".join(settings.destinations) or "none")
            readiness = ReadinessLog(health, log)
            beat = 0
            while not stopping.wait(1.0):
                if queue is not None:
                    queue.check()  # in the main thread: see EmbeddedQueue
                if beat % (5 if readiness.ready else 2) == 0:
                    readiness.check()
                beat += 1
            log.info("stopping")
    finally:
        if web is not None:
            web.stop()
        if queue is not None:
            queue.stop()
        log.info("stopped")



def start_web(settings: Settings, node: Node, health: HealthChecks, queue: EmbeddedQueue | None) -> WebServer:
    """The HTTP server on http_host:http_port; OSError naming the HTTP address when it cannot bind."""
    from dermnode.web.context import NodeContext
    from dermnode.web.server import WebServer

    context = NodeContext(settings, node.audit, health, nudge=node.assembler.note,
                          embedded_worker_restarts=None if queue is None else (lambda: queue.worker.restarts))
    try:
        server = WebServer(context).start()
    except OSError as exc:
        raise OSError(exc.errno, f"HTTP on {settings.http_host}:{settings.http_port}: {exc.strerror or exc}") from None
    log.info("HTTP on http://%s:%d: worklist /, API /api/docs, /healthz, /readyz, /metrics", settings.http_host,
             settings.http_port)
    if not settings.web_users and not settings.web_tokens:
        log.warning("no web_users or web_tokens are set: only /healthz, /readyz and /metrics answer "
                    "(dermnode web hash-password makes a user)")
    return server
