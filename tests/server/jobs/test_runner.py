"""The job runner over each job store, with the real assistant (the embedded models): what a cancel,
a purge, a wait, a time limit and a stop do to a job, written once in the runner."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from fishvoice.server.jobs.in_process_store import InProcessJobStore
from fishvoice.server.jobs.job import CANCELLED, COMPLETED, FAILED, IN_PROGRESS, IN_QUEUE, TIMED_OUT, QueueFull
from fishvoice.server.jobs.redis_store import RedisJobStore
from fishvoice.server.jobs.runner import JobLimits, JobRunner

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

ENDLESS = "Write an endless story about the sea. Never stop, never sum up."


def job(conversation_id: str = "short", *, long: bool = False) -> dict[str, Any]:
    """A short reply (a few tokens), or a long one that runs for many seconds; text only."""
    if long:
        return {
            "message": "Begin.",
            "system_message": ENDLESS,
            "max_tokens": 2000,
            "temperature": 0.1,  # near-greedy: this prompt then runs to max_tokens (sampled, it may end early)
            "speak": False,
            "conversation_id": conversation_id,
        }
    return {"message": "Hi", "max_tokens": 3, "speak": False, "conversation_id": conversation_id}


@pytest.fixture(params=["memory", "redis"])
async def make_runner(request, assistant):
    """Runners, each a server of its own; Redis ones made by one test share the store, as servers do."""
    made: list[JobRunner] = []
    prefix = f"test-{uuid.uuid4().hex[:8]}"

    async def make(queue_size: int = 8, timeout_s: float = 30) -> JobRunner:
        limits = JobLimits(concurrency=1, queue_size=queue_size, timeout_s=timeout_s, ttl_s=3600)
        if request.param == "memory":
            store = InProcessJobStore(ttl_s=limits.ttl_s)
        else:
            url = request.getfixturevalue("redis_url")
            store = RedisJobStore(url, prefix=prefix, ttl_s=limits.ttl_s, timeout_s=timeout_s)
        runner = JobRunner(assistant, store, limits)
        await runner.start()
        made.append(runner)
        return runner

    yield make
    for runner in made:
        await runner.stop()


async def until_status(runner: JobRunner, job_id: str, status: str, namespace: str = "") -> None:
    async with asyncio.timeout(30):
        while (await runner.view(job_id, namespace)).status != status:
            await asyncio.sleep(0.01)


async def until_text(runner: JobRunner, job_id: str) -> None:
    """Until the reply has begun (its first words are out), peeking at the job's events as they come."""
    async with asyncio.timeout(30):
        while not [e for e in (await runner.take_stream(job_id, ""))[1] if e["type"] == "text"]:
            await asyncio.sleep(0.05)


async def test_a_job_runs_to_its_output_and_runsync_waits_for_it(make_runner):
    runner = await make_runner()
    submitted = await runner.submit(job(), "")
    assert submitted.status == IN_QUEUE
    done = await runner.wait(submitted.id, "", 30)
    assert done.status == COMPLETED and done.output is not None and done.output["text"]
    status, events = await runner.take_stream(submitted.id, "")
    kinds = [e["type"] for e in events]
    assert status == COMPLETED and kinds[-1] == "done" and set(kinds[:-1]) == {"text"}
    assert "".join(e["text"] for e in events[:-1]).strip() == done.output["text"]


async def test_wait_answers_with_the_job_as_it_is_when_the_time_is_up(make_runner):
    runner = await make_runner()
    submitted = await runner.submit(job(long=True), "")
    await until_status(runner, submitted.id, IN_PROGRESS)
    assert (await runner.wait(submitted.id, "", 0.3)).status == IN_PROGRESS


async def test_an_invalid_input_fails_at_submit_even_with_the_queue_full(make_runner):
    runner = await make_runner(queue_size=1)
    await until_status(runner, (await runner.submit(job(long=True), "")).id, IN_PROGRESS)
    await runner.submit(job(long=True), "")  # one runs, one waits: the queue is full
    with pytest.raises(QueueFull):
        await runner.submit(job(), "")
    failed = await runner.submit({"message": "hi", "max_new_tokens": 5}, "")
    assert failed.status == FAILED and failed.output["error_code"] == "invalid_input"
    assert (await runner.view(failed.id, "")).status == FAILED


async def test_cancel_of_a_queued_job_ends_it_before_it_starts(make_runner):
    runner = await make_runner()
    running = await runner.submit(job("running"), "")
    queued = await runner.submit(job("queued"), "")
    await until_status(runner, running.id, IN_PROGRESS)
    assert await runner.cancel(queued.id, "") == CANCELLED
    assert (await runner.wait(running.id, "", 30)).status == COMPLETED
    assert (await runner.view(queued.id, "")).status == CANCELLED
    assert await runner.take_stream(queued.id, "") == (CANCELLED, [])


async def test_cancel_of_a_running_job_stops_its_reply(make_runner, store):
    runner = await make_runner()
    submitted = await runner.submit(job("long", long=True), "")
    await until_text(runner, submitted.id)
    assert await runner.cancel(submitted.id, "") == CANCELLED
    assert (await store.load("", "long")).turns == [] and runner.running_here == 0  # the reply stopped unstored
    cancelled = await runner.view(submitted.id, "")
    assert cancelled.output["error_code"] == "cancelled"
    assert await runner.cancel(submitted.id, "") == CANCELLED  # a finished job stays as it is


async def test_purge_cancels_the_callers_queued_jobs_only(make_runner):
    runner = await make_runner()
    running = await runner.submit(job(long=True), "key:a")
    await until_status(runner, running.id, IN_PROGRESS, "key:a")
    mine = [await runner.submit(job(), "key:a") for _ in range(2)]
    theirs = await runner.submit(job(), "key:b")
    assert await runner.purge_queue("key:a") == 2
    assert [(await runner.view(j.id, "key:a")).status for j in mine] == [CANCELLED, CANCELLED]
    assert (await runner.view(theirs.id, "key:b")).status == IN_QUEUE
    assert (await runner.view(running.id, "key:a")).status == IN_PROGRESS


async def test_a_job_past_its_time_limit_is_timed_out(make_runner, store):
    runner = await make_runner(timeout_s=2)
    submitted = await runner.submit(job("slow", long=True), "")
    ended = await runner.wait(submitted.id, "", 30)
    assert ended.status == TIMED_OUT and ended.output["error_code"] == "timeout"
    assert (await store.load("", "slow")).turns == []


async def test_stopping_the_server_fails_its_running_job_for_the_caller_to_send_again(make_runner):
    runner = await make_runner()
    submitted = await runner.submit(job(long=True), "")
    await until_status(runner, submitted.id, IN_PROGRESS)
    await runner.stop()
    reader = runner if isinstance(runner.store, InProcessJobStore) else await make_runner()  # Redis: another server
    stopped = await reader.view(submitted.id, "")
    assert stopped.status == FAILED and stopped.output["error_code"] == "backend_unavailable"
    assert "send it again" in stopped.error
