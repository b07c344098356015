"""The reconciler: the database, not Redis, says which studies still owe results.

A C-STORE success is a promise that a result will follow. Every ``reconcile_seconds`` (and once
when serve starts) a thread of ``dermnode serve``

1. schedules, through the assembler, every spooled study whose current content was never queued
   (``StudyAssembler.recover``: the node died between answering success and enqueueing);
2. finds every study whose *current* content key is ``queued`` (``enqueue:<key>``) but not analysed
   (``analysis:<key>`` not ``done``) and whose quiet period is over, and asks the broker which
   tasks are live (``live_tasks``: messages waiting in a queue, or delivered to a worker and not yet
   acknowledged). A study with no live message for its task id or key lost its message (an
   external Redis restarted, the embedded Redis died before its append-only file had the message,
   a message dropped between broker and worker) and is queued again, audited ``requeued`` with
   the reason. A dead worker's message is still live (unacknowledged): Celery hands it to a worker
   again after the visibility timeout, so it is not queued a second time.

Races are closed by order: the broker is read twice, ``settle_seconds`` apart (a message moving
from the queue to a worker's unacknowledged set is never missed by both reads), and the study's
analysis key is read again *after* that, just before queueing (a task that finished and was
acknowledged in between has marked its key done first). A key queued ``max_requeues`` times without
being analysed (its task keeps failing) is marked ``abandoned`` and audited as an error, not retried
for ever. Keys of older content of a study that got more instances since are marked ``superseded``:
the current key's task analyses the study's images that have no result yet.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from sqlalchemy import func, literal, or_, select
from sqlalchemy.orm import aliased

from dermnode.node.assemble import StudyAssembler
from dermnode.node.schema import study_keys

log = logging.getLogger("dermnode.reconcile")

#: live_tasks() -> task ids and task arguments of every message the broker holds (raises when unreachable)
LiveTasks = Callable[[], set[str]]


class Reconciler:
    """Queues again the complete, unanalysed studies that have no live task; a thread of serve."""

    def __init__(self, assembler: StudyAssembler, live_tasks: LiveTasks, period: float, max_requeues: int,
                 settle_seconds: float = 1.0) -> None:
        self.assembler = assembler
        self.audit = assembler.audit
        self.live_tasks = live_tasks
        self.period = period
        self.max_requeues = max_requeues
        self.settle_seconds = settle_seconds
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def owed(self) -> list[dict]:
        """Rows (key, study_uid, task_id) of content keys queued but not analysed."""
        enqueue, analysis = study_keys, aliased(study_keys)
        done_key = literal("analysis:") + func.substr(enqueue.c.key, len("enqueue:") + 1)
        query = (
            select(enqueue.c.key, enqueue.c.study_uid, enqueue.c.task_id)
            .select_from(enqueue.outerjoin(analysis, analysis.c.key == done_key))
            .where(enqueue.c.key.like("enqueue:%"), enqueue.c.state == "queued",
                   or_(analysis.c.state.is_(None), analysis.c.state != "done"))
            .order_by(enqueue.c.updated_at)
        )
        with self.audit.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def run_once(self) -> list[str]:
        """One pass; returns the UIDs of the studies queued again."""
        self.assembler.recover()
        owed = self.owed()
        if not owed:
            return []
        live = self.live_tasks()
        time.sleep(self.settle_seconds)
        live |= self.live_tasks()
        waiting = set(self.assembler.pending())
        requeued = []
        for row in owed:
            study_uid, claim, task_id = row["study_uid"], row["key"], row["task_id"]
            key = claim.removeprefix("enqueue:")
            if study_uid in waiting or task_id in live or key in live:
                continue
            if key != self.assembler.key_for(study_uid):
                self.audit.mark_key(claim, "superseded", task_id)
                continue
            if self.audit.key_state(f"analysis:{key}") == "done":
                continue  # finished (and acknowledged) between the reads
            if self._requeue(study_uid, claim, key, task_id):
                requeued.append(study_uid)
        return requeued

    def _requeue(self, study_uid: str, claim: str, key: str, task_id: str | None) -> bool:
        earlier = [event for event in self.audit.events(study_uid, kind="requeued")
                   if event["details"].get("idempotency_key") == key]
        if len(earlier) >= self.max_requeues:
            self.audit.mark_key(claim, "abandoned", task_id)
            self.audit.record("error", study_uid, idempotency_key=key, task_id=task_id,
                              reason=f"queued {len(earlier) + 1} times and never analysed; giving up "
                                     "(see the worker log)")
            log.error("study %s: queued %d times and never analysed; giving up", study_uid, len(earlier) + 1)
            return False
        new_task = self.assembler.enqueue(study_uid, key)
        self.audit.mark_key(claim, "queued", new_task)
        reason = f"task {task_id} is neither waiting nor running: its message was lost (broker restarted?)"
        self.audit.record("requeued", study_uid, idempotency_key=key, task_id=new_task, previous_task_id=task_id,
                          reason=reason, attempt=len(earlier) + 1)
        log.warning("study %s: %s; queued again as task %s", study_uid, reason, new_task)
        return True

    # ------------------------------------------------------------------------------ thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dermnode-reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.run_once()
            except Exception as error:  # noqa: BLE001 - broker or database down: try on the next pass
                log.warning("reconciler pass failed (%s: %s); next pass in %.0f s",
                            type(error).__name__, error, self.period)
            self._stopping.wait(self.period)
