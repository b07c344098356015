"""The audit log's hash chain: every event carries a hash over the previous event's hash and its own
canonical JSON, so that an edited, removed or inserted event shows.

* ``hash = "sha256:" + sha256(prev_hash + "\\n" + canonical JSON)``, or with ``audit_hmac_key`` set,
  ``"hmac-sha256:" + HMAC-SHA256(key, same text)``. A plain chain shows edits made without
  recomputing the hashes that follow; the HMAC also shows those made by someone without the key.
* Appending (``append``) first updates the one row of ``chain_head``: in SQLite that takes the
  database's write lock, in PostgreSQL the row's lock, so writers in every process (serve, workers)
  take turns and each event links to the one before it.
* Events written before the chain existed (a database from an earlier version) have no hash; they
  are counted as "unchained" by ``verify``, which checks everything after them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from dermnode.node.schema import CHAIN_HEAD_ID, chain_head, events

GENESIS = "0" * 64
SHA256, HMAC_SHA256 = "sha256", "hmac-sha256"
_BATCH = 1000


def _utc_text(at: datetime) -> str:
    """A timestamp as stored: UTC, microseconds, no zone (SQLite gives naive UTC back, PostgreSQL aware)."""
    if at.tzinfo is not None:
        at = at.astimezone(timezone.utc).replace(tzinfo=None)
    return at.isoformat(timespec="microseconds")


def canonical(event: dict[str, Any]) -> str:
    """The canonical JSON of an event's content (time, kind, UIDs, details), keys sorted, ASCII."""
    content = {
        "at": _utc_text(event["at"]),
        "kind": event["kind"],
        "study_uid": event["study_uid"],
        "sop_instance_uid": event["sop_instance_uid"],
        "details": event["details"],
    }
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def event_hash(prev_hash: str, event: dict[str, Any], key: str | None) -> str:
    """The chained hash of ``event`` after ``prev_hash`` (HMAC when ``key`` is given)."""
    message = f"{prev_hash}\n{canonical(event)}".encode()
    if key:
        return f"{HMAC_SHA256}:{hmac.new(key.encode(), message, hashlib.sha256).hexdigest()}"
    return f"{SHA256}:{hashlib.sha256(message).hexdigest()}"


def append(connection: Connection, event: dict[str, Any], key: str | None) -> int:
    """Insert ``event`` (at, kind, study_uid, sop_instance_uid, details) linked to the chain head;
    returns its id. Runs inside the caller's transaction, which holds the head until it commits."""
    head = chain_head.c.id == CHAIN_HEAD_ID
    connection.execute(update(chain_head).where(head).values(hash=chain_head.c.hash))  # take the lock
    prev_hash = connection.execute(select(chain_head.c.hash).where(head)).scalar() or GENESIS
    details = json.loads(json.dumps(event["details"], allow_nan=False))  # as it will read back
    values = dict(event, details=details)
    values.update(prev_hash=prev_hash, hash=event_hash(prev_hash, values, key))
    event_id = connection.execute(insert(events).values(**values)).inserted_primary_key[0]
    connection.execute(update(chain_head).where(head).values(event_id=event_id, hash=values["hash"]))
    return event_id


@dataclass
class ChainReport:
    """What ``verify`` found: events seen, how many before the chain began, how many chained with a
    plain hash although a key was given (written by a process without the key), the first broken link."""

    events: int = 0
    unchained: int = 0
    unsigned: int = 0
    broken_at: int | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.problem is None


def _check(row: Any, previous: Any, key: str | None) -> str | None:
    """What is wrong with the link from ``previous`` (None at the chain's start) to ``row``, or None."""
    expected_prev = previous.hash if previous is not None else GENESIS
    if row.hash is None:
        return (f"event {row.id} ({row.kind}) has no hash but follows chained events: written "
                "outside the audit store, or its hash was removed")
    if row.prev_hash != expected_prev:
        before = f"event {previous.id}" if previous is not None else "the start of the chain"
        return (f"event {row.id} ({row.kind}) links to {str(row.prev_hash)[:24]}..., but {before} has "
                f"{expected_prev[:24]}...: an event between them was removed or its hash changed")
    algorithm = row.hash.split(":", 1)[0]
    if algorithm == HMAC_SHA256 and not key:
        return f"event {row.id} ({row.kind}) is signed with an HMAC: set audit_hmac_key to verify it"
    recomputed = event_hash(row.prev_hash, row._mapping, key if algorithm == HMAC_SHA256 else None)
    if recomputed != row.hash:
        return (f"event {row.id} ({row.kind}) differs from what was hashed when it was written "
                f"(its time, kind, UIDs or details were edited)")
    return None


def verify(engine: Engine, key: str | None = None) -> ChainReport:
    """Walk the events in id order and report the first broken link (see ChainReport)."""
    report = ChainReport()
    previous = None
    last_id = 0
    with engine.connect() as connection:
        while True:
            rows = connection.execute(select(events).where(events.c.id > last_id).order_by(events.c.id)
                                      .limit(_BATCH)).all()
            for row in rows:
                report.events += 1
                if previous is None and row.hash is None:
                    report.unchained += 1
                    continue
                problem = _check(row, previous, key)
                if problem is not None:
                    report.broken_at, report.problem = row.id, problem
                    return report
                report.unsigned += bool(key) and row.hash.startswith(f"{SHA256}:")
                previous = row
            if len(rows) < _BATCH:
                break
            last_id = rows[-1].id
        head = connection.execute(select(chain_head).where(chain_head.c.id == CHAIN_HEAD_ID)).first()
    if head is not None and head.event_id is not None:
        last = previous.id if previous is not None else None
        if previous is None or head.event_id != last or head.hash != previous.hash:
            report.broken_at = head.event_id
            report.problem = (f"the chain ends at event {last}, but its head names event {head.event_id}: "
                              "events were removed from the end")
    return report
