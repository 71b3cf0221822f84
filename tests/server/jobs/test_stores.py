"""One job-store suite, run against the memory store and a real Redis: each atomic step of a job's
state machine (enqueue, claim, events, finish, cancel flags, expiry). Then what is Redis's own: several
servers sharing one store, and a dead server's jobs released."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import redis

from fishvoice.errors import FishvoiceError
from fishvoice.server.jobs.in_process_store import InProcessJobStore
from fishvoice.server.jobs.job import CANCELLED, COMPLETED, FAILED, IN_PROGRESS, IN_QUEUE, TIMED_OUT, JobView, Outcome
from fishvoice.server.jobs.redis_store import RedisJobStore
from fishvoice.server.jobs.store import JobStore

DONE = Outcome(COMPLETED, {"text": "hello"})
SOON_S = 5.0  # how long a notification may take to arrive (Redis: pub/sub)


class Opened:
    """Stores made for one test, opened, each with the cancels it was told of; all closed at the end."""

    def __init__(self, kind: str, redis_url: str | None):
        self.kind, self.redis_url = kind, redis_url
        self.prefix = f"test-{uuid.uuid4().hex[:8]}"  # Redis stores made by one test share it, as servers do
        self.made: list[tuple[JobStore, list[str]]] = []

    async def make(self, ttl_s: float = 3600) -> tuple[JobStore, list[str]]:
        store: JobStore
        if self.kind == "memory":
            store = InProcessJobStore(ttl_s=ttl_s)
        else:
            assert self.redis_url is not None
            store = RedisJobStore(self.redis_url, prefix=self.prefix, ttl_s=ttl_s, timeout_s=60)
        cancels: list[str] = []
        await store.open(cancels.append)
        self.made.append((store, cancels))
        return store, cancels

    async def close(self) -> None:
        for store, _ in self.made:
            await store.close()


@pytest.fixture(params=["memory", "redis"])
async def stores(request) -> AsyncIterator[Opened]:
    opened = Opened(request.param, request.getfixturevalue("redis_url") if request.param == "redis" else None)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def store(stores: Opened) -> JobStore:
    return (await stores.make())[0]


async def queue(store: JobStore, namespace: str = "", queue_size: int = 100, **raw_input: object) -> JobView:
    job = JobView(id=str(uuid.uuid4()), namespace=namespace)
    assert await store.enqueue(job, {"message": "hi", **raw_input}, queue_size)
    return job


async def started(store: JobStore, namespace: str = "") -> str:
    job = await queue(store, namespace)
    claimed = await store.claim()
    assert claimed is not None and claimed.id == job.id
    return job.id


async def soon(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + SOON_S
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return check()


async def test_enqueue_refuses_a_job_once_the_queue_is_full(store):
    first, second = await queue(store, queue_size=2), await queue(store, queue_size=2)
    refused = JobView(id=str(uuid.uuid4()), namespace="")
    assert not await store.enqueue(refused, {"message": "hi"}, 2)
    assert await store.view(refused.id, "") is None
    assert (await store.counts())[IN_QUEUE] == 2
    assert await store.queued("") == [first.id, second.id]


async def test_a_cancelled_job_frees_its_place_in_the_queue(store):
    first = await queue(store, queue_size=1)
    assert await store.finish(first.id, Outcome.cancelled("no"), namespace="", only_from=IN_QUEUE) == CANCELLED
    await queue(store, queue_size=1)


async def test_claim_takes_the_oldest_job_and_starts_it(store):
    first, second = await queue(store, n=1), await queue(store, n=2)
    claimed = await store.claim()
    assert claimed is not None and (claimed.id, claimed.namespace, claimed.input) == (
        first.id,
        "",
        {"message": "hi", "n": 1},
    )
    job = await store.view(first.id, "")
    assert job is not None and job.status == IN_PROGRESS and job.started_at is not None
    assert (await store.claim()).id == second.id
    assert (await store.counts())[IN_PROGRESS] == 2


async def test_claim_answers_none_when_no_job_comes(store):
    began = time.monotonic()
    assert await store.claim() is None
    assert time.monotonic() - began < 3


async def test_claim_wakes_for_a_job_queued_while_it_waits(store):
    claiming = asyncio.create_task(store.claim())
    await asyncio.sleep(0.1)
    job = await queue(store)
    claimed = await claiming
    assert claimed is not None and claimed.id == job.id


async def test_claim_skips_a_job_cancelled_while_it_waited(store):
    cancelled, kept = await queue(store), await queue(store)
    assert await store.finish(cancelled.id, Outcome.cancelled("no"), namespace="", only_from=IN_QUEUE) == CANCELLED
    claimed = await store.claim()
    assert claimed is not None and claimed.id == kept.id
    assert (await store.view(cancelled.id, "")).status == CANCELLED


async def test_events_are_handed_out_once_in_order(store):
    job_id = await started(store)
    for n in range(3):
        await store.append_event(job_id, n, {"type": "text", "text": str(n)})
    assert await store.take_events(job_id, "") == (IN_PROGRESS, [{"type": "text", "text": str(n)} for n in range(3)])
    assert await store.take_events(job_id, "") == (IN_PROGRESS, [])
    await store.append_event(job_id, 3, {"type": "text", "text": "3"})
    assert await store.take_events(job_id, "") == (IN_PROGRESS, [{"type": "text", "text": "3"}])


async def test_an_event_appended_again_at_its_index_lands_once(store):
    job_id = await started(store)
    for index, text in ((0, "a"), (0, "a"), (1, "b"), (1, "b"), (3, "skipped ahead")):
        await store.append_event(job_id, index, {"type": "text", "text": text})
    assert await store.take_events(job_id, "") == (IN_PROGRESS, [{"type": "text", "text": t} for t in "ab"])


async def test_a_final_status_comes_with_every_event(store):
    job_id = await started(store)
    await store.append_event(job_id, 0, {"type": "text", "text": "a"})
    assert (await store.take_events(job_id, ""))[1] == [{"type": "text", "text": "a"}]
    await store.append_event(job_id, 1, {"type": "text", "text": "b"})
    await store.append_event(job_id, 2, {"type": "done", "text": "ab"})
    assert await store.finish(job_id, DONE) == COMPLETED
    assert await store.take_events(job_id, "") == (
        COMPLETED,
        [{"type": "text", "text": "b"}, {"type": "done", "text": "ab"}],
    )
    assert await store.take_events(job_id, "") == (COMPLETED, [])


async def test_the_first_end_wins(store):
    job_id = await started(store)
    timed_out = Outcome.failure(TIMED_OUT, FishvoiceError("timeout", "too long"))
    assert await store.finish(job_id, timed_out) == TIMED_OUT
    assert await store.finish(job_id, DONE) == TIMED_OUT
    assert await store.finish(job_id, Outcome.cancelled("no"), namespace="", only_from=IN_QUEUE) == TIMED_OUT
    job = await store.view(job_id, "")
    assert (job.status, job.output, job.error) == (TIMED_OUT, timed_out.output, "too long")
    assert job.finished_at is not None and job.finished_at >= job.started_at
    assert (await store.counts())[TIMED_OUT] == 1 and (await store.counts())[COMPLETED] == 0


async def test_an_end_only_from_the_queue_leaves_a_running_job_running(store):
    job_id = await started(store)
    assert await store.finish(job_id, Outcome.cancelled("no"), namespace="", only_from=IN_QUEUE) == IN_PROGRESS
    assert (await store.view(job_id, "")).status == IN_PROGRESS
    assert await store.finish(job_id, DONE, only_from=IN_PROGRESS) == COMPLETED


async def test_flag_cancel_of_a_running_job_tells_its_runner(stores):
    store, cancels = await stores.make()
    job_id = await started(store)
    assert await store.flag_cancel(job_id, "") == IN_PROGRESS
    assert await soon(lambda: job_id in cancels)
    assert (await store.view(job_id, "")).status == IN_PROGRESS  # the runner ends it, as it stops it


async def test_flag_cancel_leaves_queued_and_finished_jobs_alone(stores):
    store, cancels = await stores.make()
    finished = await started(store)
    await store.finish(finished, DONE)
    waiting = await queue(store)
    assert await store.flag_cancel(waiting.id, "") == IN_QUEUE
    assert await store.flag_cancel(finished, "") == COMPLETED
    await asyncio.sleep(0.3)
    assert cancels == []
    claimed = await store.claim()
    assert claimed is not None and claimed.id == waiting.id  # not flagged: it runs as any job


async def test_a_namespace_sees_only_its_own_jobs(store):
    job = await queue(store, "key:a")
    other = await queue(store, "key:b")
    assert await store.view(job.id, "key:b") is None
    assert await store.take_events(job.id, "key:b") is None
    assert await store.flag_cancel(job.id, "key:b") is None
    assert await store.finish(job.id, Outcome.cancelled("no"), namespace="key:b", only_from=IN_QUEUE) is None
    assert (await store.view(job.id, "key:a")).status == IN_QUEUE
    assert await store.queued("key:a") == [job.id] and await store.queued("key:b") == [other.id]
    assert await store.queued("") == []


async def test_an_unknown_job_is_none_everywhere(store):
    assert await store.view("nope", "") is None
    assert await store.take_events("nope", "") is None
    assert await store.flag_cancel("nope", "") is None
    assert await store.finish("nope", DONE) is None


async def test_watch_wakes_when_the_job_ends(store):
    job_id = await started(store)
    async with store.watch(job_id) as ended:
        assert not ended.is_set()
        await store.finish(job_id, DONE)
        await asyncio.wait_for(ended.wait(), SOON_S)


async def test_a_job_recorded_as_failed_is_kept_and_counted(store):
    job = JobView(id=str(uuid.uuid4()), namespace="key:a")
    job.end(Outcome.failure(FAILED, FishvoiceError("invalid_input", "message: required", "message")))
    await store.record(job)
    seen = await store.view(job.id, "key:a")
    assert seen is not None and seen.summary() == job.summary()
    assert await store.take_events(job.id, "key:a") == (FAILED, [])
    assert (await store.counts())[FAILED] == 1 and await store.queued("key:a") == []


async def test_counts_jobs_by_state(store):
    completed = await started(store)
    await store.finish(completed, DONE)
    await started(store)
    cancelled = await queue(store)
    await store.finish(cancelled.id, Outcome.cancelled("no"), namespace="", only_from=IN_QUEUE)
    await queue(store)
    assert await store.counts() == {
        IN_QUEUE: 1,
        IN_PROGRESS: 1,
        COMPLETED: 1,
        FAILED: 0,
        CANCELLED: 1,
        TIMED_OUT: 0,
    }


async def test_finished_jobs_expire_after_the_ttl(stores):
    store, _ = await stores.make(ttl_s=0.5)
    job_id = await started(store)
    await store.finish(job_id, DONE)
    failed = JobView(id=str(uuid.uuid4()), namespace="")
    failed.end(Outcome.failure(FAILED, FishvoiceError("invalid_input", "no")))
    await store.record(failed)
    assert (await store.counts())[COMPLETED] == 1
    await asyncio.sleep(1.0)
    await store.expire()
    assert await store.view(job_id, "") is None and await store.view(failed.id, "") is None
    assert await store.take_events(job_id, "") is None
    counts = await store.counts()
    assert counts[COMPLETED] == counts[FAILED] == 0


# Redis's own: several servers share one store.
@pytest.fixture
async def servers(redis_url) -> AsyncIterator[Opened]:
    """Stores on one Redis and one prefix, as several servers use them."""
    opened = Opened("redis", redis_url)
    try:
        yield opened
    finally:
        await opened.close()


async def test_a_cancel_flagged_through_one_server_reaches_the_one_running_the_job(servers):
    (runs, runs_cancels), (other, _) = await servers.make(), await servers.make()
    job = await queue(other)
    assert (await runs.claim()).id == job.id  # one queue: what one server queued, another runs
    async with runs.watch(job.id) as ended:
        assert await other.flag_cancel(job.id, "") == IN_PROGRESS
        assert await soon(lambda: job.id in runs_cancels)
        await runs.finish(job.id, Outcome.cancelled("the job was cancelled"))
        await asyncio.wait_for(ended.wait(), SOON_S)
    assert (await other.view(job.id, "")).status == CANCELLED


async def test_a_missed_cancel_message_is_passed_on_from_the_flag(servers):
    store, cancels = await servers.make()
    job_id = await started(store)
    redis.Redis.from_url(servers.redis_url).hset(f"{servers.prefix}:jobs:job:{job_id}", "cancel", "1")  # no message
    assert await soon(lambda: job_id in cancels)  # the next heartbeat reads the flag


async def test_a_dead_servers_jobs_are_released(servers):
    """A server that stopped answering: its running job fails, the job it took but never started is
    queued again, and nothing of it is left."""
    dead = RedisJobStore(servers.redis_url, prefix=servers.prefix, ttl_s=3600, timeout_s=60)  # never opened
    survivor, _ = await servers.make()
    running, taken = await queue(survivor), await queue(survivor)
    assert (await dead.claim()).id == running.id
    raw = redis.Redis.from_url(servers.redis_url, decode_responses=True)
    keys = f"{servers.prefix}:jobs:"
    raw.lmove(f"{keys}queue", f"{keys}claimed:{dead.worker}", "LEFT", "RIGHT")  # died between taking and starting
    raw.sadd(f"{keys}workers", dead.worker)  # it had announced itself; its heartbeat lapsed since
    try:
        assert await survivor.release_dead() == 2
        lost = await survivor.view(running.id, "")
        assert lost.status == FAILED and lost.output["error_code"] == "backend_unavailable"
        assert "send it again" in lost.error
        assert (await survivor.claim()).id == taken.id
        assert await survivor.release_dead() == 0 and not raw.exists(f"{keys}claimed:{dead.worker}")
        assert (await survivor.counts())[IN_PROGRESS] == 1  # only `taken`, now the survivor's
    finally:
        await dead.close()


async def test_steps_sent_again_after_their_answers_were_lost_do_no_more(lossy_redis):
    """Redis ran the step, but the connection dropped before its answer came (as when Redis restarts under
    load), and the client sent it again: a job queued or claimed so is queued or claimed once, an event
    appended so lands once, events taken so are handed out."""
    store = RedisJobStore(await lossy_redis.start(), prefix=f"test-{uuid.uuid4().hex[:8]}", ttl_s=3600, timeout_s=60)
    text = [{"type": "text", "text": t} for t in "abc"]
    try:
        await started(store)  # every script of these steps is loaded
        lossy_redis.lose_next_answer()
        job = await queue(store)
        assert lossy_redis.lost.is_set() and await store.queued("") == [job.id]
        lossy_redis.lose_next_answer(after=1)  # the claim's second command: the step that starts the job
        claimed = await store.claim()
        assert lossy_redis.lost.is_set() and claimed is not None and claimed.id == job.id
        job_id = job.id
        assert (await store.view(job_id, "")).status == IN_PROGRESS
        await store.append_event(job_id, 0, text[0])
        assert await store.take_events(job_id, "") == (IN_PROGRESS, text[:1])  # every script is loaded
        lossy_redis.lose_next_answer()
        await store.append_event(job_id, 1, text[1])
        assert lossy_redis.lost.is_set()
        await store.append_event(job_id, 2, text[2])
        lossy_redis.lose_next_answer()
        assert await store.take_events(job_id, "") == (IN_PROGRESS, text[1:])
        assert lossy_redis.lost.is_set()
        assert await store.take_events(job_id, "") == (IN_PROGRESS, [])
    finally:
        await store.close()


async def test_closing_hands_back_the_jobs_a_server_took_and_fails_those_it_left_running(servers):
    leaving, _ = await servers.make()
    staying, _ = await servers.make()
    running = await started(leaving)
    await leaving.close()
    job = await staying.view(running, "")
    assert job.status == FAILED and job.output["error_code"] == "backend_unavailable"
