"""The web app of `dermnode serve`: routers for health and metrics, the API, the pages, the workers'
endpoints (worker_api.py, bearer worker_token); login.

``create_app(context)`` builds it for one running node; serve runs it with uvicorn (server.py).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from dermnode import web
from dermnode.node.intake import ResultIntake
from dermnode.web import api, health, pages
from dermnode.web.auth import Authenticator, LoginRequired
from dermnode.web.context import NodeContext
from dermnode.web.metrics import make_registry
from dermnode.web.views import ViewAudit
from dermnode.web.worker_api import worker_router

HERE = Path(web.__file__).parent


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.0f}%"


def create_app(context: NodeContext) -> FastAPI:
    app = FastAPI(title="dermnode", summary="Worklist, studies and actions of a dermoscopy DICOM node",
                  docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters.update(when=_when, percent=_percent, quote=lambda text: quote(str(text), safe=""))
    app.state.context = context
    app.state.templates = templates
    app.state.authenticator = Authenticator(context.settings)
    app.state.views = ViewAudit(context.audit)
    app.state.registry = make_registry(context)
    app.include_router(health.router)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.include_router(worker_router(ResultIntake(context.settings, context.audit), context.settings.worker_token))
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(LoginRequired)
    def to_login(request: Request, _: LoginRequired) -> RedirectResponse:
        return RedirectResponse(f"/login?next={quote(request.url.path, safe='/')}", status_code=303)

    return app
