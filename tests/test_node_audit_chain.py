"""The audit log's hash chain: edits, removals and foreign rows show in `dermnode audit verify`;
writers in several processes keep one chain; a database from before the chain is migrated."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from dermnode.cli import app
from dermnode.node.audit import AuditStore
from pg_support import postgres_schema_url, postgres_server  # noqa: F401 - the fixture

WRITERS, EVENTS_PER_WRITER = 3, 40


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.db'}"
        return
    yield from postgres_schema_url(request.getfixturevalue("postgres_server"))


def _events(store: AuditStore, count: int, writer: int = 0) -> None:
    for n in range(count):
        store.record("received", f"1.2.{writer}", f"1.2.{writer}.{n}", calling_ae="PACS", size=n, ratio=n / 7)


def _write(database_url: str, writer: int) -> None:
    store = AuditStore(database_url)
    _events(store, EVENTS_PER_WRITER, writer)
    store.close()


def _verify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str | None = None):
    monkeypatch.setenv("DERMNODE_HOME", str(tmp_path))
    monkeypatch.delenv("DERMNODE_DATABASE_URL", raising=False)
    monkeypatch.delenv("DERMNODE_CONFIG", raising=False)
    if key is None:
        monkeypatch.delenv("DERMNODE_AUDIT_HMAC_KEY", raising=False)
    else:
        monkeypatch.setenv("DERMNODE_AUDIT_HMAC_KEY", key)
    return CliRunner().invoke(app, ["audit", "verify"])


def _sql(tmp_path: Path, statement: str) -> None:
    with sqlite3.connect(tmp_path / "dermnode.db") as connection:
        connection.execute(statement)


def test_an_intact_chain_verifies_with_a_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _events(AuditStore(f"sqlite:///{tmp_path / 'dermnode.db'}"), 5)
    result = _verify(tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "intact: 5 events verified" in result.output


def test_an_edited_event_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _events(AuditStore(f"sqlite:///{tmp_path / 'dermnode.db'}"), 5)
    _sql(tmp_path, "UPDATE events SET details = json_set(details, '$.calling_ae', 'OTHER') WHERE id = 3")
    result = _verify(tmp_path, monkeypatch)
    assert result.exit_code == 1
    assert "broken at event 3" in result.output and "edited" in result.output


def test_a_removed_event_breaks_the_next_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _events(AuditStore(f"sqlite:///{tmp_path / 'dermnode.db'}"), 5)
    _sql(tmp_path, "DELETE FROM events WHERE id = 2")
    result = _verify(tmp_path, monkeypatch)
    assert result.exit_code == 1 and "broken at event 3" in result.output and "removed" in result.output


def test_removing_the_last_events_shows_at_the_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _events(AuditStore(f"sqlite:///{tmp_path / 'dermnode.db'}"), 5)
    _sql(tmp_path, "DELETE FROM events WHERE id >= 4")
    result = _verify(tmp_path, monkeypatch)
    assert result.exit_code == 1 and "head names event 5" in result.output


def test_a_row_written_behind_the_store_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _events(AuditStore(f"sqlite:///{tmp_path / 'dermnode.db'}"), 2)
    _sql(tmp_path, "INSERT INTO events (at, kind, details) VALUES ('2024-01-01 00:00:00.000000', 'sent', '{}')")
    result = _verify(tmp_path, monkeypatch)
    assert result.exit_code == 1 and "broken at event 3" in result.output and "no hash" in result.output


def test_hmac_signed_chain_needs_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = AuditStore(f"sqlite:///{tmp_path / 'dermnode.db'}", hmac_key="secret one")
    _events(store, 3)
    assert _verify(tmp_path, monkeypatch, key="secret one").exit_code == 0
    without = _verify(tmp_path, monkeypatch)
    assert without.exit_code == 1 and "audit_hmac_key" in without.output
    wrong = _verify(tmp_path, monkeypatch, key="secret two")
    assert wrong.exit_code == 1 and "broken at event 1" in wrong.output


def test_events_written_without_the_key_are_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'dermnode.db'}"
    _events(AuditStore(url, hmac_key="secret"), 2)
    _events(AuditStore(url), 1)
    result = _verify(tmp_path, monkeypatch, key="secret")
    assert result.exit_code == 0 and "1 events carry a plain SHA-256 link" in result.output


def test_config_check_does_not_print_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DERMNODE_HOME", str(tmp_path))
    monkeypatch.setenv("DERMNODE_AUDIT_HMAC_KEY", "do-not-print-me")
    result = CliRunner().invoke(app, ["config", "check"])
    assert "do-not-print-me" not in result.output and "audit_hmac_key = (set)" in result.output


def test_writers_in_several_processes_keep_one_chain(database_url: str) -> None:
    AuditStore(database_url).close()  # tables made once, before the writers race
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write, args=(database_url, n)) for n in range(WRITERS)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
        assert writer.exitcode == 0
    store = AuditStore(database_url)
    report = store.verify_chain()
    assert report.intact, report.problem
    assert report.events == WRITERS * EVENTS_PER_WRITER and report.unchained == 0
    store.close()


def test_a_database_from_before_the_chain_is_migrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Old events stay, reported unchained; old duplicate analysed rows stay; new rows are chained and keyed."""
    _sql(tmp_path, "CREATE TABLE events (id INTEGER PRIMARY KEY, at DATETIME NOT NULL, kind VARCHAR(32) NOT NULL, "
                   "study_uid VARCHAR(64), sop_instance_uid VARCHAR(64), details JSON NOT NULL)")
    _sql(tmp_path, "CREATE TABLE analyses (id INTEGER PRIMARY KEY, at DATETIME NOT NULL, study_uid VARCHAR(64), "
                   "sop_instance_uid VARCHAR(64), status VARCHAR(16) NOT NULL, header JSON NOT NULL, "
                   "result JSON NOT NULL, result_uids JSON NOT NULL)")
    for n in range(2):
        _sql(tmp_path, "INSERT INTO events (at, kind, details) VALUES ('2024-01-01 00:00:00.000000', 'received', '{}')")
        _sql(tmp_path, "INSERT INTO analyses (at, sop_instance_uid, status, header, result, result_uids) "
                       "VALUES ('2024-01-01 00:00:00.000000', '1.2.3', 'analysed', '{}', '{}', '{}')")
    store = AuditStore(f"sqlite:///{tmp_path / 'dermnode.db'}")
    _events(store, 3)
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM analyses WHERE sop_instance_uid = '1.2.3'")).scalar() == 2
    result = _verify(tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "3 events verified (2 written before the chain began, unchained)" in result.output
