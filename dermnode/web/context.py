"""What the web app is given by `dermnode serve`: the node's settings, stores and readiness checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from dermnode.node.audit import AuditStore
from dermnode.node.health import HealthChecks
from dermnode.node.settings import Settings
from dermnode.node.studies import StudyIndex


@dataclass
class NodeContext:
    """``nudge(study_uid)`` asks the running assembler to look at a study now (after a requeue);
    ``embedded_worker_restarts()`` counts the embedded worker's restarts (None with an external broker)."""

    settings: Settings
    audit: AuditStore
    health: HealthChecks
    nudge: Callable[[str], None] | None = None
    embedded_worker_restarts: Callable[[], int] | None = None
    studies: StudyIndex = field(init=False)

    def __post_init__(self) -> None:
        self.studies = StudyIndex(self.settings, self.audit)
