"""The job table in Redis: several `fishvoice serve` processes share one queue, and each answers
/status, /stream and /cancel for every job, whichever process runs it.

Keys, under `<prefix>:jobs:`:
  job:<id>      hash: namespace, status, input (until the job ends), times, output, error, worker,
                streamed (the /stream cursor), cancel
  events:<id>   the job's events (JSON), in order
  queue         queued job ids; every server's workers take from its head
  claimed:<w>   ids server <w> took and has not finished; alive:<w> is its expiring heartbeat, and
                when that lapses another server fails its running jobs and queues again the ones it
                had not started (nothing waits forever on a dead server)
  running       ids running now; done:<STATE> ids by finish time, for /health
Each change of a job's state is one Lua script, so no two servers both start, or both end, one job.
Ends are published on `finished` (waking /runsync and /cancel anywhere); a cancel of a running job is
published on `cancel`, and the server running it stops it (and checks the `cancel` field besides, in
case it missed the message).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as redis

from ..assistant import Assistant
from ..contract import Request
from ..errors import FishvoiceError
from ..redis_client import connect
from .jobs import (
    CANCEL_WAIT_S,
    CANCELLED,
    FAILED,
    FINAL_STATES,
    IN_PROGRESS,
    IN_QUEUE,
    STATES,
    JobTable,
    JobView,
    Outcome,
    QueueFull,
    new_job_id,
    not_found,
    validate,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

HEARTBEAT_S = 2.0
HEARTBEAT_TTL_MS = 15_000  # a server silent this long is taken for dead
UNFINISHED_KEEP_S = 24 * 3600  # a queued or running job's record lives at most this long past the job's time limit
BLOCK_S = 1  # how long a worker waits on the queue before looking again (and noticing a stop)

# KEYS: job, queue. ARGV: queue size, id, namespace, input, queued_at, keep ms.
SUBMIT = """
if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'namespace', ARGV[3], 'status', 'IN_QUEUE', 'input', ARGV[4], 'queued_at', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
"""

# KEYS: job, running, claimed. ARGV: id, worker, now. Returns {namespace, input}, or nil if the job
# was cancelled or expired while it waited.
CLAIM = """
if redis.call('HGET', KEYS[1], 'status') ~= 'IN_QUEUE' then
  redis.call('LREM', KEYS[3], 0, ARGV[1])
  return false
end
redis.call('HSET', KEYS[1], 'status', 'IN_PROGRESS', 'worker', ARGV[2], 'started_at', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return redis.call('HMGET', KEYS[1], 'namespace', 'input')
"""

# KEYS: job, events, running, done:<status>, the list holding the id (claimed:<w> or queue).
# ARGV: id, status, output, error, now, keep ms, finished channel, namespace ('*': any), only from this status ('': any).
# Ends the job unless it ended already; returns its status after the call, nil if unknown.
FINISH = """
local job = redis.call('HMGET', KEYS[1], 'namespace', 'status')
if not job[2] or (ARGV[8] ~= '*' and job[1] ~= ARGV[8]) then return false end
local status = job[2]
if status == 'COMPLETED' or status == 'FAILED' or status == 'CANCELLED' or status == 'TIMED_OUT' then return status end
if ARGV[9] ~= '' and status ~= ARGV[9] then return status end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'output', ARGV[3], 'error', ARGV[4], 'finished_at', ARGV[5])
redis.call('HDEL', KEYS[1], 'input')
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
redis.call('LREM', KEYS[5], 0, ARGV[1])
redis.call('PUBLISH', ARGV[7], ARGV[1])
return ARGV[2]
"""

# KEYS: job, events. ARGV: namespace. Returns {status, events...} and moves the cursor past them;
# read in one step, so a final status always comes with every event.
TAKE_STREAM = """
local job = redis.call('HMGET', KEYS[1], 'namespace', 'status', 'streamed')
if not job[2] or job[1] ~= ARGV[1] then return false end
local from = tonumber(job[3] or '0')
local events = redis.call('LRANGE', KEYS[2], from, -1)
if #events > 0 then redis.call('HSET', KEYS[1], 'streamed', from + #events) end
table.insert(events, 1, job[2])
return events
"""

# KEYS: job. ARGV: namespace, id, cancel channel. Flags a running job for cancel; returns its status.
REQUEST_CANCEL = """
local job = redis.call('HMGET', KEYS[1], 'namespace', 'status')
if not job[2] or job[1] ~= ARGV[1] then return false end
if job[2] == 'IN_PROGRESS' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
  redis.call('PUBLISH', ARGV[3], ARGV[2])
end
return job[2]
"""


class RedisJobTable(JobTable):
    """Jobs kept in Redis and shared by every server that uses the same Redis and prefix."""

    def __init__(self, assistant: Assistant, url: str, *, prefix: str = "fishvoice", **limits: Any):
        super().__init__(assistant, **limits)
        self._redis = connect(url, decode_responses=True)
        self._base = f"{prefix}:jobs:"
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{new_job_id()[:8]}"
        self._scripts = {
            name: self._redis.register_script(body)
            for name, body in [
                ("submit", SUBMIT),
                ("claim", CLAIM),
                ("finish", FINISH),
                ("take_stream", TAKE_STREAM),
                ("request_cancel", REQUEST_CANCEL),
            ]
        }
        self._waiters: dict[str, list[asyncio.Event]] = {}

    def _key(self, *parts: str) -> str:
        return self._base + ":".join(parts)

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    @property
    def _keep_ms(self) -> int:
        return int((self.timeout_s + UNFINISHED_KEEP_S) * 1000)

    async def _call(self, what: Callable[[], Awaitable[T]]) -> T:
        try:
            return await what()
        except redis.RedisError as exc:
            raise FishvoiceError("backend_unavailable", f"the job store failed: {exc}") from exc

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._call(lambda: self._scripts[name](keys=keys, args=args))

    async def start(self) -> None:
        await self._call(self._redis.ping)  # an unreachable Redis stops the server before its port opens
        await self._heartbeat()
        await super().start()
        log.info("job table in Redis (%s), shared; this server is %s", self._base.rstrip(":"), self.worker)

    async def stop(self) -> None:
        await super().stop()
        try:  # leave nothing behind: what this server took but never started goes back to the queue
            await self._release(self.worker)
        except (FishvoiceError, redis.RedisError) as exc:
            log.warning("could not hand back this server's jobs: %s", exc)
        await self._redis.aclose()

    # What the routes ask.
    async def submit(self, raw_input: Any, namespace: str) -> JobView:
        job = JobView(id=new_job_id(), namespace=namespace)
        _, invalid = validate(raw_input)
        if invalid is not None:
            return await self._store_failed(job, invalid)
        added = await self._script(
            "submit",
            [self._key("job", job.id), self._key("queue")],
            [self.queue_size, job.id, namespace, json.dumps(raw_input), job.queued_at, self._keep_ms],
        )
        if not added:
            raise QueueFull(self.queue_size)
        log.info("job %s queued", job.id)
        return job

    async def view(self, job_id: str, namespace: str) -> JobView:
        fields = ("namespace", "status", "queued_at", "started_at", "finished_at", "output", "error")
        found = dict(zip(fields, await self._call(lambda: self._redis.hmget(self._key("job", job_id), fields))))
        if found["status"] is None or found["namespace"] != namespace:
            raise not_found(job_id)
        return JobView(
            id=job_id,
            namespace=namespace,
            status=found["status"],
            queued_at=float(found["queued_at"] or 0),
            started_at=_number(found["started_at"]),
            finished_at=_number(found["finished_at"]),
            output=json.loads(found["output"]) if found["output"] else None,
            error=found["error"] or None,
        )

    async def wait(self, job_id: str, namespace: str, timeout_s: float) -> JobView:
        woken = asyncio.Event()
        self._waiters.setdefault(job_id, []).append(woken)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                job = await self.view(job_id, namespace)
                left = deadline - time.monotonic()
                if job.is_final or left <= 0:
                    return job
                try:  # woken by the `finished` message; the second's timeout covers a missed one
                    await asyncio.wait_for(woken.wait(), min(left, 1.0))
                except TimeoutError:
                    pass
        finally:
            self._forget_waiter(job_id, woken)

    async def take_stream(self, job_id: str, namespace: str) -> tuple[str, list[dict[str, Any]]]:
        found = await self._script("take_stream", [self._key("job", job_id), self._key("events", job_id)], [namespace])
        if not found:
            raise not_found(job_id)
        return found[0], [json.loads(event) for event in found[1:]]

    async def cancel(self, job_id: str, namespace: str) -> str:
        status = await self._end(
            job_id,
            Outcome.failure(CANCELLED, FishvoiceError("cancelled", "the job was cancelled")),
            self._key("queue"),
            namespace=namespace,
            only_from=IN_QUEUE,
        )
        if status == IN_PROGRESS:
            await self._script("request_cancel", [self._key("job", job_id)], [namespace, job_id, self._key("cancel")])
            if (task := self._running.get(job_id)) is not None:
                task.cancel()
            status = (await self.wait(job_id, namespace, CANCEL_WAIT_S)).status
        if status is None:
            raise not_found(job_id)
        return status

    async def purge_queue(self, namespace: str) -> int:
        purged = Outcome.failure(CANCELLED, FishvoiceError("cancelled", "the queue was purged"))
        queued = await self._call(lambda: self._redis.lrange(self._key("queue"), 0, -1))
        ends = [
            await self._end(job_id, purged, self._key("queue"), namespace=namespace, only_from=IN_QUEUE)
            for job_id in queued
        ]
        return ends.count(CANCELLED)

    async def counts(self) -> dict[str, int]:
        since = time.time() - self.ttl_s
        finals = [state for state in STATES if state in FINAL_STATES]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.llen(self._key("queue")).scard(self._key("running"))
            for state in finals:
                pipe.zcount(self._key("done", state), since, "+inf")
            found = await self._call(pipe.execute)
        return {IN_QUEUE: found[0], IN_PROGRESS: found[1], **dict(zip(finals, found[2:]))}

    # How jobs are kept.
    async def _claim(self) -> tuple[str, str, Request] | None:
        claimed_key = self._key("claimed", self.worker)
        job_id = await self._call(lambda: self._redis.blmove(self._key("queue"), claimed_key, BLOCK_S, "LEFT", "RIGHT"))
        if job_id is None:
            return None
        found = await self._script(
            "claim", [self._key("job", job_id), self._key("running"), claimed_key], [job_id, self.worker, time.time()]
        )
        if not found:
            return None
        namespace, raw_input = found
        request, invalid = validate(json.loads(raw_input))
        if invalid is not None:  # it passed at /run; a different version of us may have queued it
            await self._finish(job_id, invalid)
            return None
        return job_id, namespace, request

    async def _emit(self, job_id: str, event: dict[str, Any]) -> None:
        key = self._key("events", job_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            await self._call(pipe.rpush(key, json.dumps(event)).pexpire(key, self._keep_ms).execute)

    async def _finish(self, job_id: str, outcome: Outcome) -> None:
        """End the job; keep trying through a Redis outage, or it would look like it runs forever."""
        for attempt in range(60):
            try:
                await self._end(job_id, outcome, self._key("claimed", self.worker))
                return
            except FishvoiceError as exc:
                log.warning("job %s: cannot record its end (%s); trying again", job_id, exc.message)
                await asyncio.sleep(min(0.25 * 2**attempt, 2.0))
        log.error("job %s: its end (%s) was never recorded", job_id, outcome.status)

    async def _end(
        self, job_id: str, outcome: Outcome, holder: str, *, namespace: str = "*", only_from: str = ""
    ) -> str | None:
        keys = [
            self._key("job", job_id),
            self._key("events", job_id),
            self._key("running"),
            self._key("done", outcome.status),
            holder,
        ]
        args = [
            job_id,
            outcome.status,
            json.dumps(outcome.output) if outcome.output is not None else "",
            outcome.error or "",
            time.time(),
            self._ttl_ms,
            self._key("finished"),
            namespace,
            only_from,
        ]
        return await self._script("finish", keys, args)

    async def _store_failed(self, job: JobView, outcome: Outcome) -> JobView:
        """Keep a job that failed at /run (invalid input), as RunPod's would be kept; return it as stored."""
        key = self._key("job", job.id)
        job.status, job.output, job.error, job.finished_at = outcome.status, outcome.output, outcome.error, time.time()
        fields = {
            "namespace": job.namespace,
            "status": job.status,
            "queued_at": job.queued_at,
            "finished_at": job.finished_at,
            "output": json.dumps(job.output),
            "error": job.error or "",
        }
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields).pexpire(key, self._ttl_ms).zadd(
                self._key("done", job.status), {job.id: job.finished_at}
            )
            await self._call(pipe.execute)
        return job

    # Background chores.
    def _chores(self) -> list:
        return [self._listen, self._keep_alive]

    async def _listen(self) -> None:
        """Wake waiters when a job ends anywhere; stop a job of ours that someone cancelled."""
        finished, cancel = self._key("finished"), self._key("cancel")
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(finished, cancel)
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            self._on_message(message["channel"], message["data"], cancel)
            except redis.RedisError as exc:
                log.warning("job messages interrupted (%s); listening again", exc)
                await asyncio.sleep(1.0)

    def _on_message(self, channel: str, job_id: str, cancel_channel: str) -> None:
        if channel == cancel_channel:
            if (task := self._running.get(job_id)) is not None:
                log.info("job %s: cancelled from another server", job_id)
                task.cancel()
            return
        for woken in self._waiters.get(job_id, []):
            woken.set()

    def _forget_waiter(self, job_id: str, woken: asyncio.Event) -> None:
        waiters = self._waiters.get(job_id, [])
        if woken in waiters:
            waiters.remove(woken)
        if not waiters:
            self._waiters.pop(job_id, None)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self._heartbeat()
                await self._stop_flagged()
                await self._recover_dead_servers()
                await self._forget_old_counts()
            except (FishvoiceError, redis.RedisError) as exc:
                log.warning("job table upkeep failed: %s", exc)

    async def _heartbeat(self) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key("alive", self.worker), "1", px=HEARTBEAT_TTL_MS).sadd(self._key("workers"), self.worker)
            await self._call(pipe.execute)

    async def _stop_flagged(self) -> None:
        """Cancel running jobs whose `cancel` flag is set: the `cancel` message may have been missed."""
        running = list(self._running)
        if not running:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in running:
                pipe.hget(self._key("job", job_id), "cancel")
            flags = await self._call(pipe.execute)
        for job_id, flag in zip(running, flags):
            if flag and (task := self._running.get(job_id)) is not None:
                task.cancel()

    async def _recover_dead_servers(self) -> None:
        for worker in await self._call(lambda: self._redis.smembers(self._key("workers"))):
            if worker != self.worker and not await self._call(lambda: self._redis.exists(self._key("alive", worker))):
                log.warning("server %s stopped answering; taking over its jobs", worker)
                await self._release(worker)

    async def _release(self, worker: str) -> None:
        """A gone server's jobs: those it had started fail, those it had only taken go back to the queue."""
        claimed_key = self._key("claimed", worker)
        lost = Outcome.failure(
            FAILED,
            FishvoiceError(
                "backend_unavailable", "the server running this job stopped before it finished; send it again"
            ),
        )
        for job_id in await self._call(lambda: self._redis.lrange(claimed_key, 0, -1)):
            status = await self._end(job_id, lost, claimed_key, only_from=IN_PROGRESS)
            if status == IN_QUEUE:  # a second janitor doing the same is harmless: a job starts only from IN_QUEUE, once
                await self._call(lambda: self._redis.lpush(self._key("queue"), job_id))
        async with self._redis.pipeline(transaction=True) as pipe:
            await self._call(
                pipe.delete(claimed_key).srem(self._key("workers"), worker).delete(self._key("alive", worker)).execute
            )

    async def _forget_old_counts(self) -> None:
        cutoff = time.time() - self.ttl_s
        async with self._redis.pipeline(transaction=False) as pipe:
            for state in FINAL_STATES:
                pipe.zremrangebyscore(self._key("done", state), "-inf", cutoff)
            await self._call(pipe.execute)


def _number(value: str | None) -> float | None:
    return float(value) if value else None
