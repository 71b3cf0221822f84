"""RunPod's job API over the job runner: /run, /runsync, /status, /stream, /cancel, /purge-queue, /health.

The same router is mounted at the root and under /v2/{endpoint_id}, so a RunPod client works by
changing only its base URL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from ..errors import FishvoiceError
from .jobs import CANCELLED, COMPLETED, FAILED, IN_PROGRESS, IN_QUEUE, TIMED_OUT
from .runner import JobRunner

_HEALTH_NAMES = {
    IN_QUEUE: "inQueue",
    IN_PROGRESS: "inProgress",
    COMPLETED: "completed",
    FAILED: "failed",
    CANCELLED: "cancelled",
    TIMED_OUT: "timedOut",
}


def key_namespace(key: str) -> str:
    """Conversations and jobs of one key live apart from every other key's."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:24]


class Auth:
    """Bearer-key check; returns the caller's namespace ("" when auth is off)."""

    def __init__(self, keys: list[str]):
        self._keys = [key.encode() for key in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def __call__(self, request: Request) -> str:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return self.namespace(given if scheme.lower() == "bearer" else None)

    def namespace(self, key: str | None) -> str:
        """The namespace of a key the caller gave (None: none given); unauthorized unless it is one of ours."""
        if not self._keys:
            return ""
        given = (key or "").strip().encode()
        # Compare against every key, always: the time taken tells nothing about which one matched.
        matches = [hmac.compare_digest(given, known) for known in self._keys]
        if key is None or not any(matches):
            raise FishvoiceError("unauthorized", "a valid 'Authorization: Bearer <key>' header is needed")
        return key_namespace(given.decode())


async def read_body(request: Request, max_bytes: int, field: str) -> bytes:
    """The request's body, refused (naming `field`) once it is over the limit, before it is read whole."""
    declared = request.headers.get("content-length")
    too_large = FishvoiceError("payload_too_large", f"request body is larger than {max_bytes / 2**20:g} MB", field)
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    async with aclosing(request.stream()) as chunks:
        async for chunk in chunks:
            body += chunk
            if len(body) > max_bytes:
                raise too_large
    return bytes(body)


async def read_input(request: Request, max_bytes: int) -> Any:
    """The job's `input` from a JSON body, refusing bodies over the limit before reading them whole."""
    body = await read_body(request, max_bytes, "input")
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FishvoiceError("invalid_input", f"body: not valid JSON ({exc})", "body") from None
    if not isinstance(payload, dict) or "input" not in payload:
        raise FishvoiceError("invalid_input", 'input: required; send {"input": {...}}', "input")
    return payload["input"]


def build_router(
    jobs: JobRunner,
    auth: Auth,
    *,
    runsync_wait_s: float,
    max_body_bytes: int,
    backends: dict[str, str],
    progress: Callable[[], dict[str, Any]],
) -> APIRouter:
    """The job routes; /health adds `progress()` (what the backends are doing, what is in use)."""
    router = APIRouter()
    caller = Depends(auth)

    @router.post("/run")
    async def run(request: Request, namespace: str = caller) -> JSONResponse:
        job = await jobs.submit(await read_input(request, max_body_bytes), namespace)
        return JSONResponse(job.summary())

    @router.post("/runsync")
    async def runsync(
        request: Request, namespace: str = caller, wait: int | None = Query(None, ge=1000, le=300_000)
    ) -> JSONResponse:
        job = await jobs.submit(await read_input(request, max_body_bytes), namespace)
        job = await jobs.wait(job.id, namespace, wait / 1000 if wait else runsync_wait_s)
        return JSONResponse(job.summary())

    @router.api_route("/status/{job_id}", methods=["GET", "POST"])
    async def status(job_id: str, namespace: str = caller) -> JSONResponse:
        return JSONResponse((await jobs.view(job_id, namespace)).summary())

    @router.api_route("/stream/{job_id}", methods=["GET", "POST"])
    async def stream(job_id: str, namespace: str = caller) -> JSONResponse:
        status, events = await jobs.take_stream(job_id, namespace)
        return JSONResponse({"id": job_id, "status": status, "stream": [{"output": event} for event in events]})

    @router.post("/cancel/{job_id}")
    async def cancel(job_id: str, namespace: str = caller) -> JSONResponse:
        return JSONResponse({"id": job_id, "status": await jobs.cancel(job_id, namespace)})

    @router.post("/purge-queue")
    async def purge_queue(namespace: str = caller) -> JSONResponse:
        return JSONResponse({"removed": await jobs.purge_queue(namespace), "status": "completed"})

    @router.get("/health")
    async def health() -> JSONResponse:
        counts = await jobs.counts()  # every server's jobs where the table is shared; `workers` are this server's
        return JSONResponse(
            {
                "status": "ok",
                "jobs": {
                    _HEALTH_NAMES[state]: n for state, n in counts.items()
                },  # RunPod's names, and ours for the rest
                "workers": {"running": jobs.running_here, "idle": jobs.limits.concurrency - jobs.running_here},
                "backends": backends,
                **progress(),
            }
        )

    return router
