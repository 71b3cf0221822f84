"""Error responses in the shape of the API a route speaks: RunPod's job API gets the contract's
`{"error", "error_code", "field"}`; every `/v1/*` route (Fish's and OpenAI's) and Fish's `/model` get OpenAI's
`{"error": {"message", "type", "param", "code"}}`, with the contract's code and field inside.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ...errors import ErrorCode, FishvoiceError, as_api_error

log = logging.getLogger(__name__)

STATUS: dict[ErrorCode, int] = {
    "invalid_input": 400,
    "invalid_audio": 400,
    "payload_too_large": 413,
    "unauthorized": 401,
    "not_found": 404,
    "conflict": 409,
    "backend_unavailable": 503,
    "timeout": 504,
    "cancelled": 409,
    "internal": 500,
}
# OpenAI's error types, by status: what its clients branch on (a 429 is a rate limit there).
_OPENAI_TYPES = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}


def status_of(error: FishvoiceError) -> int:
    return STATUS.get(error.code, 500)


def openai_shaped(path: str) -> bool:
    """Whether the route at `path` answers errors in OpenAI's shape: every /v1/* route, Fish's /model and
    Kokoro's /dev/captioned_speech."""
    return path.startswith(("/v1/", "/model/", "/dev/")) or path == "/model"


def openai_body(error: FishvoiceError, status: int) -> dict[str, Any]:
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": error.message, "type": kind, "param": error.field, "code": error.code}}


def error_response(path: str, error: FishvoiceError, status: int | None = None, **extra: Any) -> JSONResponse:
    """The error as the route at `path` answers it; `extra` (a debug trace) joins the body."""
    status = status or status_of(error)
    body = openai_body(error, status) if openai_shaped(path) else error.to_dict()
    (body["error"] if openai_shaped(path) else body).update(extra)
    return JSONResponse(body, status_code=status)


class TooManyRequests(FishvoiceError):
    """An error answered 429 rather than its code's status: the client should come back later."""

    status = 429


def install_error_handlers(app: FastAPI, *, debug: bool) -> None:
    """Every failure answered in the shape of the route's API: ours, FastAPI's parameter checks, Starlette's
    HTTP errors (an unknown path, a wrong method), and anything unexpected (logged whole; its stack trace in
    the body where `debug` is on)."""

    @app.exception_handler(FishvoiceError)
    async def fishvoice_error(request: Request, exc: FishvoiceError) -> JSONResponse:
        status = TooManyRequests.status if isinstance(exc, TooManyRequests) else None
        return error_response(request.url.path, exc, status)

    @app.exception_handler(RequestValidationError)
    async def bad_parameters(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        field = str(first["loc"][-1])
        return error_response(request.url.path, FishvoiceError("invalid_input", f"{field}: {first['msg']}", field))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code: ErrorCode = "not_found" if exc.status_code == 404 else "invalid_input"
        error = FishvoiceError(code, f"{request.method} {request.url.path}: {exc.detail}")
        return error_response(request.url.path, error, exc.status_code)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        trace = {"trace": "".join(traceback.format_exception(exc))} if debug else {}
        return error_response(request.url.path, as_api_error(exc), 500, **trace)
