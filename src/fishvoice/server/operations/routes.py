"""`GET /metrics` (Prometheus' text format), `GET /ready` and `GET /live` (the probes an orchestrator uses)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ..http.auth import Auth
from .collector import exposition
from .readiness import unready
from .watched import Watched


def build_operations_router(watched: Watched, auth: Auth, *, metrics_auth: bool) -> APIRouter:
    """/metrics asks for the bearer key only where `metrics_auth` (it is open, as /health is, otherwise)."""
    router = APIRouter()

    @router.get("/metrics", dependencies=[Depends(auth)] if metrics_auth else [])
    async def metrics() -> Response:
        return Response(await exposition(watched), media_type=CONTENT_TYPE_LATEST)

    @router.get("/ready")
    async def ready() -> JSONResponse:
        reasons = await unready(watched)
        if reasons:
            return JSONResponse({"status": "unavailable", "reasons": reasons}, status_code=503)
        return JSONResponse({"status": "ready"})

    @router.get("/live")
    async def live() -> JSONResponse:
        return JSONResponse({"status": "alive"})

    return router
