"""What an operator may do to the node's work, from the web API or the command line, each audited with who.

* ``requeue``: a study that still owes results (stuck, failed, abandoned by the reconciler, or
  cancelled) is put back on the queue: its current content key goes back to ``pending``, which the
  running node's assembler queues (at once when the web API asks, through ``nudge``; within
  ``reconcile_seconds`` when the command line asks).
* ``retry``: the deliveries to a destination that gave up or are waiting for their back-off are due
  again now, their attempts counted afresh; the dispatcher picks them up on its next pass.
* ``cancel``: a study is neither queued nor analysed nor exported any more: its waiting deliveries
  become ``cancelled``, its keys too, and workers and the assembler skip it (``cancel_key``).
  Requeueing it lifts the cancellation (and its cancelled deliveries wait again).

Every action records one event per study (``requeue_requested``, ``retry_requested``,
``cancelled``) with ``by``: the user or command that asked.
"""

from __future__ import annotations

from typing import Callable

from sqlalchemy import delete, insert, select, update

from dermnode.dicom_templates.uids import InvalidUID, check_uid
from dermnode.node.assemble import idempotency_key
from dermnode.node.audit import AuditStore
from dermnode.node.schema import cancel_key, deliveries, study_keys, utcnow
from dermnode.node.settings import Settings
from dermnode.node.studies import destination_matches


class ActionRefused(ValueError):
    """The action does not apply (unknown study, nothing owed, nothing to retry); the message says why."""


class UnknownStudy(ActionRefused):
    """No study with that UID is spooled or audited."""


def _spooled(settings: Settings, study_uid: str) -> list[str]:
    try:
        folder = settings.spool_dir / check_uid(study_uid, "Study Instance UID")
    except InvalidUID as error:
        raise UnknownStudy(str(error)) from None
    return sorted(path.stem for path in folder.glob("*.dcm"))


def requeue(settings: Settings, audit: AuditStore, study_uid: str, by: str,
            nudge: Callable[[str], None] | None = None) -> str:
    """Queue a study that owes results again; returns its content key. ``nudge(study_uid)`` (the running
    assembler's ``note``) queues it at once."""
    spooled = _spooled(settings, study_uid)
    if not spooled:
        raise UnknownStudy(f"study {study_uid} has no spooled images (unknown, or pruned)")
    cancelled = audit.key_state(cancel_key(study_uid)) == "cancelled"
    if not cancelled and set(spooled) <= audit.analysed_images(study_uid):
        raise ActionRefused(f"every image of study {study_uid} has its results; nothing to requeue "
                            "(to send them again, retry its destination)")
    key = idempotency_key(study_uid, spooled)
    claim = f"enqueue:{key}"
    with audit.transaction() as connection:
        connection.execute(delete(study_keys).where(study_keys.c.key == cancel_key(study_uid)))
        if connection.execute(select(study_keys.c.key).where(study_keys.c.key == claim)).first() is None:
            connection.execute(insert(study_keys).values(key=claim, study_uid=study_uid, state="pending",
                                                         updated_at=utcnow()))
        else:
            connection.execute(update(study_keys).where(study_keys.c.key == claim)
                               .values(state="pending", updated_at=utcnow()))
        if cancelled:
            connection.execute(update(deliveries).where(deliveries.c.study_uid == study_uid,
                                                        deliveries.c.state == "cancelled")
                               .values(state="pending", next_try_at=0.0))
    audit.record("requeue_requested", study_uid, by=by, idempotency_key=key, lifted_cancellation=cancelled)
    if nudge is not None:
        nudge(study_uid)
    return key


def retry(audit: AuditStore, destination: str, by: str, study_uid: str | None = None) -> int:
    """Make the failed or waiting deliveries to ``destination`` (AE title or AE@host:port) due now;
    returns how many. Only one study's when ``study_uid`` is given."""
    query = select(deliveries.c.id, deliveries.c.study_uid, deliveries.c.destination, deliveries.c.state).where(
        deliveries.c.state.in_(("failed", "pending")))
    if study_uid is not None:
        query = query.where(deliveries.c.study_uid == study_uid)
    with audit.engine.connect() as connection:
        rows = [row for row in connection.execute(query) if destination_matches(row.destination, destination)]
    if not rows:
        scope = f" of study {study_uid}" if study_uid else ""
        raise ActionRefused(f"no failed or waiting deliveries{scope} to {destination}")
    audit.execute(update(deliveries).where(deliveries.c.id.in_([row.id for row in rows]))
                  .values(state="pending", next_try_at=0.0, attempts=0))
    by_study: dict[str, list] = {}
    for row in rows:
        by_study.setdefault(row.study_uid, []).append(row)
    for uid, found in by_study.items():
        audit.record("retry_requested", uid, by=by, destination=sorted({row.destination for row in found}),
                     deliveries=len(found), had_given_up=sum(1 for row in found if row.state == "failed"))
    return len(rows)


def cancel(audit: AuditStore, study_uid: str, by: str) -> int:
    """Stop all further work on a study; returns how many waiting deliveries were cancelled."""
    with audit.engine.connect() as connection:
        known = connection.execute(select(study_keys.c.key).where(study_keys.c.study_uid == study_uid)).first()
    if known is None and not audit.events(study_uid):
        raise UnknownStudy(f"no study {study_uid} in the audit log")
    if audit.key_state(cancel_key(study_uid)) == "cancelled":
        raise ActionRefused(f"study {study_uid} is cancelled already")
    with audit.transaction() as connection:
        stopped = connection.execute(update(deliveries).where(
            deliveries.c.study_uid == study_uid, deliveries.c.state.in_(("pending", "failed"))
        ).values(state="cancelled")).rowcount
        connection.execute(update(study_keys).where(
            study_keys.c.study_uid == study_uid, study_keys.c.key.like("enqueue:%"),
            study_keys.c.state.in_(("pending", "queued", "abandoned"))).values(state="cancelled", updated_at=utcnow()))
        connection.execute(insert(study_keys).values(key=cancel_key(study_uid), study_uid=study_uid,
                                                     state="cancelled", updated_at=utcnow()))
    audit.record("cancelled", study_uid, by=by, deliveries_cancelled=stopped)
    return stopped
