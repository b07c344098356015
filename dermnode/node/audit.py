"""The audit store: every event of the node in a database, and the cohort rows for validation.

``record`` writes one event (received, duplicate, rejected, queued, analysed, sent, failed, error,
...), hash-chained to the one before (audit_chain.py; ``verify_chain`` checks the chain);
``record_analysis`` writes what the models concluded about one image, once per image;
``analysed_rows`` gives one flat row per analysed image, the columns of ``dermnode audit export --csv``.
``open_existing`` opens the store for commands that only read it, refusing to create a new database.
"""

from __future__ import annotations

import csv
import threading
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import Connection, Integer, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from dermnode.contract import CLASS_CODES, LesionAnalysis
from dermnode.errors import UserError
from dermnode.node import audit_chain
from dermnode.node.schema import analyses, deliveries, events, make_engine, study_keys, utcnow
from dermnode.node.settings import mask_url

#: Names accepted in ``source_header`` (snake case), with the DICOM keywords that may stand for them.
HEADER_FIELDS: dict[str, str] = {
    "study_uid": "StudyInstanceUID",
    "series_uid": "SeriesInstanceUID",
    "sop_instance_uid": "SOPInstanceUID",
    "accession_number": "AccessionNumber",
    "patient_id": "PatientID",
    "age": "PatientAge",
    "sex": "PatientSex",
    "anatomic_site": "BodyPartExamined",
}
FIXED_COLUMNS = (
    ["study_uid", "series_uid", "sop_instance_uid", "accession_number", "patient_id", "calling_ae",
     "received_at", "analysed_at", "status", "failure_reason", "top_class"]
    + [f"p_{code}" for code in CLASS_CODES]
    + ["malignancy_probability", "veto", "veto_threshold", "bcc_probability", "bcc_sk_call",
       "segmentation_confidence", "lesion_area", "lesion_area_unit", "age", "sex", "anatomic_site",
       "seg_sop_uid", "sr_sop_uid", "kos_sop_uid"]
)


def source_header(ds: Any, metadata: Any = None) -> dict[str, Any]:
    """The header dict for record_analysis from a source dataset and its PatientMetadata."""
    header = {name: str(getattr(ds, keyword, "") or "") for name, keyword in HEADER_FIELDS.items()}
    if metadata is not None:
        header.update(age=metadata.age, sex=metadata.sex, anatomic_site=metadata.anatomic_site)
    return header


def analysis_summary(analysis: LesionAnalysis) -> dict[str, Any]:
    """The plain, JSON-ready content of a LesionAnalysis (without the mask)."""
    return {
        "status": analysis.status.value if hasattr(analysis.status, "value") else str(analysis.status),
        "failure_reason": analysis.failure_reason,
        "top_class": analysis.top_class,
        "probabilities": {k: float(v) for k, v in analysis.probabilities.items()},
        "malignancy_probability": analysis.malignancy_probability,
        "veto": analysis.veto,
        "veto_threshold": analysis.veto_threshold,
        "bcc_probability": analysis.bcc_probability,
        "bcc_sk_call": analysis.bcc_sk_call,
        "segmentation_confidence": analysis.segmentation_confidence,
        "lesion_area": analysis.lesion_area,
        "lesion_area_unit": analysis.lesion_area_unit,
        "radiomics": {k: float(v) for k, v in analysis.radiomics.items()},
        "models": [{"name": m.name, "version": m.version, "sha256": m.sha256} for m in analysis.models],
        "seconds": {k: float(v) for k, v in analysis.seconds.items()},
    }


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


class AuditStore:
    """The node's database. Thread-safe; one per process (``AuditStore.from_settings(settings)``)."""

    def __init__(self, database_url: str, hmac_key: str | None = None) -> None:
        self.database_url = database_url
        self.engine = make_engine(database_url)
        self.hmac_key = hmac_key or None
        self._lock = threading.Lock() if database_url.startswith("sqlite") else None

    @classmethod
    def from_settings(cls, settings: Any) -> AuditStore:
        """The store of ``settings.database_url``, signing events with ``audit_hmac_key`` when set."""
        return cls(settings.database_url, getattr(settings, "audit_hmac_key", None))

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection in a transaction (writers of one SQLite file in this process take turns)."""
        if self._lock is None:
            with self.engine.begin() as connection:
                yield connection
            return
        with self._lock, self.engine.begin() as connection:
            yield connection

    def execute(self, statement: Any, parameters: Any = None) -> Any:
        """Run one writing statement (optionally with a list of rows) in its own transaction."""
        with self.transaction() as connection:
            return connection.execute(statement, parameters)

    # ------------------------------------------------------------------------------- events
    def record(self, kind: str, study_uid: str | None = None, sop_instance_uid: str | None = None, **details: Any) -> None:
        """One audit event; ``details`` must be JSON-serialisable (calling_ae, reason, destination...)."""
        with self.transaction() as connection:
            self._append(connection, kind, study_uid, sop_instance_uid, details)

    def _append(self, connection: Connection, kind: str, study_uid: str | None, sop_instance_uid: str | None,
                details: dict[str, Any]) -> None:
        audit_chain.append(connection, {"at": utcnow(), "kind": kind, "study_uid": study_uid,
                                        "sop_instance_uid": sop_instance_uid, "details": details}, self.hmac_key)

    def verify_chain(self) -> audit_chain.ChainReport:
        """Walk the hash chain of the events (see audit_chain.verify)."""
        return audit_chain.verify(self.engine, self.hmac_key)

    def record_analysis(self, source_header: dict, analysis: LesionAnalysis, result_uids: dict, *,
                        idempotency_key: str) -> bool:
        """What the node concluded about one image, with the UIDs of the SEG/SR/KOS it made, and its
        ``analysed`` event. Once per image: False (nothing written) when the image has a row already."""
        header = {name: source_header.get(name, source_header.get(keyword)) for name, keyword in HEADER_FIELDS.items()}
        uids = {kind: result_uids.get(kind) or result_uids.get(f"{kind}_sop_uid") for kind in ("seg", "sr", "kos")}
        summary = analysis_summary(analysis)
        row = dict(at=utcnow(), study_uid=header["study_uid"], sop_instance_uid=header["sop_instance_uid"],
                   status=summary["status"], header=header, result=summary, result_uids=uids,
                   idempotency_key=idempotency_key)
        event_details = {key: summary[key] for key in (
            "status", "failure_reason", "top_class", "probabilities", "malignancy_probability", "veto",
            "veto_threshold", "bcc_probability", "bcc_sk_call", "models", "seconds")}
        with self.transaction() as connection:
            if not self._insert_analysis(connection, row):
                return False
            self._append(connection, "analysed", header["study_uid"], header["sop_instance_uid"],
                         dict(event_details, result_uids=uids, idempotency_key=idempotency_key))
        return True

    def _insert_analysis(self, connection: Connection, row: dict[str, Any]) -> bool:
        """Insert an analyses row unless its image has a keyed one (SQLite or PostgreSQL); True if inserted."""
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(analyses).values(**row).on_conflict_do_nothing(
            index_elements=[analyses.c.sop_instance_uid], index_where=analyses.c.idempotency_key.is_not(None)
        ).returning(analyses.c.id)
        return connection.execute(statement).first() is not None

    def analysed_images(self, study_uid: str) -> set[str]:
        """SOP Instance UIDs of the study's images that have an analysed row (results were made)."""
        with self.engine.connect() as connection:
            return set(connection.execute(select(analyses.c.sop_instance_uid)
                                          .where(analyses.c.study_uid == study_uid)).scalars())

    def events(self, study_uid: str | None = None, kind: str | None = None) -> list[dict]:
        """Events in order, for one study or all, optionally of one kind."""
        query = select(events).order_by(events.c.id)
        if study_uid is not None:
            query = query.where(events.c.study_uid == study_uid)
        if kind is not None:
            query = query.where(events.c.kind == kind)
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def deliveries(self, study_uid: str | None = None) -> list[dict]:
        """Outbox rows (result object x destination) with state, attempts and last error."""
        query = select(deliveries).order_by(deliveries.c.id)
        if study_uid is not None:
            query = query.where(deliveries.c.study_uid == study_uid)
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def studies(self) -> list[dict]:
        """One summary per study: instances received, last event, analyses, veto, models, deliveries."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(events.c.study_uid, func.min(events.c.at), func.max(events.c.id),
                       func.sum((events.c.kind == "received").cast(Integer)))
                .where(events.c.study_uid.is_not(None)).group_by(events.c.study_uid)
                .order_by(func.min(events.c.at))
            ).all()
            latest = select(func.max(events.c.id)).where(events.c.study_uid.is_not(None)).group_by(events.c.study_uid)
            last = {r.id: r for r in connection.execute(
                select(events.c.id, events.c.kind, events.c.at).where(events.c.id.in_(latest.scalar_subquery()))
            )}
            results: dict[str, list] = {}
            for row in connection.execute(select(analyses.c.study_uid, analyses.c.result)):
                results.setdefault(row.study_uid, []).append(row.result)
            sent = dict(connection.execute(
                select(deliveries.c.study_uid, func.count()).where(deliveries.c.state == "sent")
                .group_by(deliveries.c.study_uid)).all())
            waiting = dict(connection.execute(
                select(deliveries.c.study_uid, func.count()).where(deliveries.c.state == "pending")
                .group_by(deliveries.c.study_uid)).all())
        summaries = []
        for study_uid, first_at, last_id, received in rows:
            found = results.get(study_uid, [])
            models = sorted({f"{m['name']} {m['version']}" for r in found for m in r["models"]})
            summaries.append({
                "study_uid": study_uid,
                "first_at": first_at,
                "received": int(received or 0),
                "last_event": last[last_id].kind,
                "last_at": last[last_id].at,
                "analysed": len(found),
                "veto": any(r["veto"] for r in found),
                "models": ", ".join(models),
                "sent": int(sent.get(study_uid, 0)),
                "waiting": int(waiting.get(study_uid, 0)),
            })
        return summaries

    # ------------------------------------------------------------------------ cohort export
    def analysed_rows(self) -> list[dict]:
        """One row per analysed image with the columns of the cohort CSV (see FIXED_COLUMNS)."""
        with self.engine.connect() as connection:
            found = connection.execute(select(analyses).order_by(analyses.c.id)).all()
            received = {}
            for row in connection.execute(
                select(events.c.sop_instance_uid, events.c.at, events.c.details)
                .where(events.c.kind == "received").order_by(events.c.id)
            ):
                received.setdefault(row.sop_instance_uid, row)
            acknowledged: dict[str, set[str]] = {}
            pending: dict[str, set[str]] = {}
            for row in connection.execute(select(deliveries.c.sop_instance_uid, deliveries.c.destination, deliveries.c.state)):
                target = acknowledged if row.state == "sent" else pending
                target.setdefault(row.sop_instance_uid, set()).add(row.destination)
        model_names = sorted({m["name"] for row in found for m in row.result["models"]})
        stages = sorted({stage for row in found for stage in row.result["seconds"]})
        rows = []
        for row in found:
            header, result, uids = row.header, row.result, row.result_uids
            arrival = received.get(header.get("sop_instance_uid"))
            out: dict[str, Any] = {name: header.get(name) for name in
                                   ("study_uid", "series_uid", "sop_instance_uid", "accession_number", "patient_id")}
            out.update(
                calling_ae=arrival.details.get("calling_ae") if arrival else None,
                received_at=_iso(arrival.at) if arrival else "",
                analysed_at=_iso(row.at),
            )
            for key in ("status", "failure_reason", "top_class"):
                out[key] = result.get(key)
            for code in CLASS_CODES:
                out[f"p_{code}"] = result["probabilities"].get(code)
            for key in ("malignancy_probability", "veto", "veto_threshold", "bcc_probability", "bcc_sk_call",
                        "segmentation_confidence", "lesion_area", "lesion_area_unit"):
                out[key] = result.get(key)
            for key in ("age", "sex", "anatomic_site"):
                out[key] = header.get(key)
            for kind in ("seg", "sr", "kos"):
                out[f"{kind}_sop_uid"] = uids.get(kind)
            models = {m["name"]: m for m in result["models"]}
            for name in model_names:
                out[f"model_{name}_version"] = models.get(name, {}).get("version")
                out[f"model_{name}_sha256"] = models.get(name, {}).get("sha256")
            for stage in stages:
                out[f"seconds_{stage}"] = result["seconds"].get(stage)
            objects = [uid for uid in uids.values() if uid]
            sent_to = set.intersection(*(acknowledged.get(uid, set()) for uid in objects)) if objects else set()
            out["sent_to"] = ";".join(sorted(sent_to))
            rows.append(out)
        return rows

    # ---------------------------------------------------------------------- idempotency keys
    def key_state(self, key: str) -> str | None:
        with self.engine.connect() as connection:
            return connection.execute(select(study_keys.c.state).where(study_keys.c.key == key)).scalar()

    def claim_key(self, key: str, study_uid: str) -> bool:
        """Take a key for work on a study: True if it is new (or an earlier claim never finished)."""
        try:
            self.execute(insert(study_keys).values(key=key, study_uid=study_uid, state="pending", updated_at=utcnow()))
            return True
        except IntegrityError:
            return self.key_state(key) == "pending"

    def mark_key(self, key: str, state: str, task_id: str | None = None) -> None:
        self.execute(update(study_keys).where(study_keys.c.key == key)
                    .values(state=state, task_id=task_id, updated_at=utcnow()))


def open_existing(database_url: str, hmac_key: str | None = None) -> AuditStore:
    """The store of an existing database, for the commands that read it; UserError, in one sentence,
    when the URL cannot be parsed, names a SQLite file that does not exist (a wrong home folder would
    otherwise get a new, empty database) or a server that cannot be reached."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    shown = mask_url(database_url)
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise UserError(f"the database URL {shown!r} cannot be parsed; examples: sqlite:///path/to/dermnode.db, "
                        "postgresql+psycopg://user@host/dbname") from None
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") \
            and not Path(url.database).is_file():
        raise UserError(f"no audit database at {url.database}: is DERMNODE_HOME (or --config) the node's home "
                        "folder, and has `dermnode serve` run there?")
    try:
        return AuditStore(database_url, hmac_key)
    except (SQLAlchemyError, ImportError) as error:  # a server down or refusing us, a driver not installed
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"the database {shown!r} cannot be opened: {mask_url(reason)}") from None


def write_csv(rows: list[dict], path: Path) -> None:
    """Rows as CSV with a header line (the columns of the first row, then any others in order seen)."""
    columns = list(FIXED_COLUMNS)
    for row in rows:
        columns += [name for name in row if name not in columns]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if value is None else value for key, value in row.items()})
