"""Two `fishvoice serve` processes sharing one Redis for jobs and conversations: either answers for
any job, they share one queue, a cancel reaches the server running the job, and a server that dies
leaves no job waiting forever."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import stop
from tests.servers import STORY, start_server, wait_final, wait_status

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

SHORT = {"message": "Say hello.", "max_tokens": 6, "speak": False}


@contextmanager
def server_pair(tmp_path: Path, redis_url: str) -> Iterator[tuple[list[httpx.Client], list[subprocess.Popen], str]]:
    """Two servers on one Redis prefix (jobs and conversations), one job at a time each: clients, processes, prefix."""
    prefix = f"pair-{uuid.uuid4().hex[:12]}"
    shared = {"jobs": redis_url, "store": redis_url, "redis_prefix": prefix, "concurrency": "1", "llm_threads": "1"}
    started = [start_server(tmp_path, **shared) for _ in range(2)]
    clients = [httpx.Client(base_url=base, timeout=120) for base, _ in started]
    processes = [process for _, process in started]
    try:
        yield clients, processes, prefix
    finally:
        for client in clients:
            client.close()
        for process in processes:
            if process.poll() is None:
                stop(process)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, redis_url) -> Iterator[tuple[list[httpx.Client], list[subprocess.Popen], str]]:
    with server_pair(tmp_path_factory.mktemp("pair"), redis_url) as started:
        yield started


def runner(redis_url: str, prefix: str, job_id: str, processes: list[subprocess.Popen]) -> int:
    """Which of the processes runs the job, as the job table recorded it (worker = host:pid:nonce)."""
    worker = redis.Redis.from_url(redis_url, decode_responses=True).hget(f"{prefix}:jobs:job:{job_id}", "worker")
    pid = int(worker.split(":")[1])
    return next(n for n, process in enumerate(processes) if process.pid == pid)


def test_either_server_answers_status_and_stream_for_any_job(pair):
    (a, b), _, _ = pair
    job_id = a.post("/run", json={"input": STORY}).json()["id"]
    events, statuses = [], set()
    deadline = time.monotonic() + 120
    for turn in range(100_000):
        part = (a, b)[turn % 2].get(f"/stream/{job_id}").json()  # each poll to the other server
        events += [item["output"] for item in part["stream"]]
        statuses.add(part["status"])
        if part["status"] == "COMPLETED" and not part["stream"]:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    kinds = [event["type"] for event in events]
    assert "IN_PROGRESS" in statuses and kinds[-1] == "done" and kinds.count("audio") >= 2
    assert [e["seq"] for e in events if e["type"] == "audio"] == list(
        range(kinds.count("audio"))
    )  # each once, in order
    assert a.get(f"/stream/{job_id}").json()["stream"] == [] == b.get(f"/stream/{job_id}").json()["stream"]
    assert a.get(f"/status/{job_id}").json() == b.get(f"/status/{job_id}").json()
    assert b.get(f"/status/{job_id}").json()["output"]["text"] == "".join(
        e["text"] for e in events if e["type"] == "text"
    )


def test_one_queue_serves_both_servers_and_runsync_waits_across_them(pair, redis_url):
    (a, b), processes, prefix = pair
    busy = a.post("/run", json={"input": STORY}).json()["id"]
    wait_status(a, busy, "IN_PROGRESS")
    second = a.post("/run", json={"input": STORY}).json()["id"]  # sent to a, taken by whichever server is free
    wait_status(b, second, "IN_PROGRESS")  # both run at once though each runs one job at a time
    assert {runner(redis_url, prefix, busy, processes), runner(redis_url, prefix, second, processes)} == {0, 1}
    assert b.get("/health").json()["jobs"]["inProgress"] == 2  # the shared table's count
    third = a.post("/runsync", json={"input": {**SHORT, "conversation_id": "queue-shared"}}).json()
    assert third["status"] == "COMPLETED" and third["output"]["text"]  # woken when it ended, wherever it ran
    assert b.post("/runsync", json={"input": {**SHORT, "conversation_id": "queue-shared"}}).json()["output"]["history"][
        0
    ] == {"role": "user", "content": "Say hello."}
    for job_id in (busy, second):
        assert wait_final(b, job_id)["status"] == "COMPLETED"


def test_cancel_through_the_other_server_stops_the_job_where_it_runs(pair, redis_url):
    (a, b), processes, prefix = pair
    job_id = a.post("/run", json={"input": {**STORY, "conversation_id": "cancel-far"}}).json()["id"]
    wait_status(a, job_id, "IN_PROGRESS")
    where = runner(redis_url, prefix, job_id, processes)
    elsewhere = (a, b)[1 - where]
    started = time.monotonic()
    assert elsewhere.post(f"/cancel/{job_id}").json() == {"id": job_id, "status": "CANCELLED"}
    assert time.monotonic() - started < 5
    assert (a, b)[where].get("/health").json()["workers"]["running"] == 0  # the generation itself stopped
    after = a.post("/runsync", json={"input": {**SHORT, "conversation_id": "cancel-far"}}).json()["output"]
    assert len(after["history"]) == 2  # the cancelled turn left no trace


def test_purge_through_one_server_empties_the_shared_queue(pair):
    (a, b), _, _ = pair
    running = [a.post("/run", json={"input": STORY}).json()["id"] for _ in range(2)]
    for job_id in running:
        wait_status(b, job_id, "IN_PROGRESS")
    queued = [a.post("/run", json={"input": SHORT}).json()["id"] for _ in range(3)]
    assert b.get("/health").json()["jobs"]["inQueue"] == 3
    assert b.post("/purge-queue").json() == {"removed": 3, "status": "completed"}
    assert [a.get(f"/status/{job_id}").json()["status"] for job_id in queued] == ["CANCELLED"] * 3
    for job_id in running:
        a.post(f"/cancel/{job_id}")


def test_a_dead_servers_job_fails_and_the_queue_goes_on(tmp_path, redis_url):
    with server_pair(tmp_path, redis_url) as ((a, b), processes, prefix):
        job_id = a.post("/run", json={"input": {**STORY, "conversation_id": "dead"}}).json()["id"]
        wait_status(a, job_id, "IN_PROGRESS")
        where = runner(redis_url, prefix, job_id, processes)
        survivor = (a, b)[1 - where]
        os.kill(processes[where].pid, signal.SIGKILL)
        processes[where].wait(timeout=10)
        queued = survivor.post("/run", json={"input": {**SHORT, "conversation_id": "dead"}}).json()["id"]
        lost = wait_final(survivor, job_id, timeout=60)  # once its heartbeat lapses, a survivor fails it
        assert lost["status"] == "FAILED" and lost["output"]["error_code"] == "backend_unavailable"
        assert "send it again" in lost["error"]
        done = wait_final(survivor, queued)
        assert done["status"] == "COMPLETED" and len(done["output"]["history"]) == 2


def test_a_server_stopping_fails_its_running_job_and_leaves_the_queue_to_the_other(tmp_path, redis_url):
    with server_pair(tmp_path, redis_url) as ((a, b), processes, prefix):
        first = a.post("/run", json={"input": STORY}).json()["id"]
        wait_status(a, first, "IN_PROGRESS")
        where = runner(redis_url, prefix, first, processes)
        survivor = (a, b)[1 - where]
        blocker = survivor.post("/run", json={"input": STORY}).json()["id"]
        wait_status(survivor, blocker, "IN_PROGRESS")
        queued = survivor.post("/run", json={"input": SHORT}).json()["id"]
        stop(processes[where])  # SIGTERM: a graceful stop
        stopped = survivor.get(f"/status/{first}").json()
        assert stopped["status"] == "FAILED" and stopped["output"]["error_code"] == "backend_unavailable"
        survivor.post(f"/cancel/{blocker}")
        assert wait_final(survivor, queued)["status"] == "COMPLETED"  # the queue was not the stopped server's
