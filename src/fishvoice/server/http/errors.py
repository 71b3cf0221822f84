"""Error responses in the shape of the API a route speaks: RunPod's job API gets the contract's
`{"error", "error_code", "field"}`; every `/v1/*` route (Fish's and OpenAI's) gets OpenAI's
`{"error": {"message", "type", "param", "code"}}`, with the contract's code and field inside.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from ...errors import ErrorCode, FishvoiceError

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


def is_v1(path: str) -> bool:
    return path.startswith("/v1/")


def openai_body(error: FishvoiceError, status: int) -> dict[str, Any]:
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": error.message, "type": kind, "param": error.field, "code": error.code}}


def error_response(path: str, error: FishvoiceError, status: int | None = None, **extra: Any) -> JSONResponse:
    """The error as the route at `path` answers it; `extra` (a debug trace) joins the body."""
    status = status or status_of(error)
    body = openai_body(error, status) if is_v1(path) else error.to_dict()
    (body["error"] if is_v1(path) else body).update(extra)
    return JSONResponse(body, status_code=status)
