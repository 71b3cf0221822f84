"""The RunPod serverless worker: the handler around the assistant, and runpod.serverless.start.

Models load once per worker, when the handler is built, not per job. This is an edge: failures
become the contract's error (with `refresh_worker` where RunPod should replace the worker).

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from .assistant import Assistant
from .config import Settings
from .contract import DoneEvent, ErrorEvent, Event, ReplyRequest, guarded, parse_request
from .errors import FishvoiceError
from .factory import build_assistant, jobs_at_once
from .process import prepare_process

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
StreamHandler = Callable[[dict[str, Any]], AsyncIterator[dict[str, Any]]]


def _parse_job(job: Any) -> ReplyRequest:
    return parse_request(job.get("input") if isinstance(job, dict) else None)


async def _events(assistant: Assistant, job: Any, debug: bool) -> AsyncGenerator[Event, None]:
    """The job's events; a bad input is its only event, an error."""
    try:
        request = _parse_job(job)
    except FishvoiceError as exc:
        yield ErrorEvent(exc)
        return
    async with aclosing(guarded(assistant.respond(request), debug=debug)) as events:
        async for event in events:
            yield event


def make_handler(assistant: Assistant, *, debug: bool = False) -> Handler:
    """The plain handler: the response, or the error (RunPod fails a job whose result has `error`)."""

    async def handler(job: dict[str, Any]) -> dict[str, Any]:
        async with aclosing(_events(assistant, job, debug)) as events:
            async for event in events:
                if isinstance(event, DoneEvent | ErrorEvent):
                    return {k: v for k, v in event.to_dict().items() if k != "type"}
        return FishvoiceError("internal", "the reply ended without a result").to_dict()

    return handler


def make_stream_handler(assistant: Assistant, *, debug: bool = False) -> StreamHandler:
    """The generator handler: yields each event for RunPod's /stream."""

    async def handler(job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        async with aclosing(_events(assistant, job, debug)) as events:
            async for event in events:
                yield event.to_dict()

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
        config |= {"handler": make_stream_handler(assistant, debug=settings.debug), "return_aggregate_stream": True}
    else:
        config |= {"handler": make_handler(assistant, debug=settings.debug)}
    runpod.serverless.start(config)
