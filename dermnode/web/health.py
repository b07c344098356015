"""The open endpoints: /healthz (the process answers), /readyz (the node can take studies), /metrics.

They carry no patient data, so probes and Prometheus need no credentials.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Alive: the node's HTTP server answers."""
    return {"status": "alive"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    """Ready: every check passes (200); otherwise 503 with each failing check named and explained."""
    readiness = request.app.state.context.health.run()
    body = {
        "status": "ready" if readiness.ready else "not ready",
        "failing": readiness.failing,
        "checks": {name: "ok" if problem is None else "failing" for name, problem in readiness.checks.items()},
        "workers": [{"name": beat.name, "host": beat.host, "pid": beat.pid, "models": beat.models,
                     "identities": beat.identities, "error": beat.error} for beat in readiness.workers],
    }
    return JSONResponse(body, status_code=200 if readiness.ready else 503)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
