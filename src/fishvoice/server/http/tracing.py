"""Every request's trace: its W3C `traceparent` taken (or a trace begun), the trace id in each of its log lines
and on its answer (`X-Request-Id`, and Fish's `X-Generation-Id` on Fish's routes), and its count and
duration by route, as a plain ASGI middleware so streamed answers and WebSockets are traced whole. The
route's template (a label of few values) is named by `name_route`, a dependency of every route, once routing
chose it."""

from __future__ import annotations

import logging
import time

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ... import metrics, tracing

log = logging.getLogger("fishvoice.requests")

# Polled by probes and scrapers every few seconds: logged only at DEBUG, so they do not drown the rest.
_QUIET = {"/health", "/live", "/ready", "/metrics"}


async def name_route(connection: HTTPConnection) -> None:
    """The request's route, as its template (`/status/{job_id}`), on its trace: for its logs and metrics (async:
    FastAPI would run a plain function in a worker thread, a thread hop on every request)."""
    tracing.name_route(str(getattr(connection.scope.get("route"), "path", "")) or "unmatched")


class RequestTracing:
    """Wraps the app; answers on a path starting with one of `generation_routes` carry X-Generation-Id."""

    def __init__(self, app: ASGIApp, generation_routes: tuple[str, ...]):
        self.app, self.generation_routes = app, generation_routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        trace_id = tracing.trace_id_from(Headers(scope=scope).get("traceparent")) or tracing.new_trace_id()
        with tracing.serving(tracing.Trace(trace_id, "unmatched")) as trace:
            if scope["type"] == "websocket":
                await self.app(scope, receive, send)
            else:
                await self._http(scope, receive, send, trace)

    async def _http(self, scope: Scope, receive: Receive, send: Send, trace: tracing.Trace) -> None:
        started, status, trace_id = time.perf_counter(), 500, trace.trace_id  # failing before an answer: 500

        async def traced(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = trace_id
                headers["traceparent"] = tracing.traceparent(trace_id)
                if scope["path"].startswith(self.generation_routes):
                    headers["x-generation-id"] = trace_id
            await send(message)

        try:
            await self.app(scope, receive, traced)
        finally:
            self._record(scope, trace.route, status, time.perf_counter() - started)

    @staticmethod
    def _record(scope: Scope, route: str, status: int, seconds: float) -> None:
        method = scope["method"]
        metrics.HTTP_REQUESTS.labels(route, method, str(status)).inc()
        metrics.HTTP_SECONDS.labels(route, method).observe(seconds)
        fields = {"method": method, "path": scope["path"], "status": status, "duration_ms": round(seconds * 1000, 1)}
        level = logging.DEBUG if route in _QUIET else logging.INFO
        query = scope.get("query_string", b"").decode("latin-1")  # a key in it is redacted as the line is made
        target = f"{scope['path']}?{query}" if query else scope["path"]
        log.log(level, "%s %s %d in %.0f ms", method, target, status, seconds * 1000, extra=fields)
