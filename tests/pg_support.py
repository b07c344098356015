"""PostgreSQL for the tests: a throwaway cluster started from the Debian ``postgresql`` binaries.

``postgres_server`` (session fixture) starts one private server on a free loopback port for the
whole run (``dermnode.local_postgres``) and stops it at the end; ``postgres_schema_url(server)``
gives each test its own schema, dropped afterwards. Without the binaries or the psycopg driver the
tests that ask for it are skipped with the reason.
"""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest
from sqlalchemy import create_engine, text

from dermnode.local_postgres import PostgresCluster, PostgresUnavailable, check_available, postgres_cluster


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresCluster]:
    pytest.importorskip("psycopg", reason="the PostgreSQL driver psycopg is not installed (extra: postgres)")
    try:
        check_available()
    except PostgresUnavailable as exc:
        pytest.skip(f"{exc} (CI installs it: see .ci/run)")
    with postgres_cluster(fsync=False) as server:
        yield server


def postgres_schema_url(server: PostgresCluster) -> Iterator[str]:
    """A URL whose search_path is a fresh schema of ``server``; the schema is dropped afterwards."""
    schema = f"dermnode_test_{uuid.uuid4().hex[:8]}"
    engine = create_engine(server.url, connect_args={"connect_timeout": 5})
    with engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{server.url}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()
