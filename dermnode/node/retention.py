"""Retention: the spool, outbox and result files of exported studies are pruned after ``retention_days``.

A study's files go only when nothing is owed for it any more:

* it has deliveries and every one of them is ``sent`` (acknowledged by its destination: a pending,
  retrying or given-up delivery keeps the whole study);
* its last acknowledgement and its last received instance are older than the cutoff;
* every spooled image of it has its analysis (a late instance still being analysed keeps it);
* it was not pruned since its last acknowledgement (a study that got a late instance after being
  pruned is pruned again once that instance's results are out and old enough).

Each pruned study is audited (``pruned``: files, bytes, folders). The database rows (events,
analyses, deliveries) stay: the audit log, the worklist and the cohort export keep working; the
SEG files that ``validate --audit`` reads for masks go with the outbox. ``Pruner`` runs as a thread
of ``dermnode serve`` (at most ``limit`` studies and ``max_seconds`` per pass) and backs
``dermnode prune`` (with ``--dry-run``).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import case, func, or_, select

from dermnode.dicom_templates.uids import check_uid
from dermnode.node.audit import AuditStore
from dermnode.node.schema import deliveries, events
from dermnode.node.settings import Settings
from dermnode.node.spool import SUFFIX, Spool

log = logging.getLogger("dermnode.retention")
PASS_EVERY_SECONDS = 600.0
STUDIES_PER_PASS = 100
SECONDS_PER_PASS = 60.0


@dataclass
class Pruned:
    """What one pass pruned (or, in a dry run, would prune)."""

    studies: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    kept_unanalysed: list[str] = field(default_factory=list)


def prunable_studies(audit: AuditStore, cutoff: datetime, limit: int) -> list[str]:
    """Studies whose every delivery was acknowledged before ``cutoff`` (UTC), that received nothing
    since and were not pruned since; oldest acknowledgement first, at most ``limit``."""
    owed = func.sum(case((deliveries.c.state != "sent", 1), else_=0))
    sent = (select(deliveries.c.study_uid, func.max(deliveries.c.sent_at).label("last_sent"))
            .group_by(deliveries.c.study_uid).having(owed == 0).subquery())

    def last(kind: str):  # noqa: ANN202 - a subquery: study_uid, at
        return (select(events.c.study_uid, func.max(events.c.at).label("at")).where(events.c.kind == kind)
                .group_by(events.c.study_uid).subquery())

    pruned, received = last("pruned"), last("received")
    query = (
        select(sent.c.study_uid)
        .outerjoin(pruned, pruned.c.study_uid == sent.c.study_uid)
        .outerjoin(received, received.c.study_uid == sent.c.study_uid)
        .where(sent.c.last_sent < cutoff,
               or_(pruned.c.at.is_(None), pruned.c.at < sent.c.last_sent),
               or_(received.c.at.is_(None), received.c.at < cutoff))
        .order_by(sent.c.last_sent).limit(limit)
    )
    with audit.engine.connect() as connection:
        return list(connection.execute(query).scalars())


def _size(folder: Path) -> tuple[int, int]:
    files = [path for path in folder.rglob("*") if path.is_file()] if folder.is_dir() else []
    return len(files), sum(path.stat().st_size for path in files)


class Pruner:
    """Prunes exported studies older than ``retention_days`` (see the module docstring).

    In serve it is given the SCP's ``spool``, whose duplicate index then forgets each pruned study;
    ``dermnode prune`` (another process) works on the folders alone.
    """

    def __init__(self, settings: Settings, audit: AuditStore, spool: Spool | None = None,
                 period: float = PASS_EVERY_SECONDS) -> None:
        self.settings = settings
        self.audit = audit
        self.spool = spool
        self.period = period
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, older_than_days: float | None = None, limit: int = STUDIES_PER_PASS,
                 max_seconds: float = SECONDS_PER_PASS, dry_run: bool = False) -> Pruned:
        """One pass: prune (or with ``dry_run`` only list) up to ``limit`` studies, for at most ``max_seconds``."""
        days = self.settings.retention_days if older_than_days is None else older_than_days
        report = Pruned()
        if days <= 0:
            return report
        cutoff = datetime.now(timezone.utc) - timedelta(days=days)
        deadline = time.monotonic() + max_seconds
        for study_uid in prunable_studies(self.audit, cutoff, limit):
            if time.monotonic() > deadline:
                break
            spooled = (self.settings.spool_dir / check_uid(study_uid, "Study Instance UID")).glob(f"*{SUFFIX}")
            unanalysed = {path.stem for path in spooled} - self.audit.analysed_images(study_uid)
            if unanalysed:
                report.kept_unanalysed.append(study_uid)
                continue
            folders = self._folders(study_uid)
            files = size = 0
            for folder in folders:
                count, total = _size(folder)
                files, size = files + count, size + total
            if not dry_run:
                self._prune(study_uid, folders, files, size, days)
            report.studies.append(study_uid)
            report.files += files
            report.bytes += size
        return report

    def _folders(self, study_uid: str) -> list[Path]:
        """The study's folders that exist, in the spool, the outbox and the results folder."""
        name = check_uid(study_uid, "Study Instance UID")
        roots = (self.settings.spool_dir, self.settings.outbox_dir, self.settings.results_dir)
        return [root / name for root in roots if (root / name).is_dir()]

    def _prune(self, study_uid: str, folders: list[Path], files: int, size: int, days: float) -> None:
        """Remove the folders (an error ends the pass before the audit event: the next pass tries again)."""
        if self.spool is not None:
            self.spool.forget(study_uid)
        for folder in folders:
            shutil.rmtree(folder)
        self.audit.record("pruned", study_uid, files=files, bytes=size, older_than_days=days,
                          folders=[str(folder.relative_to(self.settings.home)) for folder in folders])
        log.info("study %s: %d files (%.1f MiB) pruned, exported more than %g days ago", study_uid, files,
                 size / 2**20, days)

    # ------------------------------------------------------------------------------ thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dermnode-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=SECONDS_PER_PASS + 10)

    def _run(self) -> None:
        while not self._stopping.wait(self.period):
            try:
                self.run_once()
            except Exception as error:  # noqa: BLE001 - database or disk trouble: try on the next pass
                log.warning("retention pass failed (%s: %s); next pass in %.0f s", type(error).__name__, error,
                            self.period)
