"""The REST API under /api: studies with filters, one study's timeline and images, and the actions.

Reading needs any user (read-only or operator); requeue, retry and cancel need an operator and are
audited with the user's name (node/actions.py). Every read of patient data is audited (views.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from dermnode.node import actions
from dermnode.node.studies import DESTINATION_STATES, STATES, StudyFilter
from dermnode.web.auth import User, api_operator, api_user
from dermnode.web.context import NodeContext

router = APIRouter(prefix="/api", tags=["studies"])
StudyState = Literal[STATES]  # type: ignore[valid-type]
DestinationState = Literal[DESTINATION_STATES]  # type: ignore[valid-type]


def _context(request: Request) -> NodeContext:
    return request.app.state.context


def _study_or_404(context: NodeContext, study_uid: str) -> dict[str, Any]:
    study = context.studies.get(study_uid)
    if study is None:
        raise HTTPException(404, f"no study {study_uid}")
    return study


@router.get("/studies")
def list_studies(
    request: Request,
    user: User = Depends(api_user),
    state: StudyState | None = None,
    veto: bool | None = None,
    since: datetime | None = Query(None, description="first instance received at or after (ISO 8601)"),
    until: datetime | None = Query(None, description="first instance received at or before (ISO 8601)"),
    destination: str | None = Query(None, description="AE title or AE@host:port"),
    destination_state: DestinationState | None = None,
    patient_id: str | None = None,
    accession: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    """Studies, vetoed first then newest first, with state, findings and delivery state per destination."""
    context = _context(request)
    where = StudyFilter(state, veto, since, until, destination, destination_state, patient_id, accession)
    found, total = context.studies.list(where, limit, offset)
    request.app.state.views.record(user, "api:studies",
                                   **{k: str(v) for k, v in where.__dict__.items() if v is not None})
    return {"total": total, "limit": limit, "offset": offset, "studies": found}


@router.get("/studies/{study_uid}")
def get_study(study_uid: str, request: Request, user: User = Depends(api_user)) -> dict[str, Any]:
    """One study's summary."""
    study = _study_or_404(_context(request), study_uid)
    request.app.state.views.record(user, "api:study", study_uid)
    return study


@router.get("/studies/{study_uid}/timeline")
def study_timeline(study_uid: str, request: Request, user: User = Depends(api_user)) -> list[dict[str, Any]]:
    """Every audit event of the study, in order."""
    context = _context(request)
    _study_or_404(context, study_uid)
    request.app.state.views.record(user, "api:timeline", study_uid)
    return context.studies.timeline(study_uid)


@router.get("/studies/{study_uid}/images")
def study_images(study_uid: str, request: Request, user: User = Depends(api_user)) -> list[dict[str, Any]]:
    """The study's images with their results (status, probabilities, veto, BCC/SK, result UIDs)."""
    context = _context(request)
    _study_or_404(context, study_uid)
    request.app.state.views.record(user, "api:images", study_uid)
    return context.studies.images(study_uid)


def _refused(error: actions.ActionRefused) -> HTTPException:
    return HTTPException(404 if isinstance(error, actions.UnknownStudy) else 409, str(error))


@router.post("/studies/{study_uid}/requeue", tags=["actions"])
def requeue_study(study_uid: str, request: Request, user: User = Depends(api_operator)) -> dict[str, str]:
    """Put a study that still owes results back on the queue (lifts a cancellation)."""
    context = _context(request)
    try:
        key = actions.requeue(context.settings, context.audit, study_uid, user.label, context.nudge)
    except actions.ActionRefused as error:
        raise _refused(error) from None
    return {"study_uid": study_uid, "requeued": key}


@router.post("/studies/{study_uid}/cancel", tags=["actions"])
def cancel_study(study_uid: str, request: Request, user: User = Depends(api_operator)) -> dict[str, Any]:
    """Stop all further work on a study: no analysis, no export."""
    try:
        stopped = actions.cancel(_context(request).audit, study_uid, user.label)
    except actions.ActionRefused as error:
        raise _refused(error) from None
    return {"study_uid": study_uid, "cancelled": True, "deliveries_cancelled": stopped}


@router.post("/destinations/{destination}/retry", tags=["actions"])
def retry_destination(destination: str, request: Request, user: User = Depends(api_operator),
                      study_uid: str | None = None) -> dict[str, Any]:
    """Send the failed or waiting deliveries to a destination (AE title or AE@host:port) now."""
    try:
        count = actions.retry(_context(request).audit, destination, user.label, study_uid)
    except actions.ActionRefused as error:
        raise _refused(error) from None
    return {"destination": destination, "deliveries": count}


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request, user: User = Depends(api_user)) -> dict[str, Any]:
    return request.app.openapi()


@router.get("/docs", include_in_schema=False, response_class=HTMLResponse)
def docs(request: Request, user: User = Depends(api_user)) -> HTMLResponse:
    """The API described from its OpenAPI document, drawn on the server (nothing fetched from the internet)."""
    return request.app.state.templates.TemplateResponse(request, "api_docs.html", {
        "user": user, "spec": request.app.openapi()})
