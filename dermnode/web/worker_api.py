"""The endpoints stateless workers call (workers/link.py ``HttpLink``), under ``/api/worker/v1``.

A worker with its own empty home and no database asks which images of a study owe results,
fetches them, and hands each image's analysis back; the node's intake (node/intake.py) encodes,
stores and audits the results. Every call needs ``Authorization: Bearer <worker_token>``; without
a worker_token in the node's settings the endpoints answer 403 (workers then run on the node's
host). A database or disk the node cannot use right now answers 503, which a worker retries.
The node's own HTTP app mounts ``worker_router`` (see web/).
"""

from __future__ import annotations

import hmac
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError

from dermnode.contract import analysis_from_wire
from dermnode.dicom_templates.uids import InvalidUID, check_uid
from dermnode.node.intake import ResultIntake, UnknownInstance

PREFIX = "/api/worker/v1"


class AnalysisIn(BaseModel):
    idempotency_key: str
    analysis: dict[str, Any]


class FinishIn(BaseModel):
    idempotency_key: str
    summary: dict[str, Any] = {}


class ErrorIn(BaseModel):
    idempotency_key: str
    reason: str
    transient: bool = False


def _bearer_check(token: str | None) -> Callable[[Request], None]:
    def check(request: Request) -> None:
        if not token:
            raise HTTPException(403, "the worker endpoints are off: set worker_token on the node and the workers")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "a worker token is needed (Authorization: Bearer ...)",
                                headers={"WWW-Authenticate": "Bearer"})
    return check


def _uids(*values: tuple[str, str]) -> None:
    try:
        for value, what in values:
            check_uid(value, what)
    except InvalidUID as error:
        raise HTTPException(400, str(error)) from None


@contextmanager
def _node_errors() -> Iterator[None]:
    """The node's own trouble in HTTP terms: unknown instance 404, database or disk 503 (retried)."""
    try:
        yield
    except UnknownInstance as error:
        raise HTTPException(404, str(error)) from None
    except (OperationalError, OSError) as error:
        raise HTTPException(503, f"the node cannot serve this right now: {type(error).__name__}") from None


def worker_router(intake: ResultIntake, token: str | None) -> APIRouter:
    """The router serve mounts; ``intake`` is the node's, ``token`` its worker_token."""
    router = APIRouter(prefix=PREFIX, tags=["workers"], dependencies=[Depends(_bearer_check(token))])

    @router.get("/studies/{study_uid}/pending")
    def pending(study_uid: str, key: str) -> dict[str, Any]:
        """Whether the task's content is done; the study's images without results."""
        _uids((study_uid, "Study Instance UID"))
        with _node_errors():
            if intake.cancelled(study_uid):
                return {"done": True, "pending": [], "earlier": 0, "cancelled": True}
            if intake.is_done(key):
                return {"done": True, "pending": [], "earlier": 0}
        try:
            sop_uids, earlier = intake.pending(study_uid)
        except FileNotFoundError as error:
            raise HTTPException(404, str(error)) from None
        except (OperationalError, OSError) as error:
            raise HTTPException(503, f"the node cannot serve this right now: {type(error).__name__}") from None
        return {"done": False, "pending": sop_uids, "earlier": earlier}

    @router.get("/studies/{study_uid}/instances/{sop_uid}")
    def instance(study_uid: str, sop_uid: str) -> Response:
        """One spooled instance, as the node received it."""
        _uids((study_uid, "Study Instance UID"), (sop_uid, "SOP Instance UID"))
        with _node_errors():
            return Response(intake.instance(study_uid, sop_uid), media_type="application/dicom")

    @router.put("/studies/{study_uid}/instances/{sop_uid}/analysis")
    def accept(study_uid: str, sop_uid: str, body: AnalysisIn) -> dict[str, Any]:
        """One image's analysis: the node makes, stores and audits its results (once)."""
        _uids((study_uid, "Study Instance UID"), (sop_uid, "SOP Instance UID"))
        try:
            analysis = analysis_from_wire(body.analysis)
        except ValueError as error:
            raise HTTPException(422, str(error)) from None
        with _node_errors():
            return intake.accept(study_uid, sop_uid, body.idempotency_key, analysis)

    @router.post("/studies/{study_uid}/finish")
    def finish(study_uid: str, body: FinishIn) -> dict[str, bool]:
        """Every image of the task has its results."""
        _uids((study_uid, "Study Instance UID"))
        with _node_errors():
            intake.finish(study_uid, body.idempotency_key, body.summary)
        return {"done": True}

    @router.post("/studies/{study_uid}/error")
    def error(study_uid: str, body: ErrorIn) -> dict[str, bool]:
        """A worker's task failed (the study still owes results)."""
        _uids((study_uid, "Study Instance UID"))
        with _node_errors():
            intake.error(study_uid, body.idempotency_key, body.reason[:500], body.transient)
        return {"recorded": True}

    return router
