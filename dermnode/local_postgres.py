"""A throwaway PostgreSQL cluster from the Debian ``postgresql`` binaries, for tests and benchmarks.

``postgres_cluster()`` runs ``initdb`` in a fresh temporary folder, starts ``postgres`` on a free
port of 127.0.0.1 (no Unix socket, trust authentication: only this machine's loopback reaches it),
creates the database ``dermnode`` and yields its SQLAlchemy URL; on leaving it stops the server
(fast shutdown, then SIGKILL) and removes the folder. initdb refuses to run as root, so as root the
cluster belongs to the ``postgres`` system user (else ``nobody``) and its commands run under
``setpriv``. Every wait is bounded.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from dermnode.local_processes import free_port

BIN_GLOB = "/usr/lib/postgresql/*/bin"
DATABASE = "dermnode"
USER = "dermnode"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here (Debian package ``postgresql``)."""


@dataclass(frozen=True)
class PostgresCluster:
    port: int
    directory: Path

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``dermnode`` database (driver psycopg)."""
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{DATABASE}"


def _version(bin_dir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in bin_dir.parent.name.split(".") if part.isdigit())


def postgres_bin() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb, postgres and pg_isready."""
    candidates = sorted(Path("/").glob(BIN_GLOB.lstrip("/")), key=_version, reverse=True)
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "postgres", "pg_isready", "createdb")):
            return folder
    raise PostgresUnavailable(f"no PostgreSQL server binaries in {BIN_GLOB} (Debian package postgresql)")


def _owner() -> pwd.struct_passwd | None:
    """The unprivileged user that runs the cluster when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresUnavailable("running as root and neither a postgres nor a nobody user exists for initdb")


def check_available() -> None:
    """Raise PostgresUnavailable, with the reason, where ``postgres_cluster`` cannot start here."""
    postgres_bin()
    _as_owner([], _owner())


def _as_owner(command: list[str], owner: pwd.struct_passwd | None) -> list[str]:
    if owner is None:
        return command
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")
    if setpriv is None:
        raise PostgresUnavailable("running as root and setpriv (util-linux) is missing to drop privileges")
    return [setpriv, f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}", "--init-groups", "--", *command]


def _run(command: list[str], owner: pwd.struct_passwd | None, env: dict[str, str], timeout: float) -> None:
    result = subprocess.run(_as_owner(command, owner), env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        raise RuntimeError(f"{Path(command[0]).name} failed ({result.returncode}): {output}")


def _wait_ready(bin_dir: Path, port: int, process: subprocess.Popen, env: dict[str, str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"postgres exited with {process.returncode} while starting")
        ready = subprocess.run([str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-t", "2"],
                               env=env, timeout=10)
        if ready.returncode == 0:
            return
        time.sleep(0.2)
    raise TimeoutError(f"PostgreSQL on port {port} not ready after {timeout:.0f} s")


def _shut_down(process: subprocess.Popen, timeout: float) -> None:
    """SIGINT is PostgreSQL's fast shutdown (SIGTERM would wait for every client to leave)."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


@contextmanager
def postgres_cluster(fsync: bool = True, timeout: float = 60.0) -> Iterator[PostgresCluster]:
    """Start a private PostgreSQL on 127.0.0.1; ``fsync=False`` for tests that need no durability."""
    bin_dir = postgres_bin()
    owner = _owner()
    directory = Path(tempfile.mkdtemp(prefix="dermnode-pg-"))
    data = directory / "data"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LC_ALL": "C", "LANG": "C", "PGCONNECT_TIMEOUT": "5"}
    process: subprocess.Popen | None = None
    try:
        if owner is not None:
            os.chown(directory, owner.pw_uid, owner.pw_gid)
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-locale",
              "--no-sync"], owner, env, timeout)
        port = free_port()
        settings = {"listen_addresses": "127.0.0.1", "port": str(port), "unix_socket_directories": "",
                    "fsync": "on" if fsync else "off", "synchronous_commit": "on" if fsync else "off",
                    "max_connections": "200", "logging_collector": "off"}
        command = [str(bin_dir / "postgres"), "-D", str(data)] + [f"-c{k}={v}" for k, v in settings.items()]
        with (directory / "postgres.log").open("wb") as log:
            process = subprocess.Popen(_as_owner(command, owner), env=env, stdout=log, stderr=subprocess.STDOUT)
        _wait_ready(bin_dir, port, process, env, timeout)
        _run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, DATABASE], None, env, timeout)
        yield PostgresCluster(port, directory)
    finally:
        if process is not None:
            _shut_down(process, timeout=min(timeout, 30.0))
        shutil.rmtree(directory, ignore_errors=True)
