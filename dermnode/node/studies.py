"""The studies as an operator sees them: one summary per study with its state, its images' results
and the delivery state per destination, read from the audit store (events, analyses, deliveries).

A study's **state**, in the order the checks are made:

* ``cancelled``: an operator cancelled it (and did not requeue it since);
* some received image has no result yet: ``error`` (the last thing that happened to it was an
  error), ``queued`` (on the queue or being analysed) or ``receiving`` (in its quiet period);
* every image has a result: by its deliveries, ``failed`` (a delivery gave up), ``retrying`` (a
  destination refused or was unreachable, tried again with back-off), ``exporting`` (waiting),
  ``delivered`` (every destination acknowledged every object), or ``analysed`` (no destination).

Each destination has its own state, by the same words (``failed``, ``retrying``, ``pending``,
``sent``, ``cancelled``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydicom import dcmread
from sqlalchemy import func, select

from dermnode.dicom_templates.uids import InvalidUID, check_uid
from dermnode.node.audit import AuditStore
from dermnode.node.schema import analyses, deliveries, events
from dermnode.node.settings import Settings

STATES = ("receiving", "queued", "error", "analysed", "exporting", "retrying", "failed", "delivered", "cancelled")
DESTINATION_STATES = ("pending", "retrying", "failed", "sent", "cancelled")
#: Events that move a study along, by kind (the last of them decides between queued and error).
_PROGRESS = ("received", "queued", "requeued", "requeue_requested", "study_analysed", "error", "cancelled")


@dataclass
class StudyFilter:
    """What a worklist asks for; every field left None matches everything."""

    state: str | None = None
    veto: bool | None = None
    since: datetime | None = None
    until: datetime | None = None
    destination: str | None = None  # an AE title or AE@host:port
    destination_state: str | None = None
    patient_id: str | None = None
    accession_number: str | None = None

    def matches(self, study: dict[str, Any]) -> bool:
        if self.state is not None and study["state"] != self.state:
            return False
        if self.veto is not None and bool(study["veto"]) != self.veto:
            return False
        if self.since is not None and study["first_at"] < as_utc(self.since):
            return False
        if self.until is not None and study["first_at"] > as_utc(self.until):
            return False
        if self.patient_id is not None and study["patient_id"] != self.patient_id:
            return False
        if self.accession_number is not None and study["accession_number"] != self.accession_number:
            return False
        if self.destination is not None or self.destination_state is not None:
            states = [state for name, state in study["destinations"].items()
                      if self.destination is None or destination_matches(name, self.destination)]
            return bool(states) and (self.destination_state is None or self.destination_state in states)
        return True


def as_utc(moment: datetime) -> datetime:
    """A database time as an aware UTC datetime (SQLite gives them back naive)."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def destination_matches(destination: str, wanted: str) -> bool:
    """``wanted`` names ``destination`` (``AE@host:port``) by itself or by its AE title."""
    return wanted == destination or wanted == destination.split("@", 1)[0]


def destination_state(counts: dict[str, int], retrying: bool) -> str:
    """One destination's state for a study from its deliveries' states (counts by state)."""
    if counts.get("failed"):
        return "failed"
    if counts.get("pending"):
        return "retrying" if retrying else "pending"
    if counts.get("sent"):
        return "sent"
    return "cancelled"


def destination_states(audit: AuditStore, study_uid: str | None = None) -> dict[str, dict[str, str]]:
    """study UID -> {destination: state} for one study (or every study with deliveries), in the
    words of ``destination_state``: what `audit list/show` print and the web shows."""
    with audit.engine.connect() as connection:
        exports = StudyIndex._exports(connection, study_uid)
    return {uid: {name: destination_state(entry["counts"], bool(entry["last_error"])) for name, entry in sorted(found.items())}
            for uid, found in exports.items()}


class StudyIndex:
    """Reads studies from the audit store (and, for studies without results, the spooled headers)."""

    def __init__(self, settings: Settings, audit: AuditStore) -> None:
        self.settings = settings
        self.audit = audit

    # ---------------------------------------------------------------------------------- list
    def list(self, where: StudyFilter | None = None, limit: int = 200, offset: int = 0) -> tuple[list[dict], int]:
        """Summaries matching ``where``, vetoed first then newest first; and how many matched in all."""
        where = where or StudyFilter()
        found = [study for study in self.summaries() if where.matches(study)]
        found.sort(key=lambda s: (not s["veto"], -s["first_at"].timestamp()))
        return found[offset:offset + limit], len(found)

    def get(self, study_uid: str) -> dict | None:
        """One study's summary, or None when the node never heard of it."""
        found = self.summaries(study_uid)
        return found[0] if found else None

    def summaries(self, study_uid: str | None = None) -> list[dict]:
        """One summary per study (or for one study): see the module docstring for ``state``."""
        with self.audit.engine.connect() as connection:
            progress = self._progress(connection, study_uid)
            images = self._analyses(connection, study_uid)
            exports = self._exports(connection, study_uid)
        return [self._summary(uid, kinds, images.get(uid, []), exports.get(uid, {}))
                for uid, kinds in progress.items()]

    @staticmethod
    def _progress(connection: Any, study_uid: str | None) -> dict[str, dict[str, tuple]]:
        """study -> kind -> (count, last id, first at, last at) for the events that move studies along."""
        query = (select(events.c.study_uid, events.c.kind, func.count(), func.max(events.c.id), func.min(events.c.at),
                        func.max(events.c.at))
                 .where(events.c.study_uid.is_not(None), events.c.kind.in_(_PROGRESS))
                 .group_by(events.c.study_uid, events.c.kind))
        if study_uid is not None:
            query = query.where(events.c.study_uid == study_uid)
        found: dict[str, dict[str, tuple]] = {}
        for uid, kind, count, last_id, first_at, last_at in connection.execute(query):
            found.setdefault(uid, {})[kind] = (count, last_id, first_at, last_at)
        return found

    @staticmethod
    def _analyses(connection: Any, study_uid: str | None) -> dict[str, list[dict]]:
        query = select(analyses.c.study_uid, analyses.c.sop_instance_uid, analyses.c.status, analyses.c.header,
                       analyses.c.result, analyses.c.result_uids, analyses.c.at).order_by(analyses.c.id)
        if study_uid is not None:
            query = query.where(analyses.c.study_uid == study_uid)
        found: dict[str, list[dict]] = {}
        for row in connection.execute(query):
            found.setdefault(row.study_uid, []).append(dict(row._mapping))
        return found

    @staticmethod
    def _exports(connection: Any, study_uid: str | None) -> dict[str, dict[str, dict]]:
        """study -> destination -> {"counts": {state: n}, "attempts": max, "last_error": one of them}."""
        query = (select(deliveries.c.study_uid, deliveries.c.destination, deliveries.c.state, func.count(),
                        func.max(deliveries.c.attempts), func.max(deliveries.c.last_error))
                 .group_by(deliveries.c.study_uid, deliveries.c.destination, deliveries.c.state))
        if study_uid is not None:
            query = query.where(deliveries.c.study_uid == study_uid)
        found: dict[str, dict[str, dict]] = {}
        for uid, destination, state, count, attempts, last_error in connection.execute(query):
            entry = found.setdefault(uid, {}).setdefault(destination, {"counts": {}, "attempts": 0, "last_error": None})
            entry["counts"][state] = count
            entry["attempts"] = max(entry["attempts"], attempts or 0)
            if state != "sent" and last_error:
                entry["last_error"] = last_error
        return found

    def _summary(self, study_uid: str, kinds: dict[str, tuple], images: list[dict],
                 exports: dict[str, dict]) -> dict[str, Any]:
        last_id = {kind: values[1] for kind, values in kinds.items()}
        received = kinds.get("received", (0,))[0]
        first_at = as_utc(min(values[2] for values in kinds.values()))
        last_at = as_utc(max(values[3] for values in kinds.values()))
        results = [image["result"] for image in images]
        analysed = [r for r in results if r.get("status") == "analysed"]
        worst = max(analysed, key=lambda r: r.get("malignancy_probability") or 0.0, default=None)
        header = next((image["header"] for image in images if image["header"].get("patient_id") is not None), None)
        header = header or self._spooled_header(study_uid)
        destinations = {name: destination_state(entry["counts"], bool(entry["last_error"]))
                        for name, entry in sorted(exports.items())}
        return {
            "study_uid": study_uid,
            "patient_id": header.get("patient_id") or "",
            "accession_number": header.get("accession_number") or "",
            "first_at": first_at,
            "last_at": last_at,
            "state": self._state(last_id, not images or received > len(images), destinations),
            "instances": received,
            "images": len(images),
            "not_analysable": sum(1 for r in results if r.get("status") == "not_analysable"),
            "failed_images": sum(1 for r in results if r.get("status") == "failed"),
            "veto": any(r.get("veto") for r in analysed) if analysed else None,
            "top_class": worst.get("top_class") if worst else None,
            "malignancy_probability": worst.get("malignancy_probability") if worst else None,
            "bcc_sk_call": worst.get("bcc_sk_call") if worst else None,
            "key_image": next((image["sop_instance_uid"] for image in images if image["result"] is worst), None)
            if worst else (images[0]["sop_instance_uid"] if images else None),
            "destinations": destinations,
            "export_errors": {name: entry["last_error"] for name, entry in exports.items() if entry["last_error"]},
        }

    @staticmethod
    def _state(last_id: dict[str, int], owes_results: bool, destinations: dict[str, str]) -> str:
        if last_id.get("cancelled", 0) > last_id.get("requeue_requested", 0):
            return "cancelled"
        if owes_results:
            moved = max((last_id.get(kind, 0) for kind in ("queued", "requeued", "requeue_requested")), default=0)
            if last_id.get("error", 0) > moved:
                return "error"
            return "queued" if moved else "receiving"
        states = set(destinations.values())
        for state, study_state in (("failed", "failed"), ("retrying", "retrying"), ("pending", "exporting")):
            if state in states:
                return study_state
        return "delivered" if "sent" in states else "analysed"

    def _spooled_header(self, study_uid: str) -> dict[str, str]:
        """Patient ID and accession number from the first spooled file (a study without results yet)."""
        try:
            folder = self.settings.spool_dir / check_uid(study_uid, "Study Instance UID")
            first = min(folder.glob("*.dcm"), default=None)
            if first is None:
                return {}
            ds = dcmread(first, stop_before_pixels=True, specific_tags=["PatientID", "AccessionNumber"])
        except (InvalidUID, OSError, ValueError):
            return {}
        return {"patient_id": str(ds.get("PatientID", "") or ""), "accession_number": str(ds.get("AccessionNumber", "") or "")}

    # ---------------------------------------------------------------------- one study's parts
    def timeline(self, study_uid: str) -> list[dict]:
        """Every audit event of the study, in order."""
        return [{"id": e["id"], "at": as_utc(e["at"]), "kind": e["kind"], "sop_instance_uid": e["sop_instance_uid"],
                 "details": e["details"]} for e in self.audit.events(study_uid)]

    def images(self, study_uid: str) -> list[dict]:
        """The study's spooled images with their results (None for an image not analysed yet)."""
        rows = {row["sop_instance_uid"]: row for row in self._analyses_of(study_uid)}
        try:
            folder = self.settings.spool_dir / check_uid(study_uid, "Study Instance UID")
            spooled = sorted(path.stem for path in folder.glob("*.dcm"))
        except InvalidUID:
            spooled = []
        found = []
        for sop_uid in list(dict.fromkeys(spooled + list(rows))):
            row = rows.get(sop_uid)
            found.append({
                "sop_instance_uid": sop_uid,
                "spooled": sop_uid in spooled,
                "analysed_at": as_utc(row["at"]) if row else None,
                "result": row["result"] if row else None,
                "result_uids": row["result_uids"] if row else {},
            })
        return found

    def _analyses_of(self, study_uid: str) -> list[dict]:
        with self.audit.engine.connect() as connection:
            return self._analyses(connection, study_uid).get(study_uid, [])

    def source_path(self, study_uid: str, sop_uid: str) -> Path:
        """Where the spool keeps an image (it may have been pruned)."""
        return self.settings.spool_dir / check_uid(study_uid, "Study Instance UID") / f"{check_uid(sop_uid, 'SOP Instance UID')}.dcm"

    def seg_path(self, study_uid: str, sop_uid: str) -> Path | None:
        """The SEG file the node made for an image, when it made one (it may have been pruned since)."""
        for row in self._analyses_of(study_uid):
            if row["sop_instance_uid"] == sop_uid and row["result_uids"].get("seg"):
                return (self.settings.outbox_dir / check_uid(study_uid, "Study Instance UID")
                        / f"{check_uid(row['result_uids']['seg'], 'SOP Instance UID')}.dcm")
        return None
