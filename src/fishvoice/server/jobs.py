"""The job table: a bounded queue, a bounded number of jobs running, cancel, time limits, expiry.

Jobs start as soon as they are queued. Each runs in its own task so `/cancel` stops exactly that
job: cancelling the task closes the assistant's event stream, which stops the LLM thread and the
voice, and no turn is stored since a turn is written only once its reply completed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
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


class QueueFull(FishvoiceError):
    """The queue holds as many jobs as it may; the server answers 429."""

    def __init__(self, size: int):
        super().__init__("backend_unavailable", f"the queue is full ({size} jobs waiting); try again later")


@dataclass
class Job:
    """One job and everything a caller may ask of it."""

    id: str
    namespace: str
    request: Request | None
    status: str = IN_QUEUE
    queued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    finished_at: float | None = None
    output: dict[str, Any] | None = None
    error: FishvoiceError | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    streamed: int = 0  # events already handed out by /stream
    task: asyncio.Task[None] | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATES

    def finish(self, status: str, error: FishvoiceError | None = None) -> None:
        if self.is_final:  # the first end wins: a cancel that lands after the reply completed changes nothing
            return
        self.status = status
        self.finished_at = time.monotonic()
        if error is not None:
            self.error, self.output = error, error.to_dict()
        self.finished.set()

    def summary(self) -> dict[str, Any]:
        """The job as RunPod's `/status` shows it; times in ms."""
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.started_at is not None or self.finished_at is not None:
            body["delayTime"] = round(((self.started_at or self.finished_at or 0) - self.queued_at) * 1000)
        if self.started_at is not None:
            body["executionTime"] = round(((self.finished_at or time.monotonic()) - self.started_at) * 1000)
        if self.output is not None:
            body["output"] = self.output
        if self.error is not None:
            body["error"] = self.error.message
        return body

    def take_stream(self) -> list[dict[str, Any]]:
        """The events produced since the last call."""
        fresh, self.streamed = self.events[self.streamed :], len(self.events)
        return fresh


class JobTable:
    """Queued and running jobs, and finished ones until they expire."""

    def __init__(self, assistant: Assistant, *, concurrency: int, queue_size: int, timeout_s: float, ttl_s: float):
        self.assistant = assistant
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self._jobs: dict[str, Job] = {}
        self._queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=queue_size)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"job-worker-{n}") for n in range(self.concurrency)]
        self._tasks.append(asyncio.create_task(self._expire_forever(), name="job-expiry"))

    async def stop(self) -> None:
        running = [job.task for job in self._jobs.values() if job.task is not None and not job.task.done()]
        for task in self._tasks + running:
            task.cancel()
        await asyncio.gather(*self._tasks, *running, return_exceptions=True)

    def submit(self, raw_input: Any, namespace: str) -> Job:
        """Queue a job. An invalid input makes a job that is FAILED from the start, as RunPod's would be."""
        job = Job(id=f"{uuid.uuid4()}", namespace=namespace, request=None)
        try:
            job.request = parse_request(raw_input)
        except FishvoiceError as exc:
            job.finish(FAILED, exc)
            self._jobs[job.id] = job
            return job
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull(self._queue.maxsize) from None
        self._jobs[job.id] = job
        log.info("job %s queued (%d waiting)", job.id, self._queue.qsize())
        return job

    def get(self, job_id: str, namespace: str) -> Job:
        """A job of this namespace; another key's job is as unknown as a missing one."""
        job = self._jobs.get(job_id)
        if job is None or job.namespace != namespace:
            raise FishvoiceError("not_found", f"job {job_id} not found (unknown, or expired)", "id")
        return job

    async def wait(self, job: Job, timeout_s: float) -> Job:
        try:
            await asyncio.wait_for(job.finished.wait(), timeout_s)
        except TimeoutError:
            pass
        return job

    async def cancel(self, job: Job) -> Job:
        """Stop a queued or running job; a finished one stays as it is."""
        if job.status == IN_QUEUE:
            job.finish(CANCELLED, FishvoiceError("cancelled", "the job was cancelled"))
        elif job.status == IN_PROGRESS and job.task is not None:
            job.task.cancel()
            await job.finished.wait()
        return job

    def purge_queue(self, namespace: str) -> int:
        """Cancel every queued job of this namespace (RunPod's /purge-queue)."""
        queued = [job for job in self._jobs.values() if job.status == IN_QUEUE and job.namespace == namespace]
        for job in queued:
            job.finish(CANCELLED, FishvoiceError("cancelled", "the queue was purged"))
        return len(queued)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for job in self._jobs.values():
            counts[job.status] += 1
        return counts

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            if job.status != IN_QUEUE:  # cancelled while it waited
                continue
            job.task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
            await asyncio.wait([job.task])

    async def _run(self, job: Job) -> None:
        assert job.request is not None
        job.status, job.started_at = IN_PROGRESS, time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                async with aclosing(self.assistant.respond(job.request, job.namespace)) as events:
                    async for event in events:
                        job.events.append(event)
                        self._settle(job, event)
        except TimeoutError:
            job.finish(TIMED_OUT, FishvoiceError("timeout", f"the job ran past its {self.timeout_s:g} s limit"))
        except asyncio.CancelledError:
            job.finish(CANCELLED, FishvoiceError("cancelled", "the job was cancelled"))
        except Exception as exc:  # the assistant reports its own errors; this is a last resort
            log.exception("job %s crashed", job.id)
            job.finish(FAILED, FishvoiceError("internal", f"internal error: {type(exc).__name__}"))
        finally:
            if not job.is_final:
                job.finish(FAILED, FishvoiceError("internal", "the reply ended without a result"))
            log.info("job %s %s in %s ms", job.id, job.status, job.summary().get("executionTime"))

    @staticmethod
    def _settle(job: Job, event: dict[str, Any]) -> None:
        if event["type"] == "done":
            job.output = {k: v for k, v in event.items() if k != "type"}
            job.finish(COMPLETED)
        elif event["type"] == "error":
            job.finish(FAILED, FishvoiceError(event["error_code"], event["error"], event.get("field")))
            job.output = {k: v for k, v in event.items() if k != "type"}  # with `trace` where debug is on

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(min(self.ttl_s / 2, 30.0))
            self.expire()

    def expire(self) -> int:
        """Forget finished jobs older than the TTL; return how many."""
        cutoff = time.monotonic() - self.ttl_s
        old = [job_id for job_id, job in self._jobs.items() if job.is_final and (job.finished_at or 0) < cutoff]
        for job_id in old:
            del self._jobs[job_id]
        return len(old)
