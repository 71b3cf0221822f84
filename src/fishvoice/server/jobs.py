"""The job table: a bounded queue, a bounded number of jobs running, cancel, time limits, expiry.

`JobTable` runs jobs; where they are kept is its subclass's concern: `MemoryJobTable` keeps them in
this process, `RedisJobTable` (redis_jobs.py) in Redis, shared by several servers. Each job runs in
its own task so `/cancel` stops exactly that job: cancelling the task closes the assistant's event
stream, which stops the LLM thread and the voice, and no turn is stored since a turn is written only
once its reply completed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from abc import ABC, abstractmethod
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from ..assistant import Assistant
from ..contract import Request, parse_request
from ..errors import FishvoiceError

log = logging.getLogger(__name__)

IN_QUEUE, IN_PROGRESS = "IN_QUEUE", "IN_PROGRESS"
COMPLETED, FAILED, CANCELLED, TIMED_OUT = "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"
STATES = (IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED, TIMED_OUT)
FINAL_STATES = frozenset({COMPLETED, FAILED, CANCELLED, TIMED_OUT})
CANCEL_WAIT_S = 10.0  # how long /cancel waits for a running job to stop

Event = dict[str, Any]  # one event of a reply, JSON-ready, as /stream hands it out


class QueueFull(FishvoiceError):
    """The queue holds as many jobs as it may; the server answers 429."""

    def __init__(self, size: int):
        super().__init__("backend_unavailable", f"the queue is full ({size} jobs waiting); try again later")


def not_found(job_id: str) -> FishvoiceError:
    return FishvoiceError("not_found", f"job {job_id} not found (unknown, or expired)", "id")


def new_job_id() -> str:
    return str(uuid.uuid4())


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
    def from_event(cls, event: dict[str, Any]) -> Outcome:
        """The outcome a `done` or `error` event carries (an error's output keeps `trace` where debug is on)."""
        output = {k: v for k, v in event.items() if k != "type"}
        return cls(COMPLETED, output) if event["type"] == "done" else cls(FAILED, output, event["error"])


def validate(raw_input: Any) -> tuple[Request | None, Outcome | None]:
    """The parsed request, or the FAILED outcome an invalid input gets at once, as RunPod's would."""
    try:
        return parse_request(raw_input), None
    except FishvoiceError as exc:
        return None, Outcome.failure(FAILED, exc)


class JobTable(ABC):
    """Runs `concurrency` jobs at once from a bounded queue; subclasses keep the jobs."""

    def __init__(self, assistant: Assistant, *, concurrency: int, queue_size: int, timeout_s: float, ttl_s: float):
        self.assistant = assistant
        self.concurrency = concurrency
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self._running: dict[str, asyncio.Task[None]] = {}  # jobs this process is running
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def running_here(self) -> int:
        return len(self._running)

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"job-worker-{n}") for n in range(self.concurrency)]
        self._tasks += [asyncio.create_task(chore(), name=chore.__name__) for chore in self._chores()]

    async def stop(self) -> None:
        """Stop taking jobs and end the running ones as FAILED (`backend_unavailable`): the caller may send them again."""
        self._stopping = True
        running = list(self._running.values())
        for task in self._tasks + running:
            task.cancel()
        await asyncio.gather(*self._tasks, *running, return_exceptions=True)

    # What the routes ask. `namespace` is the caller's: another key's job is as unknown as a missing one.
    @abstractmethod
    async def submit(self, raw_input: Any, namespace: str) -> JobView: ...

    @abstractmethod
    async def view(self, job_id: str, namespace: str) -> JobView: ...

    @abstractmethod
    async def wait(self, job_id: str, namespace: str, timeout_s: float) -> JobView:
        """The job once it is final, or as it is when the time is up."""

    @abstractmethod
    async def take_stream(self, job_id: str, namespace: str) -> tuple[str, list[dict[str, Any]]]:
        """The job's status and the events produced since the last call, each handed out once."""

    @abstractmethod
    async def cancel(self, job_id: str, namespace: str) -> str:
        """Stop a queued or running job and return its status; a finished one stays as it is."""

    @abstractmethod
    async def purge_queue(self, namespace: str) -> int:
        """Cancel every queued job of this namespace (RunPod's /purge-queue); return how many."""

    @abstractmethod
    async def counts(self) -> dict[str, int]:
        """Jobs by state: queued, running, and finished within the TTL."""

    # How a subclass keeps jobs.
    @abstractmethod
    async def _claim(self) -> tuple[str, str, Request] | None:
        """The next queued job as (id, namespace, request), now IN_PROGRESS; None when none came."""

    @abstractmethod
    async def _emit(self, job_id: str, event: dict[str, Any]) -> None: ...

    @abstractmethod
    async def _finish(self, job_id: str, outcome: Outcome) -> None:
        """End a job unless it has ended already: the first end wins."""

    def _chores(self) -> list:
        """Background coroutines the table needs besides its workers."""
        return []

    async def _work(self) -> None:
        while True:
            try:
                claimed = await self._claim()
            except FishvoiceError as exc:  # the job store is down: keep trying, do not die
                log.warning("cannot take a job: %s", exc.message)
                await asyncio.sleep(1.0)
                continue
            if claimed is None:
                continue
            job_id, namespace, request = claimed
            task = asyncio.create_task(self._execute(job_id, namespace, request), name=f"job-{job_id}")
            self._running[job_id] = task
            try:
                await asyncio.wait([task])
            finally:
                self._running.pop(job_id, None)

    async def _execute(self, job_id: str, namespace: str, request: Request) -> None:
        started = time.monotonic()
        outcome = await self._reply(job_id, namespace, request)
        await self._finish(job_id, outcome)
        log.info("job %s %s in %.0f ms", job_id, outcome.status, (time.monotonic() - started) * 1000)

    async def _reply(self, job_id: str, namespace: str, request: Request) -> Outcome:
        outcome = Outcome.failure(FAILED, FishvoiceError("internal", "the reply ended without a result"))
        try:
            async with asyncio.timeout(self.timeout_s):
                async with aclosing(self.assistant.respond(request, namespace)) as events:
                    async for event in events:
                        await self._emit(job_id, event)
                        if event["type"] in ("done", "error"):
                            outcome = Outcome.from_event(event)
        except TimeoutError:
            outcome = Outcome.failure(
                TIMED_OUT, FishvoiceError("timeout", f"the job ran past its {self.timeout_s:g} s limit")
            )
        except asyncio.CancelledError:
            outcome = Outcome.failure(CANCELLED, FishvoiceError("cancelled", "the job was cancelled"))
            if self._stopping:
                message = "the server stopped before the job finished; send it again"
                outcome = Outcome.failure(FAILED, FishvoiceError("backend_unavailable", message))
        except FishvoiceError as exc:  # the job store failed while the reply ran
            outcome = Outcome.failure(FAILED, exc)
        except Exception as exc:  # the assistant reports its own errors; this is a last resort
            log.exception("job %s crashed", job_id)
            outcome = Outcome.failure(FAILED, FishvoiceError("internal", f"internal error: {type(exc).__name__}"))
        return outcome


@dataclass
class Job(JobView):
    """A job kept in this process."""

    request: Request | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    streamed: int = 0  # events already handed out by /stream
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def end(self, outcome: Outcome) -> None:
        if self.is_final:
            return
        self.status, self.output, self.error, self.finished_at = (
            outcome.status,
            outcome.output,
            outcome.error,
            time.time(),
        )
        self.finished.set()


class MemoryJobTable(JobTable):
    """Queued and running jobs, and finished ones until they expire, in this process."""

    def __init__(self, assistant: Assistant, **limits: Any):
        super().__init__(assistant, **limits)
        self._jobs: dict[str, Job] = {}
        self._queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=self.queue_size)

    async def submit(self, raw_input: Any, namespace: str) -> JobView:
        job = Job(id=new_job_id(), namespace=namespace)
        job.request, invalid = validate(raw_input)
        if invalid is not None:
            job.end(invalid)
        else:
            try:
                self._queue.put_nowait(job)
            except asyncio.QueueFull:
                raise QueueFull(self.queue_size) from None
            log.info("job %s queued (%d waiting)", job.id, self._queue.qsize())
        self._jobs[job.id] = job
        return job

    async def view(self, job_id: str, namespace: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None or job.namespace != namespace:
            raise not_found(job_id)
        return job

    async def wait(self, job_id: str, namespace: str, timeout_s: float) -> JobView:
        job = await self.view(job_id, namespace)
        try:
            await asyncio.wait_for(job.finished.wait(), timeout_s)
        except TimeoutError:
            pass
        return job

    async def take_stream(self, job_id: str, namespace: str) -> tuple[str, list[dict[str, Any]]]:
        job = await self.view(job_id, namespace)
        fresh, job.streamed = job.events[job.streamed :], len(job.events)
        return job.status, fresh

    async def cancel(self, job_id: str, namespace: str) -> str:
        job = await self.view(job_id, namespace)
        if job.status == IN_QUEUE:
            job.end(Outcome.failure(CANCELLED, FishvoiceError("cancelled", "the job was cancelled")))
        elif (task := self._running.get(job_id)) is not None:
            task.cancel()
            await self.wait(job_id, namespace, CANCEL_WAIT_S)
        return job.status

    async def purge_queue(self, namespace: str) -> int:
        queued = [job for job in self._jobs.values() if job.status == IN_QUEUE and job.namespace == namespace]
        for job in queued:
            job.end(Outcome.failure(CANCELLED, FishvoiceError("cancelled", "the queue was purged")))
        return len(queued)

    async def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for job in self._jobs.values():
            counts[job.status] += 1
        return counts

    async def _claim(self) -> tuple[str, str, Request] | None:
        job = await self._queue.get()
        if job.status != IN_QUEUE or job.request is None:  # cancelled while it waited
            return None
        job.status, job.started_at = IN_PROGRESS, time.time()
        return job.id, job.namespace, job.request

    async def _emit(self, job_id: str, event: dict[str, Any]) -> None:
        self._jobs[job_id].events.append(event)

    async def _finish(self, job_id: str, outcome: Outcome) -> None:
        self._jobs[job_id].end(outcome)

    def _chores(self) -> list:
        return [self._expire_forever]

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(min(self.ttl_s / 2, 30.0))
            self.expire()

    def expire(self) -> int:
        """Forget finished jobs older than the TTL; return how many."""
        cutoff = time.time() - self.ttl_s
        old = [job_id for job_id, job in self._jobs.items() if job.is_final and (job.finished_at or 0) < cutoff]
        for job_id in old:
            del self._jobs[job_id]
        return len(old)
