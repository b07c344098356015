"""`dermnode serve`: the SCP, the study assembler and the outbox dispatcher in one process.

With no ``broker_url`` the node also starts the workers' embedded queue (a private Redis and a
local worker). It runs in the foreground and stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import logging
import signal
import threading
from functools import partial

from dermnode.node.assemble import Enqueue, StudyAssembler
from dermnode.node.audit import AuditStore
from dermnode.node.outbox import Dispatcher
from dermnode.node.receive import Receiver, start_scp
from dermnode.node.settings import Settings
from dermnode.node.spool import Spool

log = logging.getLogger("dermnode.serve")


class Node:
    """The parts of a running node, started and stopped together (``with Node(...) as node``)."""

    def __init__(self, settings: Settings, enqueue: Enqueue) -> None:
        self.settings = settings
        self.audit = AuditStore(settings.database_url)
        self.spool = Spool(settings.spool_dir)
        self.assembler = StudyAssembler(self.spool, self.audit, enqueue, settings.quiet_seconds)
        self.dispatcher = Dispatcher(settings, self.audit)
        self.receiver = Receiver(self.spool, self.audit, self.assembler.note)
        self.server = None

    def start(self) -> Node:
        self.settings.outbox_dir.mkdir(parents=True, exist_ok=True)
        self.assembler.recover()
        self.assembler.start()
        self.dispatcher.start()
        self.server = start_scp(self.settings, self.receiver)
        return self

    def stop(self) -> None:
        """Stop accepting associations first, then let the assembler and dispatcher finish."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        self.assembler.stop()
        self.dispatcher.stop()
        self.audit.close()

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def serve(settings: Settings) -> None:
    """Run the node until SIGTERM or SIGINT."""
    from dermnode.workers.embedded import EmbeddedQueue
    from dermnode.workers.tasks import enqueue_study

    configure_logging(settings.log_level)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    queue = None
    if not settings.broker_url:
        queue = EmbeddedQueue(settings).start()
        settings = queue.settings
        log.info("no broker configured: embedded queue at %s with a local worker", settings.broker_url)
    try:
        with Node(settings, partial(enqueue_study, settings)):
            log.info("dermnode serve ready: spool %s, database %s, destinations %s", settings.spool_dir,
                     _safe_url(settings.database_url), ", ".join(settings.destinations) or "none")
            worker_ok = True
            while not stopping.wait(2.0):
                if queue is not None and worker_ok:
                    try:
                        queue.check()
                    except RuntimeError as exc:
                        worker_ok = False
                        log.error("%s; studies wait in the queue until a worker runs", exc)
            log.info("stopping")
    finally:
        if queue is not None:
            queue.stop()
        log.info("stopped")


def _safe_url(url: str) -> str:
    """A database URL without its password, for the log."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
