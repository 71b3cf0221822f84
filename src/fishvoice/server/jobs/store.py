"""The job store: where jobs are kept, as a protocol of atomic operations.

Each operation is one step of a job's state machine and happens whole or not at all, even with
several servers sharing the store:

    IN_QUEUE --claim--> IN_PROGRESS --finish--> COMPLETED | FAILED | CANCELLED | TIMED_OUT
    IN_QUEUE --finish--> CANCELLED (a cancel or a purge; the job never starts)

What the steps mean together (a cancel ends a queued job at once but only flags a running one, for
its runner to stop; /runsync waits; a purge ends every queued job) is the runner's (runner.py), written
once over this protocol. `InProcessJobStore` (memory_store.py) keeps jobs in this process;
`RedisJobStore` (redis_store.py) keeps them in Redis, shared by several servers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from .job import FINAL_STATES, Event, JobView, Outcome

CancelHandler = Callable[[str], None]  # called with a job's id when a cancel of the running job was flagged


@dataclass(frozen=True)
class ClaimedJob:
    """A job a worker took from the queue: now IN_PROGRESS, with the input it was queued with."""

    id: str
    namespace: str
    input: Any
    queued_at: float = 0.0  # wall-clock time, as JobView's
    trace_id: str = ""


def may_end(status: str, only_from: str | None) -> bool:
    """The first end wins: a final job keeps its end, and `only_from` restricts the end to jobs in that
    state. Every store's `finish` follows this rule (Redis's FINISH script says the same in Lua)."""
    return status not in FINAL_STATES and (only_from is None or status == only_from)


class JobStore(Protocol):
    """Jobs, their events and their ends; every operation is atomic. A `namespace` is the caller's:
    another namespace's job is as unknown as a missing one (None), and None as a namespace means any."""

    @property
    def name(self) -> str:
        """What /health reports as the job backend."""
        ...

    async def open(self, on_cancel: CancelHandler) -> None:
        """Connect and start the store's chores (expiry; for a shared store, heartbeats and releasing
        dead servers' jobs). `on_cancel(job_id)` is called for every cancel flagged on a job this store
        may be running, possibly more than once."""

    async def close(self) -> None:
        """Stop the chores and hand back what this server took but never started."""

    async def enqueue(self, job: JobView, raw_input: Any, queue_size: int) -> bool:
        """Queue a new job unless `queue_size` jobs wait already; False when the queue is full."""
        ...

    async def record(self, job: JobView) -> None:
        """Keep a job that ended before it was queued (its input was invalid), as RunPod keeps it."""

    async def claim(self) -> ClaimedJob | None:
        """Take the oldest queued job and start it, skipping jobs cancelled while they waited. Blocks for
        about a second at most; None when no job came."""
        ...

    async def append_event(self, job_id: str, index: int, event: Event) -> None:
        """Put the job's event number `index` (0, 1, ...) on its stream; the same index again adds nothing
        (a step sent again because its answer was lost lands once)."""

    async def take_events(self, job_id: str, namespace: str) -> tuple[str, list[Event]] | None:
        """The job's status and the events not handed out before, read in one step: each event is handed
        out once (a step sent again because its answer was lost hands out the same ones again), and a
        final status comes with every event the job produced."""
        ...

    async def finish(
        self, job_id: str, outcome: Outcome, *, namespace: str | None = None, only_from: str | None = None
    ) -> str | None:
        """End the job with `outcome` where `may_end` allows; return its status after the call."""
        ...

    async def flag_cancel(self, job_id: str, namespace: str) -> str | None:
        """Flag a running job for cancel and tell the server running it (its `on_cancel`); a job in any
        other state is left as it is. Return its status."""
        ...

    async def view(self, job_id: str, namespace: str) -> JobView | None:
        """The job as it is now."""
        ...

    def watch(self, job_id: str) -> AbstractAsyncContextManager[asyncio.Event]:
        """An event set when the job ends, while the block lasts. A shared store may miss a wake-up:
        check the job again now and then."""
        ...

    async def queued(self, namespace: str) -> list[str]:
        """The ids of this namespace's queued jobs, oldest first."""
        ...

    async def counts(self) -> dict[str, int]:
        """Jobs by state: queued, running, and finished within the TTL."""
        ...

    async def expire(self) -> int:
        """Forget finished jobs older than the TTL; return how many were forgotten."""
        ...

    async def release_dead(self) -> int:
        """Release the jobs of servers that stopped answering: those they had started fail, those they
        had only taken go back to the queue. Return how many; 0 where no other server shares the store."""
        ...
