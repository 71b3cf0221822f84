"""Jobs kept in Redis: several `fishvoice serve` processes share one queue, and each answers /status,
/stream and /cancel for every job, whichever process runs it.

Keys, under `<prefix>:jobs:`:
  job:<id>      hash: namespace, status, input (until the job ends), times, output, error, worker,
                streamed (the /stream cursor; take, take_from: the last read, to repeat it), cancel
  events:<id>   the job's events (JSON), in order, each put at its index (once)
  queue         queued job ids; every server's workers take from its head
  claimed:<w>   ids server <w> took and has not finished; alive:<w> is its expiring heartbeat, and
                when that lapses another server fails its running jobs and queues again the ones it
                had not started (nothing waits forever on a dead server); workers: every <w>
  running       ids running now; done:<STATE> ids by finish time, for /health
Each step of a job's state machine is one Lua script, so no two servers both start, or both end, one
job, and a step sent again because its answer was lost (Redis restarting) does no more than the first
did. Ends are published on `finished` (waking watchers anywhere); a cancel of a running job is
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
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager, suppress
from typing import Any, TypeVar, cast

import redis.asyncio as redis
from redis.typing import EncodableT, FieldT

from ...errors import FishvoiceError
from ...redis_client import answered, connect
from .job import FAILED, FINAL_STATES, IN_PROGRESS, IN_QUEUE, Event, JobView, Outcome, new_job_id
from .store import CancelHandler, ClaimedJob

log = logging.getLogger(__name__)
T = TypeVar("T")

HEARTBEAT_S = 2.0
HEARTBEAT_TTL_MS = 15_000  # a server silent this long is taken for dead
UNFINISHED_KEEP_S = 24 * 3600  # a queued or running job's record lives at most this long past the job's time limit
CLOSE_WAIT_S = 5.0  # how long closing waits for the store's own tasks to stop
BLOCK_S = 1  # how long `claim` waits on the queue before answering None
LISTEN_WAIT_S = 5.0  # how long `open` waits for the subscription before going on without it

# KEYS: job, queue. ARGV: queue size, id, namespace, input, queued_at, keep ms, trace id. A job kept already is
# this step sent again.
ENQUEUE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'namespace', ARGV[3], 'status', 'IN_QUEUE', 'input', ARGV[4], 'queued_at', ARGV[5],
  'trace', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
"""

# KEYS: job, running, claimed. ARGV: id, worker, now. Returns {namespace, input, queued_at, trace}, or nil if the job
# was cancelled or expired while it waited. A job this server started already is this step sent again.
CLAIM = """
local job = redis.call('HMGET', KEYS[1], 'status', 'worker')
local claimed = {'namespace', 'input', 'queued_at', 'trace'}
if job[1] == 'IN_PROGRESS' and job[2] == ARGV[2] then return redis.call('HMGET', KEYS[1], unpack(claimed)) end
if job[1] ~= 'IN_QUEUE' then
  redis.call('LREM', KEYS[3], 0, ARGV[1])
  return false
end
redis.call('HSET', KEYS[1], 'status', 'IN_PROGRESS', 'worker', ARGV[2], 'started_at', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return redis.call('HMGET', KEYS[1], unpack(claimed))
"""

# KEYS: job, events, running, done:<status>, queue, claimed:<w> of the server ending the job.
# ARGV: id, status, output, error, now, ttl ms, finished channel, namespace ('*': any), only from ('': any).
# Ends the job where store.may_end allows (the first end wins); returns its status after the call,
# nil if it is unknown.
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
if status == 'IN_QUEUE' then redis.call('LREM', KEYS[5], 0, ARGV[1]) end
redis.call('LREM', KEYS[6], 0, ARGV[1])
redis.call('PUBLISH', ARGV[7], ARGV[1])
return ARGV[2]
"""

# KEYS: job, events. ARGV: namespace, the take's id. Returns {status, events...} and moves the cursor past
# them; read in one step, so a final status always comes with every event. The same id again (the take
# sent again, its answer lost) reads from where it read the first time.
TAKE_EVENTS = """
local job = redis.call('HMGET', KEYS[1], 'namespace', 'status', 'streamed', 'take', 'take_from')
if not job[2] or job[1] ~= ARGV[1] then return false end
local from = tonumber(job[3] or '0')
if job[4] == ARGV[2] then from = tonumber(job[5]) end
local events = redis.call('LRANGE', KEYS[2], from, -1)
redis.call('HSET', KEYS[1], 'streamed', from + #events, 'take', ARGV[2], 'take_from', from)
table.insert(events, 1, job[2])
return events
"""

# KEYS: events. ARGV: index, event, keep ms. The event goes in only at its index: once.
APPEND_EVENT = """
if redis.call('LLEN', KEYS[1]) == tonumber(ARGV[1]) then redis.call('RPUSH', KEYS[1], ARGV[2]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
"""

# KEYS: job. ARGV: namespace, id, cancel channel. Flags a running job for cancel; returns its status.
FLAG_CANCEL = """
local job = redis.call('HMGET', KEYS[1], 'namespace', 'status')
if not job[2] or job[1] ~= ARGV[1] then return false end
if job[2] == 'IN_PROGRESS' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
  redis.call('PUBLISH', ARGV[3], ARGV[2])
end
return job[2]
"""

SCRIPTS = {
    "enqueue": ENQUEUE,
    "claim": CLAIM,
    "finish": FINISH,
    "take_events": TAKE_EVENTS,
    "append_event": APPEND_EVENT,
    "flag_cancel": FLAG_CANCEL,
}
VIEW_FIELDS = ("namespace", "status", "queued_at", "started_at", "finished_at", "output", "error")


class RedisJobStore:
    """Jobs kept in Redis and shared by every server that uses the same Redis and prefix."""

    name = "RedisJobTable"  # the name /health has always reported; callers may match on it

    def __init__(self, url: str, *, prefix: str = "fishvoice", ttl_s: float, timeout_s: float):
        self.ttl_s = ttl_s
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{new_job_id()[:8]}"  # this server
        self._redis = connect(url, decode_responses=True)
        self._base = f"{prefix}:jobs:"
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._keep_ms = int((timeout_s + UNFINISHED_KEEP_S) * 1000)
        self._scripts = {name: self._redis.register_script(body) for name, body in SCRIPTS.items()}
        self._messages = _Messages(self._redis, self._key("finished"), self._key("cancel"))
        self._chores: list[asyncio.Task[None]] = []

    def _key(self, *parts: str) -> str:
        return self._base + ":".join(parts)

    async def _call(self, what: Awaitable[T]) -> T:
        return await answered(what, "job store")

    async def _script(self, name: str, keys: Sequence[str], args: Sequence[EncodableT]) -> Any:
        return await self._call(self._scripts[name](keys=keys, args=args))

    # Lifecycle.
    async def open(self, on_cancel: CancelHandler) -> None:
        self._messages.on_cancel = on_cancel
        await self._call(self._redis.ping())  # an unreachable Redis stops the server before its port opens
        await self._heartbeat()
        self._chores = [
            asyncio.create_task(self._messages.listen(), name="job-messages"),
            asyncio.create_task(self._upkeep(), name="job-upkeep"),
        ]
        with suppress(TimeoutError):  # /runsync wakes on messages: subscribe before the first job
            await asyncio.wait_for(self._messages.listening.wait(), LISTEN_WAIT_S)
        log.info("jobs kept in Redis (%s), shared; this server is %s", self._base.rstrip(":"), self.worker)

    async def close(self) -> None:
        for task in self._chores:
            task.cancel()
        # Bounded: a subscription cancelled mid-read can hang in redis-py's clean-up, and a server's stop must not.
        if self._chores:
            _, stuck = await asyncio.wait(self._chores, timeout=CLOSE_WAIT_S)
            if stuck:
                log.warning("%d job-store tasks did not stop within %g s; leaving them", len(stuck), CLOSE_WAIT_S)
        try:  # leave nothing behind: what this server took but never started goes back to the queue
            await self._release(self.worker)
        except FishvoiceError as exc:
            log.warning("could not hand back this server's jobs: %s", exc.message)
        with suppress(TimeoutError):
            await asyncio.wait_for(self._redis.aclose(), CLOSE_WAIT_S)

    # The state machine's steps.
    async def enqueue(self, job: JobView, raw_input: Any, queue_size: int) -> bool:
        keys = [self._key("job", job.id), self._key("queue")]
        args: list[EncodableT] = [
            queue_size,
            job.id,
            job.namespace,
            json.dumps(raw_input),
            job.queued_at,
            self._keep_ms,
            job.trace_id,
        ]
        if not await self._script("enqueue", keys, args):
            return False
        log.info("job %s queued", job.id)
        return True

    async def record(self, job: JobView) -> None:
        key = self._key("job", job.id)
        finished_at = job.finished_at or time.time()
        fields: dict[FieldT, EncodableT] = {
            "namespace": job.namespace,
            "status": job.status,
            "queued_at": job.queued_at,
            "finished_at": finished_at,
            "output": json.dumps(job.output),
            "error": job.error or "",
        }
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.pexpire(key, self._ttl_ms)
            pipe.zadd(self._key("done", job.status), {job.id: finished_at})
            await self._call(pipe.execute())

    async def claim(self) -> ClaimedJob | None:
        claimed = self._key("claimed", self.worker)
        while True:
            found = await self._call(self._redis.blmove(self._key("queue"), claimed, BLOCK_S, "LEFT", "RIGHT"))
            if found is None:
                return None
            job_id = _text(found)
            keys = [self._key("job", job_id), self._key("running"), claimed]
            started = await self._script("claim", keys, [job_id, self.worker, time.time()])
            if started:  # else it was cancelled or expired while it waited: take the next
                namespace, raw_input, queued_at, trace = started
                return ClaimedJob(job_id, namespace, json.loads(raw_input), float(queued_at or 0), trace or "")

    async def append_event(self, job_id: str, index: int, event: Event) -> None:
        await self._script("append_event", [self._key("events", job_id)], [index, json.dumps(event), self._keep_ms])

    async def take_events(self, job_id: str, namespace: str) -> tuple[str, list[Event]] | None:
        keys = [self._key("job", job_id), self._key("events", job_id)]
        # The take's id: sent again (its answer lost), it hands out what it took the first time.
        found = await self._script("take_events", keys, [namespace, uuid.uuid4().hex])
        if not found:
            return None
        return found[0], [json.loads(event) for event in found[1:]]

    async def finish(
        self, job_id: str, outcome: Outcome, *, namespace: str | None = None, only_from: str | None = None
    ) -> str | None:
        return await self._finish(job_id, outcome, self.worker, namespace=namespace, only_from=only_from)

    async def flag_cancel(self, job_id: str, namespace: str) -> str | None:
        found = await self._script("flag_cancel", [self._key("job", job_id)], [namespace, job_id, self._key("cancel")])
        return _text(found) if found else None

    async def view(self, job_id: str, namespace: str) -> JobView | None:
        values = await self._call(self._redis.hmget(self._key("job", job_id), VIEW_FIELDS))
        found = {
            name: _text(value) if value is not None else None for name, value in zip(VIEW_FIELDS, values, strict=True)
        }
        if found["status"] is None or found["namespace"] != namespace:
            return None
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

    def watch(self, job_id: str) -> AbstractAsyncContextManager[asyncio.Event]:
        return self._messages.watch(job_id)

    async def queued(self, namespace: str) -> list[str]:
        ids = [_text(job_id) for job_id in await self._call(self._redis.lrange(self._key("queue"), 0, -1))]
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(self._key("job", job_id), "namespace")
            namespaces = await self._call(pipe.execute())
        return [job_id for job_id, owner in zip(ids, namespaces, strict=True) if owner == namespace]

    async def counts(self) -> dict[str, int]:
        since = time.time() - self.ttl_s
        finals = sorted(FINAL_STATES)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.llen(self._key("queue"))
            pipe.scard(self._key("running"))
            for state in finals:
                pipe.zcount(self._key("done", state), since, "+inf")
            found = await self._call(pipe.execute())
        return {IN_QUEUE: found[0], IN_PROGRESS: found[1], **dict(zip(finals, found[2:], strict=True))}

    async def expire(self) -> int:
        """Records expire by themselves (PEXPIRE); this forgets their ids in the counts of finished jobs."""
        cutoff = time.time() - self.ttl_s
        async with self._redis.pipeline(transaction=False) as pipe:
            for state in FINAL_STATES:
                pipe.zremrangebyscore(self._key("done", state), "-inf", cutoff)
            return sum(await self._call(pipe.execute()))

    async def release_dead(self) -> int:
        released = 0
        for found in await self._call(self._redis.smembers(self._key("workers"))):
            worker = _text(found)
            if worker != self.worker and not await self._call(self._redis.exists(self._key("alive", worker))):
                log.warning("server %s stopped answering; taking over its jobs", worker)
                released += await self._release(worker)
        return released

    # Helpers of the steps above.
    async def _finish(
        self, job_id: str, outcome: Outcome, worker: str, *, namespace: str | None, only_from: str | None
    ) -> str | None:
        keys = [
            self._key("job", job_id),
            self._key("events", job_id),
            self._key("running"),
            self._key("done", outcome.status),
            self._key("queue"),
            self._key("claimed", worker),
        ]
        args: list[EncodableT] = [
            job_id,
            outcome.status,
            json.dumps(outcome.output) if outcome.output is not None else "",
            outcome.error or "",
            time.time(),
            self._ttl_ms,
            self._key("finished"),
            "*" if namespace is None else namespace,
            only_from or "",
        ]
        found = await self._script("finish", keys, args)
        return _text(found) if found else None

    async def _release(self, worker: str) -> int:
        """A gone server's jobs: those it had started fail, those it had only taken go back to the queue."""
        claimed = self._key("claimed", worker)
        why = "the server running this job stopped before it finished; send it again"
        lost = Outcome.failure(FAILED, FishvoiceError("backend_unavailable", why))
        job_ids = [_text(job_id) for job_id in await self._call(self._redis.lrange(claimed, 0, -1))]
        for job_id in job_ids:
            status = await self._finish(job_id, lost, worker, namespace=None, only_from=IN_PROGRESS)
            if status == IN_QUEUE:  # a second janitor doing the same is harmless: a job starts only from IN_QUEUE, once
                await self._call(self._redis.lpush(self._key("queue"), job_id))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(claimed, self._key("alive", worker))
            pipe.srem(self._key("workers"), worker)
            await self._call(pipe.execute())
        return len(job_ids)

    # Chores.
    async def _upkeep(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self._heartbeat()
                await self._pass_on_missed_cancels()
                await self.release_dead()
                await self.expire()
            except FishvoiceError as exc:
                log.warning("job store upkeep failed: %s", exc.message)

    async def _heartbeat(self) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key("alive", self.worker), "1", px=HEARTBEAT_TTL_MS)
            pipe.sadd(self._key("workers"), self.worker)
            await self._call(pipe.execute())

    async def _pass_on_missed_cancels(self) -> None:
        """Pass on the cancel flags of the jobs this server took: the `cancel` message may have been missed."""
        claimed = self._key("claimed", self.worker)
        job_ids = [_text(job_id) for job_id in await self._call(self._redis.lrange(claimed, 0, -1))]
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(self._key("job", job_id), "cancel")
            flags = await self._call(pipe.execute())
        for job_id, flag in zip(job_ids, flags, strict=True):
            if flag:
                self._messages.on_cancel(job_id)


class _Messages:
    """The jobs' messages: a job ended (on any server: its watchers here wake), or a running job is to be
    cancelled (passed on to `on_cancel`, which stops it if it runs here)."""

    def __init__(self, client: redis.Redis, finished: str, cancel: str):
        self._redis = client
        self._finished, self._cancel = finished, cancel
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self.on_cancel: CancelHandler = _ignore
        self.listening = asyncio.Event()

    async def listen(self) -> None:
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._finished, self._cancel)
                    self.listening.set()
                    listening = cast("AsyncGenerator[Any, None]", pubsub.listen())  # an async generator
                    async with aclosing(listening) as messages:
                        async for message in messages:
                            if message["type"] == "message":
                                self._on_message(message["channel"], message["data"])
            except redis.RedisError as exc:
                log.warning("job messages interrupted (%s); listening again", exc)
                await asyncio.sleep(1.0)

    def _on_message(self, channel: str, job_id: str) -> None:
        if channel == self._cancel:
            self.on_cancel(job_id)
            return
        for ended in self._watchers.get(job_id, ()):
            ended.set()

    @asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[asyncio.Event]:
        ended = asyncio.Event()
        self._watchers.setdefault(job_id, set()).add(ended)
        try:
            yield ended
        finally:
            watchers = self._watchers.get(job_id, set())
            watchers.discard(ended)
            if not watchers:
                self._watchers.pop(job_id, None)


def _text(value: bytes | str) -> str:
    """A Redis reply as text (the client decodes replies; its types allow bytes besides)."""
    return value.decode() if isinstance(value, bytes) else value


def _number(value: str | None) -> float | None:
    return float(value) if value else None


def _ignore(job_id: str) -> None:
    """The cancel handler of a store not opened yet."""
