"""The pages: login, the worklist (vetoed first, then newest), one study, and the pictures they show.

Without a login a page redirects to /login; pictures answer 401. Every page and picture of patient
data is audited (views.py).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from dermnode.contract import CLASS_CODES, CLASS_NAMES
from dermnode.dicom_templates.uids import InvalidUID
from dermnode.node.studies import StudyFilter
from dermnode.web import render
from dermnode.web.auth import SESSION_COOKIE, User, api_user, page_user
from dermnode.web.context import NodeContext

router = APIRouter(include_in_schema=False)
WORKLIST_LIMIT = 200
#: Seconds between the worklist's and study page's refreshes.
REFRESH_SECONDS = 10


def _context(request: Request) -> NodeContext:
    return request.app.state.context


def _render(request: Request, template: str, **values: Any) -> HTMLResponse:
    return request.app.state.templates.TemplateResponse(request, template, dict(values, refresh=REFRESH_SECONDS))


# ------------------------------------------------------------------------------------- login
@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return _render(request, "login.html", next=next if next.startswith("/") else "/", error=None)


@router.post("/login")
def login(request: Request, username: str = Form(...), password: str = Form(...), next: str = Form("/")) -> Response:
    authenticator = request.app.state.authenticator
    user = authenticator.login(username, password)
    address = request.client.host if request.client else None
    if user is None:
        _context(request).audit.record("login_failed", name=username[:64], address=address)
        response = _render(request, "login.html", next=next, error="Unknown user or wrong password.")
        response.status_code = 401
        return response
    _context(request).audit.record("login", by=user.label, role=user.role, address=address)
    response = RedirectResponse(next if next.startswith("/") and not next.startswith("//") else "/", status_code=303)
    response.set_cookie(SESSION_COOKIE, authenticator.session_cookie(user), httponly=True, samesite="strict",
                        max_age=int(request.app.state.context.settings.web_session_hours * 3600))
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


# ---------------------------------------------------------------------------------- worklist
@router.get("/", response_class=HTMLResponse)
def worklist(request: Request, user: User = Depends(page_user)) -> HTMLResponse:
    return _render(request, "worklist.html", user=user, **_worklist_rows(request, user))


@router.get("/worklist/rows", response_class=HTMLResponse)
def worklist_rows(request: Request, user: User = Depends(api_user)) -> HTMLResponse:
    """The worklist's table alone, for the page's refresh."""
    return _render(request, "worklist_rows.html", user=user, **_worklist_rows(request, user))


def _worklist_rows(request: Request, user: User) -> dict[str, Any]:
    studies, total = _context(request).studies.list(StudyFilter(), limit=WORKLIST_LIMIT)
    request.app.state.views.record(user, "worklist")
    failing = sum(1 for study in studies if study["state"] in ("failed", "retrying", "error"))
    return {"studies": studies, "total": total, "failing": failing}


# ------------------------------------------------------------------------------------- study
@router.get("/studies/{study_uid}", response_class=HTMLResponse)
def study_page(study_uid: str, request: Request, user: User = Depends(page_user)) -> HTMLResponse:
    context = _context(request)
    study = context.studies.get(study_uid)
    if study is None:
        raise HTTPException(404, f"no study {study_uid}")
    request.app.state.views.record(user, "study page", study_uid)
    return _render(request, "study.html", user=user, study=study, images=context.studies.images(study_uid),
                   timeline=context.studies.timeline(study_uid), class_codes=CLASS_CODES, class_names=CLASS_NAMES,
                   quote=quote)


PICTURES = {"thumbnail": render.thumbnail, "overlay": render.overlay}


@router.get("/studies/{study_uid}/images/{sop_uid}/{kind}.png")
def picture(study_uid: str, sop_uid: str, kind: str, request: Request, user: User = Depends(api_user)) -> Response:
    """The image with the lesion outlined (thumbnail), filled and outlined (overlay), or plain (image)."""
    studies = _context(request).studies
    try:
        source = studies.source_path(study_uid, sop_uid)
        if kind == "image":
            data = render.image_only(source)
        elif kind in PICTURES:
            data = PICTURES[kind](source, studies.seg_path(study_uid, sop_uid))
        else:
            raise HTTPException(404, f"no picture {kind!r}: thumbnail, overlay or image")
    except (InvalidUID, render.NoImage) as error:
        raise HTTPException(404, str(error)) from None
    request.app.state.views.record(user, "images", study_uid)
    # The same URL always shows the same picture (a SEG is never replaced): let the browser keep it.
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
