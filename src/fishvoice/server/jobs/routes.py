"""RunPod's job API over the job runner: /run, /runsync, /status, /stream, /cancel, /purge-queue, /health.

The same router is mounted at the root and under /v2/{endpoint_id}, so a RunPod client works by
changing only its base URL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ...contract import ReplyRequest
from ...errors import FishvoiceError
from ..http.auth import Auth
from ..http.body import parse_json, read_body
from ..http.openapi import answers, json_body
from .job import CANCELLED, COMPLETED, FAILED, IN_PROGRESS, IN_QUEUE, TIMED_OUT
from .runner import JobRunner

ENDPOINT_PREFIX = "/v2/{endpoint_id}"


class JobBody(BaseModel):
    """A job as RunPod's API takes it."""

    model_config = ConfigDict(extra="forbid")
    input: ReplyRequest


class JobAnswer(BaseModel):
    """A job as /run, /runsync, /status and /cancel answer it (RunPod's shape; times in ms)."""

    id: str
    status: str = Field(description="IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED or TIMED_OUT")
    delayTime: int | None = Field(None, description="from submission to start, in ms")
    executionTime: int | None = Field(None, description="running time, in ms")
    output: Any = Field(None, description="the reply: text, audio, history (see the README's contract)")
    error: Any = Field(None, description="why the job failed, as the contract's error")


_JOB = answers("the job", model=JobAnswer)


def endpoint_id(
    endpoint_id: str = Path(description="RunPod's endpoint id: any value, this server being the endpoint"),
) -> None:
    """The routes under /v2/{endpoint_id}/ are the same as at the root, whatever the id."""


_HEALTH_NAMES = {
    IN_QUEUE: "inQueue",
    IN_PROGRESS: "inProgress",
    COMPLETED: "completed",
    FAILED: "failed",
    CANCELLED: "cancelled",
    TIMED_OUT: "timedOut",
}


async def read_input(request: Request, max_bytes: int) -> Any:
    """The job's `input` from a JSON body, refusing bodies over the limit before reading them whole."""
    payload = parse_json(await read_body(request, max_bytes, "input"))
    if not isinstance(payload, dict) or "input" not in payload:
        raise FishvoiceError("invalid_input", 'input: required; send {"input": {...}}', "input")
    return payload["input"]


async def _health(jobs: JobRunner) -> dict[str, Any]:
    counts = await jobs.counts()  # every server's jobs where the table is shared; `workers` are this server's
    return {
        "status": "ok",
        "jobs": {_HEALTH_NAMES[state]: n for state, n in counts.items()},  # RunPod's names, and ours for the rest
        "workers": {"running": jobs.running_here, "idle": jobs.limits.concurrency - jobs.running_here},
    }


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

    @router.post("/run", openapi_extra=json_body(JobBody), responses=_JOB)
    async def run(request: Request, namespace: str = caller) -> JSONResponse:
        job = await jobs.submit(await read_input(request, max_body_bytes), namespace)
        return JSONResponse(job.summary())

    @router.post("/runsync", openapi_extra=json_body(JobBody), responses=_JOB)
    async def runsync(
        request: Request, namespace: str = caller, wait: int | None = Query(None, ge=1000, le=300_000)
    ) -> JSONResponse:
        job = await jobs.submit(await read_input(request, max_body_bytes), namespace)
        job = await jobs.wait(job.id, namespace, wait / 1000 if wait else runsync_wait_s)
        return JSONResponse(job.summary())

    @router.get("/status/{job_id}", responses=_JOB)
    @router.post("/status/{job_id}", responses=_JOB)
    async def status(job_id: str, namespace: str = caller) -> JSONResponse:
        return JSONResponse((await jobs.view(job_id, namespace)).summary())

    @router.get("/stream/{job_id}")
    @router.post("/stream/{job_id}")
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
        return JSONResponse({**await _health(jobs), "backends": backends, **progress()})

    return router
