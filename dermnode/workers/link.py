"""How a worker reaches the node: directly on the node's host, over HTTP from anywhere else.

A worker holds no state: it asks the node which images of a study still owe results, fetches
them, and hands each image's analysis back; the node encodes, stores, exports and audits
(node/intake.py). Two links carry that conversation:

* ``LocalLink`` calls the node's ``ResultIntake`` in-process: the embedded single-machine default
  and workers on the node's host (they share its home folder and database).
* ``HttpLink`` talks to serve's worker endpoints (web/worker_api.py) at ``node_url`` with the
  bearer token ``worker_token``: a worker with its own empty home and no database, anywhere the
  broker and the node can be reached.

``link_for(settings)`` picks HttpLink when ``node_url`` is set. Errors a retry may cure (the node
unreachable or answering 5xx, a study not visible yet) are ``OSError``s, which the task retries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from dermnode.contract import LesionAnalysis, analysis_to_wire
from dermnode.node.settings import Settings

#: Where serve's worker endpoints live under node_url.
API_PREFIX = "/api/worker/v1"


class NodeUnreachable(ConnectionError):
    """The node did not answer, or answered that it cannot serve now (5xx): try again later."""


@dataclass(frozen=True)
class Pending:
    """What a study owes: done (the task's content has its results), images to analyse, images done;
    cancelled: an operator cancelled the study (nothing is owed)."""

    done: bool
    sop_uids: list[str]
    earlier: int
    cancelled: bool = False


class NodeLink(Protocol):
    def pending(self, study_uid: str, idempotency_key: str) -> Pending: ...
    def instance(self, study_uid: str, sop_uid: str) -> bytes: ...
    def accept(self, study_uid: str, sop_uid: str, idempotency_key: str, analysis: LesionAnalysis) -> dict[str, Any]: ...
    def finish(self, study_uid: str, idempotency_key: str, summary: dict[str, Any]) -> None: ...
    def error(self, study_uid: str, idempotency_key: str, reason: str, transient: bool) -> None: ...
    def close(self) -> None: ...


class LocalLink:
    """The node's intake called in-process (a worker on the node's host)."""

    def __init__(self, intake: Any, own_audit: bool = False) -> None:
        self.intake, self.own_audit = intake, own_audit

    @classmethod
    def from_settings(cls, settings: Settings, audit: Any = None, outbox: Any = None) -> LocalLink:
        from dermnode.node.audit import AuditStore
        from dermnode.node.intake import ResultIntake

        own = audit is None
        audit = audit or AuditStore.from_settings(settings)
        return cls(ResultIntake(settings, audit, outbox), own_audit=own)

    def pending(self, study_uid: str, idempotency_key: str) -> Pending:
        if self.intake.cancelled(study_uid):
            return Pending(True, [], 0, cancelled=True)
        if self.intake.is_done(idempotency_key):
            return Pending(True, [], 0)
        sop_uids, earlier = self.intake.pending(study_uid)
        return Pending(False, sop_uids, earlier)

    def instance(self, study_uid: str, sop_uid: str) -> bytes:
        return self.intake.instance(study_uid, sop_uid)

    def accept(self, study_uid: str, sop_uid: str, idempotency_key: str, analysis: LesionAnalysis) -> dict[str, Any]:
        return self.intake.accept(study_uid, sop_uid, idempotency_key, analysis)

    def finish(self, study_uid: str, idempotency_key: str, summary: dict[str, Any]) -> None:
        self.intake.finish(study_uid, idempotency_key, summary)

    def error(self, study_uid: str, idempotency_key: str, reason: str, transient: bool) -> None:
        self.intake.error(study_uid, idempotency_key, reason, transient)

    def close(self) -> None:
        if self.own_audit:
            self.intake.audit.close()


class HttpLink:
    """serve's worker endpoints at ``node_url``, authenticated with the worker token."""

    def __init__(self, node_url: str, token: str, timeout: float = 60.0, transport: httpx.BaseTransport | None = None) -> None:
        self.client = httpx.Client(base_url=node_url.rstrip("/") + API_PREFIX, timeout=timeout, transport=transport,
                                   headers={"Authorization": f"Bearer {token}"})

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise NodeUnreachable(f"the node at {self.client.base_url} did not answer: {type(error).__name__}") from None
        if response.status_code >= 500:
            raise NodeUnreachable(f"the node answered {response.status_code} to {method} {path}: {response.text[:200]}")
        if response.status_code == 404 and path.endswith("/pending"):
            raise FileNotFoundError(f"the node has no spooled instances for {path} (yet)")
        if response.status_code >= 400:
            raise RuntimeError(f"the node refused {method} {path}: {response.status_code} {response.text[:200]}")
        return response

    def pending(self, study_uid: str, idempotency_key: str) -> Pending:
        data = self._call("GET", f"/studies/{quote(study_uid)}/pending", params={"key": idempotency_key}).json()
        return Pending(bool(data["done"]), list(data["pending"]), int(data["earlier"]), bool(data.get("cancelled")))

    def instance(self, study_uid: str, sop_uid: str) -> bytes:
        return self._call("GET", f"/studies/{quote(study_uid)}/instances/{quote(sop_uid)}").content

    def accept(self, study_uid: str, sop_uid: str, idempotency_key: str, analysis: LesionAnalysis) -> dict[str, Any]:
        body = {"idempotency_key": idempotency_key, "analysis": analysis_to_wire(analysis)}
        return self._call("PUT", f"/studies/{quote(study_uid)}/instances/{quote(sop_uid)}/analysis", json=body).json()

    def finish(self, study_uid: str, idempotency_key: str, summary: dict[str, Any]) -> None:
        self._call("POST", f"/studies/{quote(study_uid)}/finish", json={"idempotency_key": idempotency_key, "summary": summary})

    def error(self, study_uid: str, idempotency_key: str, reason: str, transient: bool) -> None:
        self._call("POST", f"/studies/{quote(study_uid)}/error",
                   json={"idempotency_key": idempotency_key, "reason": reason, "transient": transient})

    def close(self) -> None:
        self.client.close()


def link_for(settings: Settings, audit: Any = None, outbox: Any = None) -> NodeLink:
    """HttpLink when ``node_url`` is set (a stateless worker), else the node's intake in-process."""
    if settings.node_url:
        if not settings.worker_token:
            raise ValueError("node_url is set but worker_token is not: the node's worker endpoints need the token")
        return HttpLink(settings.node_url, settings.worker_token)
    return LocalLink.from_settings(settings, audit, outbox)
