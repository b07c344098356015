"""`dermnode serve` as a child process of a test, in a process group of its own.

Serve starts children (an embedded Redis, a worker). They die with serve through PR_SET_PDEATHSIG, but
on a starved machine that can take longer than a test waits. Every test that starts serve goes through
`start_serve` and ends it with `end_serve` or `kill_serve`, which take the whole group with them, so
that nothing a test started outlives it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from dermnode.local_processes import stop


def start_serve(env: dict[str, str], log: Path, stdout: int | None = None) -> subprocess.Popen:
    """Start `dermnode serve` with ``env``. Its stderr is appended to ``log``, and so is its stdout
    unless ``stdout`` says where else (``subprocess.DEVNULL``)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as handle:
        return subprocess.Popen([sys.executable, "-m", "dermnode.cli", "serve"], env=env,
                                stdout=handle if stdout is None else stdout, stderr=handle, start_new_session=True)


def end_serve(process: subprocess.Popen, timeout: float = 60) -> int:
    """Stop serve the way an operator does (SIGTERM) and return its exit status. When it has not stopped
    within ``timeout`` seconds it is killed; in every case what is left of its group is killed after it."""
    try:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            finally:
                stop(process)
        return process.returncode
    finally:
        _kill_group(process)


def kill_serve(process: subprocess.Popen) -> None:
    """SIGKILL serve and its whole group at once: the node dies as in a power cut, without a word."""
    _kill_group(process)
    process.wait()


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # the group is empty: everything stopped already
        pass
