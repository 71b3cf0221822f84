"""Jobs kept in this process: a queue of ids, a dict of records, and an asyncio.Event per job that is
set when it ends. One server only; each operation runs without a pause, so each is atomic.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from .job import IN_PROGRESS, IN_QUEUE, STATES, Event, JobView, Outcome
from .store import CancelHandler, ClaimedJob, may_end

log = logging.getLogger(__name__)

CLAIM_WAIT_S = 1.0  # how long `claim` waits for a job before answering None


@dataclass
class _Record:
    """A job with what only the store sees: its input (until it ends), its events and the /stream cursor."""

    job: JobView
    input: Any = None
    events: list[Event] = field(default_factory=list)
    streamed: int = 0
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class InProcessJobStore:
    """Queued and running jobs, and finished ones until they expire, in this process."""

    name = "MemoryJobTable"  # the name /health has always reported; callers may match on it

    def __init__(self, *, ttl_s: float):
        self.ttl_s = ttl_s
        self._records: dict[str, _Record] = {}
        self._queue: deque[str] = deque()
        self._queued = asyncio.Event()  # set while the queue may hold a job
        self._on_cancel: CancelHandler = _ignore
        self._chores: list[asyncio.Task[None]] = []

    async def open(self, on_cancel: CancelHandler) -> None:
        self._on_cancel = on_cancel
        self._chores = [asyncio.create_task(self._expire_forever(), name="expire-jobs")]

    async def close(self) -> None:
        for task in self._chores:
            task.cancel()
        await asyncio.gather(*self._chores, return_exceptions=True)

    async def enqueue(self, job: JobView, raw_input: Any, queue_size: int) -> bool:
        if len(self._queue) >= queue_size:
            return False
        self._records[job.id] = _Record(copy.copy(job), raw_input)
        self._queue.append(job.id)
        self._queued.set()
        log.info("job %s queued (%d waiting)", job.id, len(self._queue))
        return True

    async def record(self, job: JobView) -> None:
        record = _Record(copy.copy(job))
        record.ended.set()
        self._records[job.id] = record

    async def claim(self) -> ClaimedJob | None:
        if not self._queue:
            self._queued.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._queued.wait(), CLAIM_WAIT_S)
        while self._queue:
            record = self._records.get(self._queue.popleft())
            if record is not None and record.job.status == IN_QUEUE:
                record.job.status, record.job.started_at = IN_PROGRESS, time.time()
                job = record.job
                return ClaimedJob(job.id, job.namespace, record.input, job.queued_at, job.trace_id)
        return None

    async def append_event(self, job_id: str, index: int, event: Event) -> None:
        if (record := self._records.get(job_id)) is not None and index == len(record.events):
            record.events.append(event)

    async def take_events(self, job_id: str, namespace: str) -> tuple[str, list[Event]] | None:
        record = self._find(job_id, namespace)
        if record is None:
            return None
        fresh, record.streamed = record.events[record.streamed :], len(record.events)
        return record.job.status, fresh

    async def finish(
        self, job_id: str, outcome: Outcome, *, namespace: str | None = None, only_from: str | None = None
    ) -> str | None:
        record = self._find(job_id, namespace)
        if record is None:
            return None
        if may_end(record.job.status, only_from):
            if record.job.status == IN_QUEUE:
                self._queue.remove(job_id)
            record.job.end(outcome)
            record.input = None
            record.ended.set()
        return record.job.status

    async def flag_cancel(self, job_id: str, namespace: str) -> str | None:
        record = self._find(job_id, namespace)
        if record is None:
            return None
        if record.job.status == IN_PROGRESS:  # the runner is in this process: tell it now, no flag to keep
            self._on_cancel(job_id)
        return record.job.status

    async def view(self, job_id: str, namespace: str) -> JobView | None:
        record = self._find(job_id, namespace)
        return copy.copy(record.job) if record is not None else None

    @asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[asyncio.Event]:
        record = self._records.get(job_id)
        yield record.ended if record is not None else asyncio.Event()

    async def queued(self, namespace: str) -> list[str]:
        return [job_id for job_id in self._queue if self._records[job_id].job.namespace == namespace]

    async def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for record in self._records.values():
            counts[record.job.status] += 1
        return counts

    async def expire(self) -> int:
        cutoff = time.time() - self.ttl_s
        old = [job_id for job_id, r in self._records.items() if r.job.is_final and (r.job.finished_at or 0) < cutoff]
        for job_id in old:
            del self._records[job_id]
        return len(old)

    async def release_dead(self) -> int:
        return 0  # no other server shares this store

    def _find(self, job_id: str, namespace: str | None) -> _Record | None:
        record = self._records.get(job_id)
        if record is None or (namespace is not None and record.job.namespace != namespace):
            return None
        return record

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(min(self.ttl_s / 2, 30.0))
            await self.expire()


def _ignore(job_id: str) -> None:
    """The cancel handler of a store not opened yet."""
