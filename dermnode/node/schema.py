"""The node's database tables (SQLAlchemy 2 Core): audit events, analyses, study keys, deliveries.

SQLite is the default (WAL mode, busy timeout); any SQLAlchemy URL works, e.g.
``postgresql+psycopg://user@host/dbname``.

``make_engine`` creates missing tables and brings a database made by an earlier version up to date
(``migrate``): the hash-chain columns of ``events`` (earlier rows stay unchained, see audit_chain.py),
the idempotency key of ``analyses`` with its one-row-per-image index, and the chain head row.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    insert,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

metadata = MetaData()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


#: Everything that happened, in order: received, duplicate, rejected, queued, analysed, sent, failed, error...
events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("kind", String(32), nullable=False, index=True),
    Column("study_uid", String(64), index=True),
    Column("sop_instance_uid", String(64), index=True),
    Column("details", JSON, nullable=False, default=dict),
    # The hash chain (audit_chain.py): the previous event's hash, and this event's.
    Column("prev_hash", String(80)),
    Column("hash", String(80)),
)

CHAIN_HEAD_ID = 1
#: The head of the hash chain: one row (id 1), the last chained event and its hash. Appending
#: locks this row, which serialises writers of every process.
chain_head = Table(
    "chain_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("event_id", Integer),
    Column("hash", String(80)),
)

#: One row per analysed source image (the cohort export reads these).
analyses = Table(
    "analyses",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("study_uid", String(64), index=True),
    Column("sop_instance_uid", String(64), index=True),
    Column("status", String(16), nullable=False),
    Column("header", JSON, nullable=False),
    Column("result", JSON, nullable=False),
    Column("result_uids", JSON, nullable=False),
    Column("idempotency_key", String(128)),
)
#: One analysed row per image. Rows written before the key column existed (NULL key) are left as
#: they are, duplicates included; every row written since has a key.
ONE_ANALYSIS_PER_IMAGE = Index(
    "one_analysis_per_image",
    analyses.c.sop_instance_uid,
    unique=True,
    sqlite_where=analyses.c.idempotency_key.is_not(None),
    postgresql_where=analyses.c.idempotency_key.is_not(None),
)
#: Columns added since the first release: (table, column) -> SQL type, for ``migrate``.
_ADDED_COLUMNS = {("events", "prev_hash"): "VARCHAR(80)", ("events", "hash"): "VARCHAR(80)",
                  ("analyses", "idempotency_key"): "VARCHAR(128)"}

#: Idempotency keys: "enqueue:<key>" when a study went on the queue, "outbox:<key>" when results went out;
#: also "cancel:<study UID>" (state "cancelled") for a study an operator cancelled (node/actions.py).
study_keys = Table(
    "study_keys",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("study_uid", String(64), index=True),
    Column("state", String(16), nullable=False),
    Column("task_id", String(64)),
    Column("updated_at", DateTime(timezone=True), nullable=False, default=utcnow),
)

#: The outbox: one row per (result file, destination).
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_uid", String(64), index=True),
    Column("sop_instance_uid", String(64), nullable=False),
    Column("sop_class_uid", String(64), nullable=False),
    Column("path", Text, nullable=False),
    Column("destination", String(300), nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_try_at", Float, nullable=False, default=0.0),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("sent_at", DateTime(timezone=True)),
    UniqueConstraint("sop_instance_uid", "destination", name="one_delivery_per_destination"),
)


def cancel_key(study_uid: str) -> str:
    """The study_keys row that says an operator cancelled the study (state "cancelled")."""
    return f"cancel:{study_uid}"


def make_engine(database_url: str) -> Engine:
    """An engine with the tables created; SQLite gets WAL, NORMAL sync and a busy timeout."""
    if not database_url:
        raise ValueError("no database URL (Settings fills in SQLite under the home folder)")
    is_sqlite = database_url.startswith("sqlite")
    engine = create_engine(
        database_url,
        connect_args={"timeout": 30, "check_same_thread": False} if is_sqlite else {},
        pool_pre_ping=not is_sqlite,
    )
    if is_sqlite:
        @event.listens_for(engine, "connect")
        def _pragmas(connection, _record) -> None:  # noqa: ANN001 - DB-API connection
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        path = database_url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    metadata.create_all(engine)
    migrate(engine)
    return engine


def migrate(engine: Engine) -> None:
    """Add what an older database lacks (columns, the per-image index, the chain head row).

    Safe when several processes start at once: a column or row another one added first is fine.
    """
    for (table, column), sql_type in _ADDED_COLUMNS.items():
        if column not in {found["name"] for found in inspect(engine).get_columns(table)}:
            try:
                with engine.begin() as connection:
                    connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}"))
            except DBAPIError:
                if column not in {found["name"] for found in inspect(engine).get_columns(table)}:
                    raise
    try:
        ONE_ANALYSIS_PER_IMAGE.create(engine, checkfirst=True)
    except DBAPIError:
        if ONE_ANALYSIS_PER_IMAGE.name not in {found["name"] for found in inspect(engine).get_indexes("analyses")}:
            raise
    with engine.connect() as connection:
        present = connection.execute(select(chain_head.c.id)).first() is not None
    if not present:
        try:
            with engine.begin() as connection:
                connection.execute(insert(chain_head).values(id=CHAIN_HEAD_ID, event_id=None, hash=None))
        except IntegrityError:
            pass  # another process inserted it first

