"""The RunPod serverless worker: the handler around the assistant, and runpod.serverless.start.

Models load once per worker, when the handler is built, not per job.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from .assistant import Assistant
from .config import Settings
from .contract import Request, error_event, parse_request
from .errors import FishvoiceError
from .factory import build_assistant, configure_logging

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
StreamHandler = Callable[[dict[str, Any]], AsyncIterator[dict[str, Any]]]


def _parse_job(job: dict[str, Any]) -> Request:
    return parse_request(job.get("input") if isinstance(job, dict) else None)


def failure(error: FishvoiceError, debug: bool = False) -> dict[str, Any]:
    """RunPod's way to fail a job: a top-level `error`; the rest of the dict becomes the output."""
    result = error.to_dict()
    if debug and error.__cause__ is not None:
        result["trace"] = "".join(traceback.format_exception(error.__cause__))
    return result


def make_handler(assistant: Assistant, debug: bool = False) -> Handler:
    """The plain handler: gathers the events into the response, or fails the job."""

    async def handler(job: dict[str, Any]) -> dict[str, Any]:
        try:
            request = _parse_job(job)
        except FishvoiceError as exc:
            return failure(exc, debug)
        async for event in assistant.respond(request):
            if event["type"] == "done":
                return {k: v for k, v in event.items() if k != "type"}
            if event["type"] == "error":
                return {k: v for k, v in event.items() if k != "type"}
        return failure(FishvoiceError("internal", "the reply ended without a result"), debug)

    return handler


def make_stream_handler(assistant: Assistant, debug: bool = False) -> StreamHandler:
    """The generator handler: yields each event for RunPod's /stream."""

    async def handler(job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        try:
            request = _parse_job(job)
        except FishvoiceError as exc:
            yield {**error_event(exc), **failure(exc, debug)}
            return
        async for event in assistant.respond(request):
            yield event

    return handler


def main() -> None:
    """Start the worker as RunPod runs it (`python handler.py`, with RunPod's own flags)."""
    import runpod

    settings = Settings()
    configure_logging(settings)
    assistant = build_assistant(settings)
    if settings.streaming:
        runpod.serverless.start({"handler": make_stream_handler(assistant, settings.debug), "return_aggregate_stream": True})
    else:
        runpod.serverless.start({"handler": make_handler(assistant, settings.debug)})
