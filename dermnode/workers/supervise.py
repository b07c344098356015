"""A child process that is restarted with back-off when it dies (the embedded Redis and worker).

``Supervised.check()`` is called periodically by its owner (``dermnode serve``'s main loop): when the
process has exited it is started again once its back-off delay has passed, and ``on_event`` is told
(serve records it in the audit log). The delay doubles with each death in a row, from
``base_seconds`` up to ``max_seconds``; a process that ran for ``stable_seconds`` starts the count
again.
"""

from __future__ import annotations

import logging
import subprocess
import time
from typing import Any, Callable

from dermnode.local_processes import stop

log = logging.getLogger(__name__)

#: on_event(kind, **details): called after each restart (serve records it in the audit log)
OnEvent = Callable[..., Any]


def restart_delay(deaths: int, base: float, cap: float) -> float:
    """Seconds to wait before the next start after ``deaths`` deaths in a row: base, 2 base, ... cap."""
    return min(cap, base * 2 ** max(0, deaths - 1))


class Supervised:
    """One child process, (re)started by ``launch`` and watched by ``check``."""

    def __init__(self, name: str, launch: Callable[[], subprocess.Popen], on_event: OnEvent | None = None,
                 base_seconds: float = 1.0, max_seconds: float = 60.0, stable_seconds: float = 60.0) -> None:
        self.name = name
        self.launch = launch
        self.on_event = on_event
        self.base_seconds, self.max_seconds, self.stable_seconds = base_seconds, max_seconds, stable_seconds
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self._started_at = 0.0
        self._deaths = 0
        self._next_start = 0.0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> subprocess.Popen:
        self.process = self.launch()
        self._started_at = time.monotonic()
        return self.process

    def check(self) -> bool:
        """Restart the process if it died and its back-off is over; True when it runs now."""
        if self.alive() or self.process is None:
            return self.alive()
        now = time.monotonic()
        if self._next_start == 0.0:  # first look since it died
            self._deaths = 1 if now - self._started_at >= self.stable_seconds else self._deaths + 1
            delay = restart_delay(self._deaths, self.base_seconds, self.max_seconds)
            self._next_start = now + delay
            log.error("embedded %s (pid %d) exited with status %s; restarting in %.0f s",
                      self.name, self.process.pid, self.process.returncode, delay)
        if now < self._next_start:
            return False
        status, old_pid = self.process.returncode, self.process.pid
        self._next_start = 0.0
        try:
            self.start()
        except Exception as error:  # noqa: BLE001 - try again after the next back-off
            log.error("embedded %s could not be restarted: %s", self.name, error)
            self._started_at = now
            return False
        self.restarts += 1
        log.warning("embedded %s restarted: pid %d (was %d, exit status %s)", self.name, self.process.pid, old_pid,
                    status)
        if self.on_event is not None:
            try:
                self.on_event(f"{self.name}_restarted", pid=self.process.pid, previous_pid=old_pid,
                              exit_status=status, restarts=self.restarts)
            except Exception:  # noqa: BLE001 - the restart matters more than its audit row
                log.exception("cannot record the restart of the embedded %s", self.name)
        return True

    def stop(self, timeout: float = 30.0) -> None:
        """Terminate (then kill after ``timeout``) the process; it is not restarted afterwards."""
        process, self.process = self.process, None
        if process is not None:
            stop(process, timeout)
