"""Study assembly: a study is complete when no new instance arrived for ``quiet_seconds``.

Then it is enqueued once, with an idempotency key (sha256 of the study UID and its sorted SOP
instance UIDs) recorded in the database, so the same content is never queued twice. ``recover``
(on start, then on every pass of the reconciler, see reconcile.py) finds spooled studies that are
not waiting for their quiet period and whose key was never queued (the node died between answering
success and enqueueing) and schedules them again.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Callable, Iterable

from dermnode.node.audit import AuditStore
from dermnode.node.schema import cancel_key
from dermnode.node.spool import Spool

log = logging.getLogger("dermnode.assemble")

#: enqueue(study_uid, idempotency_key) -> task id
Enqueue = Callable[[str, str], str]


def idempotency_key(study_uid: str, sop_instance_uids: Iterable[str]) -> str:
    digest = hashlib.sha256(study_uid.encode())
    for uid in sorted(sop_instance_uids):
        digest.update(b"\n" + uid.encode())
    return digest.hexdigest()


class StudyAssembler:
    """Tracks the last arrival per study and enqueues each study after its quiet period."""

    def __init__(self, spool: Spool, audit: AuditStore, enqueue: Enqueue, quiet_seconds: float,
                 retry_seconds: float = 5.0) -> None:
        self.spool = spool
        self.audit = audit
        self.enqueue = enqueue
        self.quiet_seconds = quiet_seconds
        self.retry_seconds = retry_seconds
        self._due: dict[str, float] = {}
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def note(self, study_uid: str, delay: float | None = None) -> None:
        """A new instance of ``study_uid`` arrived: (re)start its quiet period."""
        with self._lock:
            self._due[study_uid] = time.monotonic() + (self.quiet_seconds if delay is None else delay)
        self._wake.set()

    def key_for(self, study_uid: str) -> str:
        return idempotency_key(study_uid, (path.stem for path in self.spool.study_files(study_uid)))

    def recover(self) -> list[str]:
        """Schedule every spooled study whose current content was never queued (and that is not
        waiting for its quiet period already); returns their UIDs."""
        found = []
        waiting = set(self.pending())
        for study_uid in self.spool.studies():
            if study_uid in waiting:
                continue
            key = self.key_for(study_uid)
            if self.audit.key_state(f"enqueue:{key}") in (None, "pending"):
                found.append(study_uid)
                self.audit.record("recovered", study_uid, idempotency_key=key,
                                  instances=len(self.spool.study_files(study_uid)))
                self.note(study_uid)
        if found:
            log.info("recovered %d spooled studies not yet queued", len(found))
        return found

    def pending(self) -> list[str]:
        """Studies in their quiet period or being queued right now."""
        with self._lock:
            return sorted(self._due.keys() | self._busy)

    # ------------------------------------------------------------------------------ thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dermnode-assembler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            now = time.monotonic()
            with self._lock:
                ready = [uid for uid, due in self._due.items() if due <= now]
                for uid in ready:
                    del self._due[uid]
                self._busy.update(ready)
                next_due = min(self._due.values(), default=now + 3600)
            for study_uid in ready:
                try:
                    self.complete(study_uid)
                except Exception:  # noqa: BLE001 - e.g. an unreadable spool folder; recover() tries again
                    log.exception("study %s: cannot be completed", study_uid)
                finally:
                    with self._lock:
                        self._busy.discard(study_uid)
            if not ready:
                self._wake.wait(timeout=max(0.05, next_due - time.monotonic()))

    def complete(self, study_uid: str) -> str | None:
        """Enqueue a complete study unless its content was queued before or an operator cancelled it
        (node/actions.py); returns the task id."""
        key = self.key_for(study_uid)
        claim = f"enqueue:{key}"
        try:
            if self.audit.key_state(cancel_key(study_uid)) == "cancelled":
                log.info("study %s was cancelled by an operator: not queued", study_uid)
                return None
            if not self.audit.claim_key(claim, study_uid):
                log.info("study %s: same content already queued (key %s), not queued again", study_uid, key[:12])
                self.audit.record("already_queued", study_uid, idempotency_key=key)
                return None
            task_id = self.enqueue(study_uid, key)
            self.audit.mark_key(claim, "queued", task_id)
            self.audit.record("queued", study_uid, idempotency_key=key, task_id=task_id,
                              instances=len(self.spool.study_files(study_uid)))
            log.info("study %s complete: queued as task %s", study_uid, task_id)
            return task_id
        except Exception as exc:  # noqa: BLE001 - a broker or database fault: try again later
            log.error("study %s: cannot enqueue (%s); retrying in %.0f s", study_uid, exc, self.retry_seconds)
            try:
                self.audit.record("error", study_uid, reason=f"cannot enqueue: {exc}", idempotency_key=key)
            except Exception:  # noqa: BLE001
                log.exception("cannot audit the enqueue failure")
            self.note(study_uid, delay=self.retry_seconds)
            return None
