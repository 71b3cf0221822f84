"""What a request's work carries wherever it runs (tasks, threads, a job on another server): its W3C trace id,
the route it came by, its job, and when it began (what first-audio times are measured from).

Context variables, so every log line of the request (logging.py adds them) and every measurement
(metrics.py) knows them without their being passed down. asyncio tasks and `run_in_thread` copy them.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

# W3C Trace Context: version-traceid-parentid-flags, lowercase hex; an all-zero id is invalid.
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")


@dataclass
class Trace:
    """The request being served: its trace id, route (a route's template, or `job`; named once the request is
    routed), job id, and when it began (time.perf_counter())."""

    trace_id: str = ""
    route: str = ""
    job_id: str = ""
    started: float = field(default_factory=time.perf_counter)


_CURRENT: ContextVar[Trace | None] = ContextVar("fishvoice_trace", default=None)
_OUTSIDE = Trace(started=0.0)  # no request: start-up, a background chore


def current() -> Trace:
    return _CURRENT.get() or _OUTSIDE


@contextmanager
def serving(trace: Trace) -> Iterator[Trace]:
    """`trace` is the current request's while the block runs (and in the tasks and threads it starts)."""
    token = _CURRENT.set(trace)
    try:
        yield trace
    finally:
        _CURRENT.reset(token)


def name_route(route: str) -> None:
    """The current request was routed: `route` is its route's template."""
    if (trace := _CURRENT.get()) is not None:  # outside a request there is nothing to name
        trace.route = route


def restart_clock() -> None:
    """What follows answers something begun now (a realtime reply, a live utterance): its first audio is
    measured from here."""
    _CURRENT.set(dataclasses.replace(current(), started=time.perf_counter()))


def trace_id_from(traceparent: str | None) -> str | None:
    """The trace id of a valid `traceparent` header, else None (a new trace is started)."""
    found = _TRACEPARENT.match((traceparent or "").strip())
    if found is None or found[1] == "ff" or set(found[2]) == {"0"} or set(found[3]) == {"0"}:
        return None
    if found[1] == "00" and found[5]:  # version 00 has exactly four fields
        return None
    return found[2]


def new_trace_id() -> str:
    return secrets.token_hex(16)


def traceparent(trace_id: str) -> str:
    """A `traceparent` for this server's part of the trace (a new span id, sampled)."""
    return f"00-{trace_id}-{secrets.token_hex(8)}-01"
