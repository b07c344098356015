"""Every view of patient data goes into the audit log: who, what, when (events of kind ``viewed``).

A page that refreshes itself, or a study page with its images, would write the same view again and
again; a view identical to one recorded less than ``COALESCE_SECONDS`` ago (same user, same thing
seen) is therefore not written again.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from dermnode.node.audit import AuditStore
from dermnode.web.auth import User

COALESCE_SECONDS = 60.0


class ViewAudit:
    def __init__(self, audit: AuditStore, coalesce_seconds: float = COALESCE_SECONDS) -> None:
        self.audit = audit
        self.coalesce_seconds = coalesce_seconds
        self._last: dict[tuple, float] = {}
        self._lock = threading.Lock()

    def record(self, user: User, what: str, study_uid: str | None = None, sop_instance_uid: str | None = None,
               **details: Any) -> None:
        """Audit that ``user`` saw ``what`` (worklist, study, images, timeline...), unless just recorded."""
        key = (user.name, what, study_uid, sop_instance_uid, tuple(sorted((k, str(v)) for k, v in details.items())))
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -self.coalesce_seconds) < self.coalesce_seconds:
                return
            self._last = {k: at for k, at in self._last.items() if now - at < self.coalesce_seconds}
            self._last[key] = now
        self.audit.record("viewed", study_uid, sop_instance_uid, by=user.label, role=user.role, via=user.via,
                          what=what, **details)
