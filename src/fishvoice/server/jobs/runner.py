"""The job runner: a bounded queue, a bounded number of jobs running, cancel, time limits.

`JobRunner` answers the job routes and runs jobs over a `JobStore` (store.py), which keeps them: the
memory store in this process, the Redis store shared by several servers. What a cancel, a purge or a
wait means is written here once; each store only does the atomic steps. Each job runs in its own task
so a cancel stops exactly that job: cancelling the task closes the assistant's event stream, which
stops the LLM thread and the voice, and no turn is stored since a turn is written only once its reply
completed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import Any

from ... import metrics, tracing
from ...assistant import Assistant
from ...contract import DoneEvent, ErrorEvent, ReplyRequest, guarded, parse_request
from ...errors import FishvoiceError, as_api_error
from .job import (
    CANCELLED,
    FAILED,
    IN_PROGRESS,
    IN_QUEUE,
    TIMED_OUT,
    Event,
    JobView,
    Outcome,
    QueueFull,
    new_job_id,
    not_found,
)
from .store import ClaimedJob, JobStore

log = logging.getLogger(__name__)

CANCEL_WAIT_S = 10.0  # how long /cancel waits for a running job to stop
RECHECK_S = 1.0  # a waiter looks at the job at least this often, in case a shared store's wake-up was missed
FINISH_TRIES = 60  # a job's end is retried through a store outage for about two minutes


@dataclass(frozen=True)
class JobLimits:
    """How many jobs run at once, how many may wait, how long one may run, how long a finished one is kept."""

    concurrency: int
    queue_size: int
    timeout_s: float
    ttl_s: float


class JobRunner:
    """Runs `limits.concurrency` jobs at once from the store's queue, and answers what the routes ask.
    A `namespace` is the caller's: another key's job is as unknown as a missing one."""

    def __init__(self, assistant: Assistant, store: JobStore, limits: JobLimits, *, debug: bool = False):
        self.assistant = assistant
        self.store = store
        self.limits = limits
        self.debug = debug  # unexpected errors carry their stack trace to the caller
        self.running: dict[str, asyncio.Task[None]] = {}  # the jobs this server runs, by id
        self._workers: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def running_here(self) -> int:
        return len(self.running)

    async def start(self) -> None:
        await self.store.open(self.stop_job)
        self._workers = [
            asyncio.create_task(self._work(), name=f"job-worker-{n}") for n in range(self.limits.concurrency)
        ]

    async def stop(self) -> None:
        """Stop taking jobs and end the running ones as FAILED (`backend_unavailable`): the caller may
        send them again."""
        self._stopping = True
        jobs = list(self.running.values())
        for task in self._workers:
            task.cancel()
        for job_id in list(self.running):
            self.stop_job(job_id)
        await asyncio.gather(*self._workers, *jobs, return_exceptions=True)
        await self.store.close()

    def stop_job(self, job_id: str) -> None:
        """Stop the job if it runs here; the store calls this for every cancel flagged on a job, anywhere."""
        task = self.running.get(job_id)
        if task is not None and not task.cancelling():  # once: a second cancel could cut short the record of its end
            log.info("job %s: stopping it, as asked", job_id)
            task.cancel()

    # What the routes ask.
    async def submit(self, raw_input: Any, namespace: str) -> JobView:
        """Queue the job; an invalid input fails it at once, as RunPod's would."""
        job = JobView(id=new_job_id(), namespace=namespace, trace_id=tracing.current().trace_id)
        try:
            parse_request(raw_input)
        except FishvoiceError as exc:
            job.end(Outcome.failure(FAILED, exc))
            await self.store.record(job)
            metrics.JOBS.labels(FAILED).inc()
            return job
        if not await self.store.enqueue(job, raw_input, self.limits.queue_size):
            raise QueueFull(self.limits.queue_size)
        return job

    async def view(self, job_id: str, namespace: str) -> JobView:
        job = await self.store.view(job_id, namespace)
        if job is None:
            raise not_found(job_id)
        return job

    async def wait(self, job_id: str, namespace: str, timeout_s: float) -> JobView:
        """The job once it is final, or as it is when the time is up."""
        deadline = time.monotonic() + timeout_s
        async with self.store.watch(job_id) as ended:
            while True:
                job = await self.view(job_id, namespace)
                left = deadline - time.monotonic()
                if job.is_final or left <= 0:
                    return job
                with suppress(TimeoutError):
                    await asyncio.wait_for(ended.wait(), min(left, RECHECK_S))

    async def take_stream(self, job_id: str, namespace: str) -> tuple[str, list[Event]]:
        """The job's status and the events produced since the last call, each handed out once."""
        taken = await self.store.take_events(job_id, namespace)
        if taken is None:
            raise not_found(job_id)
        return taken

    async def cancel(self, job_id: str, namespace: str) -> str:
        """A queued job is cancelled at once; a running one is stopped by whichever server runs it, and
        this waits for it to stop. A finished job stays as it is. Returns the job's status."""
        cancelled = Outcome.cancelled("the job was cancelled")
        status = await self.store.finish(job_id, cancelled, namespace=namespace, only_from=IN_QUEUE)
        if status == CANCELLED:
            metrics.JOBS.labels(CANCELLED).inc()  # a queued job: this server ended it
        if status == IN_PROGRESS:
            await self.store.flag_cancel(job_id, namespace)
            status = (await self.wait(job_id, namespace, CANCEL_WAIT_S)).status
        if status is None:
            raise not_found(job_id)
        return status

    async def purge_queue(self, namespace: str) -> int:
        """Cancel every queued job of this namespace (RunPod's /purge-queue); return how many."""
        purged = Outcome.cancelled("the queue was purged")
        ends = [
            await self.store.finish(job_id, purged, namespace=namespace, only_from=IN_QUEUE)
            for job_id in await self.store.queued(namespace)
        ]
        metrics.JOBS.labels(CANCELLED).inc(ends.count(CANCELLED))
        return ends.count(CANCELLED)

    async def counts(self) -> dict[str, int]:
        """Jobs by state: queued, running, and finished within the TTL (every server's, where shared)."""
        return await self.store.counts()

    # Running jobs.
    async def _work(self) -> None:
        while True:
            try:
                claimed = await self.store.claim()
            except FishvoiceError as exc:  # the job store is down: keep trying, do not die
                log.warning("cannot take a job: %s", exc.message)
                await asyncio.sleep(1.0)
                continue
            if claimed is not None:
                await self._run(claimed)

    async def _run(self, claimed: ClaimedJob) -> None:
        try:
            request = parse_request(claimed.input)
        except FishvoiceError as exc:  # it passed at /run; a different version of us may have queued it
            await self._record_end(claimed.id, Outcome.failure(FAILED, exc))
            return
        metrics.JOB_WAIT_SECONDS.observe(max(0.0, time.time() - claimed.queued_at))
        # The job's task runs as the request that queued it: its logs carry that trace, its times start here.
        with tracing.serving(tracing.Trace(claimed.trace_id, "job", claimed.id)):
            task = asyncio.create_task(self._execute(claimed.id, claimed.namespace, request), name=f"job-{claimed.id}")
        self.running[claimed.id] = task
        try:
            await asyncio.wait([task])
        finally:
            self.running.pop(claimed.id, None)

    async def _execute(self, job_id: str, namespace: str, request: ReplyRequest) -> None:
        started = time.monotonic()
        outcome = await self._reply(job_id, namespace, request)
        await self._record_end(job_id, outcome)
        seconds = time.monotonic() - started
        metrics.JOBS.labels(outcome.status).inc()
        metrics.JOB_SECONDS.labels(outcome.status).observe(seconds)
        log.info("job %s %s in %.0f ms", job_id, outcome.status, seconds * 1000, extra={"duration_ms": seconds * 1000})

    async def _reply(self, job_id: str, namespace: str, request: ReplyRequest) -> Outcome:
        """Run the assistant, keeping each event for /stream; the outcome the final event carries, or the
        one a time limit, a cancel, a stop or a failure makes."""
        outcome = Outcome.failure(FAILED, FishvoiceError("internal", "the reply ended without a result"))
        try:
            async with asyncio.timeout(self.limits.timeout_s):
                # Closing the events closes the reply at once: its LLM thread and voice stop, and nothing is stored.
                reply = guarded(self.assistant.respond(request, namespace), debug=self.debug)
                async with aclosing(reply) as events:
                    index = 0
                    async for event in events:
                        wire = event.to_dict()
                        await self.store.append_event(job_id, index, wire)
                        index += 1
                        if isinstance(event, DoneEvent | ErrorEvent):
                            outcome = Outcome.from_event(wire)
        except TimeoutError:
            why = f"the job ran past its {self.limits.timeout_s:g} s limit"
            outcome = Outcome.failure(TIMED_OUT, FishvoiceError("timeout", why))
        except asyncio.CancelledError:
            outcome = self._interrupted()
        except FishvoiceError as exc:  # the job store failed while the reply ran
            outcome = Outcome.failure(FAILED, exc)
        except Exception as exc:  # the reply's own failures end it as an error event; this is a last resort
            log.exception("job %s crashed", job_id)
            outcome = Outcome.failure(FAILED, as_api_error(exc))
        return outcome

    def _interrupted(self) -> Outcome:
        """A job's task was cancelled: by a cancel, or by this server stopping (the caller may send it again)."""
        if not self._stopping:
            return Outcome.cancelled("the job was cancelled")
        why = "the server stopped before the job finished; send it again"
        return Outcome.failure(FAILED, FishvoiceError("backend_unavailable", why))

    async def _record_end(self, job_id: str, outcome: Outcome) -> None:
        """End the job in the store; keep trying through an outage, or it would look like it runs forever."""
        for attempt in range(FINISH_TRIES):
            try:
                await self.store.finish(job_id, outcome)
                return
            except FishvoiceError as exc:
                log.warning("job %s: cannot record its end (%s); trying again", job_id, exc.message)
                await asyncio.sleep(min(0.25 * 2**attempt, 2.0))
        log.error("job %s: its end (%s) was never recorded", job_id, outcome.status)
