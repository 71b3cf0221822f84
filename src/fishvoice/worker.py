"""The RunPod serverless worker: the handler around the assistant, and runpod.serverless.start.

Models load once per worker, when the handler is built, not per job.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from .assistant import Assistant
from .config import Settings
from .contract import Request, error_event, parse_request
from .errors import FishvoiceError
from .factory import build_assistant, jobs_at_once, prepare_process

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
StreamHandler = Callable[[dict[str, Any]], AsyncIterator[dict[str, Any]]]


def _parse_job(job: dict[str, Any]) -> Request:
    return parse_request(job.get("input") if isinstance(job, dict) else None)


def make_handler(assistant: Assistant) -> Handler:
    """The plain handler: the done event's response, or the error (RunPod fails a job whose result has `error`)."""

    async def handler(job: dict[str, Any]) -> dict[str, Any]:
        try:
            request = _parse_job(job)
        except FishvoiceError as exc:
            return exc.to_dict()
        async for event in assistant.respond(request):
            if event["type"] in ("done", "error"):
                return {k: v for k, v in event.items() if k != "type"}
        return FishvoiceError("internal", "the reply ended without a result").to_dict()

    return handler


def make_stream_handler(assistant: Assistant) -> StreamHandler:
    """The generator handler: yields each event for RunPod's /stream."""

    async def handler(job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        try:
            request = _parse_job(job)
        except FishvoiceError as exc:
            yield error_event(exc)
            return
        async for event in assistant.respond(request):
            yield event

    return handler


def fixed_concurrency(jobs: int) -> Callable[[int], int]:
    """RunPod's concurrency_modifier: this worker takes `jobs` jobs at once."""

    def modifier(current: int) -> int:
        return jobs

    return modifier


def main() -> None:
    """Start the worker as RunPod runs it (`python handler.py`, with RunPod's own flags)."""
    import runpod

    settings = Settings()
    prepare_process(settings)
    assistant = build_assistant(settings)
    config: dict[str, Any] = {
        "concurrency_modifier": fixed_concurrency(jobs_at_once(settings.worker_concurrency, assistant.tts, 1))
    }
    if settings.streaming:
        config |= {"handler": make_stream_handler(assistant), "return_aggregate_stream": True}
    else:
        config |= {"handler": make_handler(assistant)}
    runpod.serverless.start(config)
