"""dermnode.local_postgres: a private PostgreSQL that the audit store can use, gone afterwards."""

from __future__ import annotations

import os
import socket

import psutil
import pytest
from sqlalchemy import create_engine, text

from dermnode.local_postgres import PostgresUnavailable, check_available, postgres_cluster


def test_a_throwaway_cluster_serves_sql_on_loopback_and_leaves_nothing_behind() -> None:
    pytest.importorskip("psycopg", reason="the PostgreSQL driver psycopg is not installed (extra: postgres)")
    try:
        check_available()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    with postgres_cluster(fsync=False) as cluster:
        engine = create_engine(cluster.url)
        with engine.connect() as connection:
            assert connection.execute(text("select current_database()")).scalar() == "dermnode"
        engine.dispose()
        postmaster = next(p for p in psutil.process_iter(["cmdline", "uids"])
                          if str(cluster.directory) in " ".join(p.info["cmdline"] or []))
        if os.geteuid() == 0:
            assert postmaster.info["uids"].real != 0, "initdb and postgres must not run as root"
        listening = {c.laddr.ip for c in postmaster.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        assert listening == {"127.0.0.1"}
    assert not cluster.directory.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", cluster.port), timeout=2).close()
