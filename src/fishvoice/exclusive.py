"""A backend one stream uses at a time (llama.cpp's model, Whisper's): who holds it, since when, and
whether it still makes progress.

Waiting for it watches the waiter's stop event, so a caller who is gone never starts its work (an LLM's
prefill included). A holder that makes no progress for longer than the stall limit is reported (an error
log naming it, and `report()`, which /health shows), and the backend is rebuilt from its loader: the
waiters get a fresh one instead of waiting forever behind it, and the stalled holder, should it ever
wake, is refused its next step.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from .errors import FishvoiceError

log = logging.getLogger(__name__)

R = TypeVar("R")
_POLL_S = 0.05  # how often a waiter looks at its stop event and at the holder's progress


@dataclass
class _Hold:
    who: str  # what holds it, for logs and /health
    thread: int
    since: float
    progress_at: float
    reported: bool = False  # its stall was logged


class Exclusive(Generic[R]):
    """`resource`, lent to one thread at a time: `take` (watching a stop event), `held` while holding,
    `progressed` after each step, `give_back` when done or pausing."""

    def __init__(self, name: str, load: Callable[[], R], *, stall_s: float, resource: R | None = None):
        self.name = name
        self.stall_s = stall_s
        self._load = load
        self._resource = load() if resource is None else resource
        self._cond = threading.Condition()
        self._hold: _Hold | None = None
        self._last_thread: int | None = None
        self.handovers = 0  # times it passed to another thread, or was rebuilt: a holder's state may be gone
        self.waiting = 0
        self.rebuilds = 0

    @property
    def resource(self) -> R:
        """The resource as it is now, held or not (to close it); a holder uses `held`."""
        return self._resource

    def take(self, stop: threading.Event | None, who: str) -> bool:
        """Wait until this thread holds it; False (not holding) once `stop` is set first. A holder stalled
        past the limit is given up on and the backend rebuilt (see the module)."""
        thread = threading.get_ident()
        with self._cond:
            self.waiting += 1
            try:
                while self._hold is not None and not (stop is not None and stop.is_set()):
                    if time.monotonic() - self._hold.progress_at > self.stall_s:
                        self._rebuild()
                    else:
                        self._cond.wait(_POLL_S)
                if stop is not None and stop.is_set():
                    return False
                now = time.monotonic()
                self._hold = _Hold(who, thread, now, now)
                if self._last_thread != thread:
                    self.handovers += 1
                self._last_thread = thread
                return True
            finally:
                self.waiting -= 1

    @contextmanager
    def using(self, stop: threading.Event | None, who: str) -> Iterator[R | None]:
        """Hold it for a with-block: the resource, or None when `stop` was set before it was free."""
        if not self.take(stop, who):
            yield None
            return
        try:
            yield self.held()
        finally:
            self.give_back()

    def held(self) -> R:
        """The resource, for the thread holding it; a holder given up on (stalled, rebuilt) is refused."""
        hold = self._hold
        if hold is None or hold.thread != threading.get_ident():
            raise FishvoiceError("backend_unavailable", f"{self.name} was taken from this request after it stalled")
        return self._resource

    def progressed(self) -> None:
        with self._cond:
            if self._hold is not None and self._hold.thread == threading.get_ident():
                self._hold.progress_at = time.monotonic()

    def give_back(self) -> None:
        with self._cond:
            if self._hold is not None and self._hold.thread == threading.get_ident():
                self._hold = None
                self._cond.notify()

    def _rebuild(self) -> None:
        assert self._hold is not None
        stalled = self._hold
        held_s = time.monotonic() - stalled.since
        log.error(
            "%s made no progress for %.0f s (held by %s for %.0f s): rebuilding it",
            self.name,
            time.monotonic() - stalled.progress_at,
            stalled.who,
            held_s,
        )
        self._resource = self._load()
        self._hold, self._last_thread = None, None
        self.handovers += 1
        self.rebuilds += 1

    def report(self) -> dict[str, Any]:
        """Who holds it and whether it is stalled (/health); a stall seen here is logged, once."""
        hold, now = self._hold, time.monotonic()
        stalled = hold is not None and now - hold.progress_at > self.stall_s
        if hold is not None and stalled and not hold.reported:
            hold.reported = True
            log.error("%s made no progress for %.0f s, held by %s", self.name, now - hold.progress_at, hold.who)
        return {
            "held_by": hold.who if hold else None,
            "held_s": round(now - hold.since, 3) if hold else 0.0,
            "since_progress_s": round(now - hold.progress_at, 3) if hold else 0.0,
            "stalled": stalled,
            "waiting": self.waiting,
            "rebuilds": self.rebuilds,
        }


@runtime_checkable
class ReportsProgress(Protocol):
    """A backend that says how it is doing: who holds it, whether it stalled (/health)."""

    def progress(self) -> dict[str, Any]: ...
