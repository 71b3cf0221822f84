"""The FastAPI application and `fishvoice serve`: models load before the port opens."""

from __future__ import annotations

import logging
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .. import __version__
from ..assistant import Assistant
from ..config import Settings
from ..errors import FishvoiceError
from ..factory import jobs_at_once
from .jobs import JobTable, MemoryJobTable, QueueFull
from .runpod_api import Auth, build_router, error_response

log = logging.getLogger(__name__)


def build_job_table(assistant: Assistant, settings: Settings) -> JobTable:
    limits = {
        "concurrency": jobs_at_once(settings.concurrency, assistant.tts, 2),
        "queue_size": settings.queue_size,
        "timeout_s": settings.job_timeout,
        "ttl_s": settings.job_ttl,
        "debug": settings.debug,
    }
    if settings.jobs == "memory":
        return MemoryJobTable(assistant, **limits)
    from .redis_jobs import RedisJobTable

    return RedisJobTable(assistant, settings.jobs, prefix=settings.redis_prefix, **limits)


def create_app(assistant: Assistant, settings: Settings) -> FastAPI:
    """The RunPod-compatible API over an assistant whose models are already loaded."""
    jobs = build_job_table(assistant, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await jobs.start()
        try:
            yield
        finally:
            await jobs.stop()

    app = FastAPI(title="fishvoice", version=__version__, lifespan=lifespan)
    app.state.jobs = jobs
    backends = {
        "llm": assistant.llm.name,
        "voice": assistant.tts.name,
        "store": type(assistant.store).__name__,
        "jobs": type(jobs).__name__,
    }
    router = build_router(
        jobs,
        Auth(settings.api_keys()),
        runsync_wait_s=settings.runsync_wait,
        max_body_bytes=int(settings.max_body_mb * 2**20),
        backends=backends,
    )
    app.include_router(router)
    app.include_router(router, prefix="/v2/{endpoint_id}")

    @app.exception_handler(FishvoiceError)
    async def fishvoice_error(request: Request, exc: FishvoiceError) -> JSONResponse:
        return error_response(exc, 429 if isinstance(exc, QueueFull) else None)

    @app.exception_handler(RequestValidationError)
    async def bad_parameters(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        field = str(first["loc"][-1])
        return error_response(FishvoiceError("invalid_input", f"{field}: {first['msg']}", field))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else "invalid_input"
        return error_response(
            FishvoiceError(code, f"{request.method} {request.url.path}: {exc.detail}"), exc.status_code
        )

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        body = FishvoiceError("internal", f"internal error: {type(exc).__name__}").to_dict()
        if settings.debug:
            body["trace"] = "".join(traceback.format_exception(exc))
        return JSONResponse(body, status_code=500)

    return app


def serve(settings: Settings) -> None:
    """Load the models, then serve; the port opens only once the models are ready."""
    import uvicorn

    from ..factory import build_assistant

    assistant = build_assistant(settings)
    app = create_app(assistant, settings)
    auth = f"bearer auth with {len(settings.api_keys())} key(s)" if settings.api_keys() else "no auth"
    log.info(
        "serving on http://%s:%d (%s, %d jobs at once)", settings.host, settings.port, auth, app.state.jobs.concurrency
    )
    uvicorn.run(
        app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(), timeout_graceful_shutdown=10
    )
