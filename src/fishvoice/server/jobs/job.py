"""What a job is: its states, what a caller sees of it (`JobView`), how it ended (`Outcome`), and the
errors the job routes raise. The runner (runner.py) moves jobs through these states over a job store
(store.py); nothing here knows where jobs are kept.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ...errors import FishvoiceError
from ..http.errors import TooManyRequests

IN_QUEUE, IN_PROGRESS = "IN_QUEUE", "IN_PROGRESS"
COMPLETED, FAILED, CANCELLED, TIMED_OUT = "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"
STATES = (IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED, TIMED_OUT)
FINAL_STATES = frozenset({COMPLETED, FAILED, CANCELLED, TIMED_OUT})

Event = dict[str, Any]  # one event of a reply, JSON-ready, as /stream hands it out


class QueueFull(TooManyRequests):
    """The queue holds as many jobs as it may; the server answers 429."""

    def __init__(self, size: int):
        super().__init__("backend_unavailable", f"the queue is full ({size} jobs waiting); try again later")


def not_found(job_id: str) -> FishvoiceError:
    return FishvoiceError("not_found", f"job {job_id} not found (unknown, or expired)", "id")


def new_job_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Outcome:
    """How a job ended: its final state, its output, and the error's message where it failed."""

    status: str
    output: dict[str, Any] | None
    error: str | None = None

    @classmethod
    def failure(cls, status: str, error: FishvoiceError) -> Outcome:
        return cls(status, error.to_dict(), error.message)

    @classmethod
    def cancelled(cls, why: str) -> Outcome:
        return cls.failure(CANCELLED, FishvoiceError("cancelled", why))

    @classmethod
    def from_event(cls, event: Event) -> Outcome:
        """The outcome a `done` or `error` event carries (an error's output keeps `trace` where debug is on)."""
        output = {k: v for k, v in event.items() if k != "type"}
        return cls(COMPLETED, output) if event["type"] == "done" else cls(FAILED, output, event["error"])


@dataclass
class JobView:
    """What a caller may see of a job; times are wall-clock seconds, so servers on several hosts agree."""

    id: str
    namespace: str
    status: str = IN_QUEUE
    queued_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    output: dict[str, Any] | None = None
    error: str | None = None
    trace_id: str = ""  # the trace of the request that queued it: its run's log lines carry it, on any server

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATES

    def end(self, outcome: Outcome) -> None:
        """Take on the outcome, now. Whether the job may still end is the store's to decide (`may_end`)."""
        self.status, self.output, self.error = outcome.status, outcome.output, outcome.error
        self.finished_at = time.time()

    def summary(self) -> dict[str, Any]:
        """The job as RunPod's `/status` shows it; times in ms."""
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.started_at is not None or self.finished_at is not None:
            body["delayTime"] = round(((self.started_at or self.finished_at or 0) - self.queued_at) * 1000)
        if self.started_at is not None:
            body["executionTime"] = round(((self.finished_at or time.time()) - self.started_at) * 1000)
        if self.output is not None:
            body["output"] = self.output
        if self.error is not None:
            body["error"] = self.error
        return body
