"""Export: a durable outbox of result files and a Dispatcher that delivers them to every destination.

``Outbox.put`` (called by the worker) writes the result objects under ``outbox_dir`` (fsync +
rename) and adds one delivery row per (file, destination) in the same transaction as its
idempotency key, so a second put for the same key does nothing. Veto-positive results also go to
``veto_destinations``. The Dispatcher (a thread of ``dermnode serve``) sends due deliveries over one
association per destination, marks a delivery "sent" only on a success status and otherwise retries
with exponential back-off (retry_base_seconds, doubling, capped at retry_max_seconds).

A destination is *down* when a pass stored nothing there, *up* again when one stores something: the
dispatcher logs one WARNING and writes one audit event (``destination_down`` / ``destination_up``)
per change, not one per attempt, and while it is down tries it only once per back-off interval. A delivery's own failures are audited (``failed``) on its first
attempt and when it is given up; every attempt updates its row (attempts, last error).
``studies.destination_states`` tells each study's state per destination, so a veto destination that is down
shows as such without hiding that the main PACS has the results.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from pydicom import Dataset, dcmwrite
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from dermnode.dicom_templates.uids import check_uid
from dermnode.node.audit import AuditStore
from dermnode.node.durable import write_durably
from dermnode.node.schema import deliveries, study_keys, utcnow
from dermnode.node.send import StoreOutcome, store_files
from dermnode.node.settings import Settings, parse_destination
from dermnode.node.tls import client_context

log = logging.getLogger("dermnode.outbox")
KOS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """Delay before the next try after ``attempts`` failed ones: base, 2 base, 4 base ... up to cap."""
    return min(cap, base * 2 ** max(0, attempts - 1))


class Outbox:
    def __init__(self, settings: Settings, audit: AuditStore) -> None:
        self.settings = settings
        self.audit = audit

    def put(self, study_uid: str, datasets: Sequence[Dataset], idempotency_key: str,
            veto: bool | None = None) -> bool:
        """Queue result objects for every destination; True if stored, False (a no-op) for a key put before.

        ``veto`` routes to veto_destinations too; when None it is inferred from a KOS among the datasets.
        """
        claim = f"outbox:{idempotency_key}"
        if self.audit.key_state(claim) is not None:
            log.info("study %s: results for key %s already in the outbox", study_uid, idempotency_key[:12])
            return False
        if veto is None:
            veto = any(str(ds.SOPClassUID) == KOS_SOP_CLASS for ds in datasets)
        targets = list(self.settings.destinations)
        if veto:
            targets += [d for d in self.settings.veto_destinations if d not in targets]
        folder = self.settings.outbox_dir / check_uid(study_uid, "Study Instance UID")
        written = []
        for ds in datasets:
            buffer = io.BytesIO()
            dcmwrite(buffer, ds, enforce_file_format=True)
            path = folder / f"{check_uid(ds.SOPInstanceUID, 'SOP Instance UID')}.dcm"
            write_durably(path, buffer.getvalue())
            written.append((path, ds))
        rows = [
            {"study_uid": study_uid, "sop_instance_uid": str(ds.SOPInstanceUID), "sop_class_uid": str(ds.SOPClassUID),
             "path": str(path), "destination": destination, "state": "pending", "attempts": 0,
             "next_try_at": 0.0, "created_at": utcnow()}
            for path, ds in written for destination in targets
        ]
        try:
            with self.audit.transaction() as connection:
                connection.execute(insert(study_keys).values(
                    key=claim, study_uid=study_uid, state="done", updated_at=utcnow()))
                if rows:
                    connection.execute(insert(deliveries), rows)
        except IntegrityError:
            log.info("study %s: results for key %s were put concurrently; keeping the first", study_uid, idempotency_key[:12])
            return False
        self.audit.record("outbox", study_uid, idempotency_key=idempotency_key, veto=bool(veto),
                          objects=[str(ds.SOPInstanceUID) for _, ds in written], destinations=targets)
        if not targets:
            log.warning("study %s: no destinations configured; results kept in %s", study_uid, folder)
        return True


class Dispatcher:
    """Sends due deliveries; run as a thread (start/stop) or step by step (run_once)."""

    def __init__(self, settings: Settings, audit: AuditStore) -> None:
        self.settings = settings
        self.audit = audit
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._tls = client_context(settings)
        #: destination -> why it is down (absent while it is up or not yet tried)
        self.down: dict[str, str] = {}
        self._down_passes: dict[str, int] = {}  # consecutive passes that stored nothing there
        self._next_pass: dict[str, float] = {}  # no association before this time (time.time())

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dermnode-dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - keep dispatching after a database hiccup
                log.exception("dispatcher pass failed")
            self._stopping.wait(self.settings.dispatch_poll_seconds)

    def due(self) -> list[dict]:
        with self.audit.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(
                select(deliveries).where(deliveries.c.state == "pending", deliveries.c.next_try_at <= time.time())
                .order_by(deliveries.c.id))]

    def run_once(self) -> int:
        """Try every due delivery once; returns how many were acknowledged."""
        by_destination: dict[str, list[dict]] = defaultdict(list)
        for row in self.due():
            by_destination[row["destination"]].append(row)
        sent = 0
        for destination, rows in by_destination.items():
            if time.time() >= self._next_pass.get(destination, 0.0):
                sent += self._send(destination, rows)
        return sent

    def _send(self, destination: str, rows: list[dict]) -> int:
        """One association's worth of deliveries to one destination; returns how many were acknowledged."""
        by_path = {row["path"]: row for row in rows}
        failures: list[tuple[dict, str]] = []
        sent = 0

        def settle(outcome: StoreOutcome) -> None:  # right after each answer, not after the association
            nonlocal sent
            row = by_path[str(outcome.path)]
            if outcome.stored:
                self._mark_sent(row, outcome.status)
                sent += 1
            else:
                failures.append((row, outcome.error or "not stored"))

        store_files([Path(row["path"]) for row in rows], parse_destination(destination),
                    calling_ae=self.settings.ae_title, ssl_context=self._tls, on_outcome=settle)
        if failures and not sent:
            self._note_down(destination, failures[0][1], len(rows))
        elif sent:
            self._note_up(destination)
        for row, reason in failures:
            self._mark_failed(row, reason, destination_down=not sent)
        return sent

    def _note_down(self, destination: str, reason: str, waiting: int) -> None:
        passes = self._down_passes[destination] = self._down_passes.get(destination, 0) + 1
        self._next_pass[destination] = time.time() + backoff_seconds(
            passes, self.settings.retry_base_seconds, self.settings.retry_max_seconds)
        if destination in self.down:
            return
        self.down[destination] = reason
        log.warning("destination %s is down (%s): %d deliveries wait, retried with back-off up to %.0f s; "
                    "one line when it is back", destination, reason, waiting, self.settings.retry_max_seconds)
        self.audit.record("destination_down", None, destination=destination, reason=reason)

    def _note_up(self, destination: str) -> None:
        self._down_passes.pop(destination, None)
        self._next_pass.pop(destination, None)
        if self.down.pop(destination, None) is None:
            return
        log.warning("destination %s is back up", destination)
        self.audit.record("destination_up", None, destination=destination)

    def _mark_sent(self, row: dict, status: int) -> None:
        self.audit.execute(update(deliveries).where(deliveries.c.id == row["id"]).values(
            state="sent", attempts=row["attempts"] + 1, sent_at=utcnow(), last_error=None))
        self.audit.record("sent", row["study_uid"], row["sop_instance_uid"], destination=row["destination"],
                          sop_class_uid=row["sop_class_uid"], status=f"0x{status:04X}")
        log.info("sent %s to %s", row["sop_instance_uid"], row["destination"])

    def _mark_failed(self, row: dict, reason: str, destination_down: bool) -> None:
        """Back the delivery off (or give it up); audit and warn on its first failure and when giving
        up, and only then (a destination that is down has its own one warning, see _note_down)."""
        attempts = row["attempts"] + 1
        give_up = 0 < self.settings.max_attempts <= attempts
        delay = backoff_seconds(attempts, self.settings.retry_base_seconds, self.settings.retry_max_seconds)
        self.audit.execute(update(deliveries).where(deliveries.c.id == row["id"]).values(
            state="failed" if give_up else "pending", attempts=attempts, next_try_at=time.time() + delay,
            last_error=reason))
        if attempts == 1 or give_up:
            self.audit.record("failed", row["study_uid"], row["sop_instance_uid"], destination=row["destination"],
                              reason=reason, attempt=attempts, retry_in_seconds=None if give_up else delay)
        loud = give_up or (attempts == 1 and not destination_down)
        log.log(logging.WARNING if loud else logging.DEBUG, "cannot send %s to %s (attempt %d): %s%s",
                row["sop_instance_uid"], row["destination"], attempts, reason,
                "; giving up" if give_up else f"; retrying in {delay:.0f} s")
