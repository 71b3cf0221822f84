"""Faults: a server killed in the middle of a reply, and Redis restarted under load. Nothing
completed is lost; nothing half-done is stored."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import STORY, start_server, wait_final, wait_status

from .conftest import free_port, stop

pytestmark = pytest.mark.model  # loads models (or starts a server that does)


def test_server_killed_mid_reply_leaves_the_conversation_as_it_was(tmp_path):
    base, process = start_server(tmp_path, concurrency="1")
    try:
        first = httpx.post(
            f"{base}/runsync",
            json={
                "input": {"message": "Remember: blue.", "conversation_id": "kill-1", "max_tokens": 8, "speak": False}
            },
            timeout=120,
        ).json()
        assert first["status"] == "COMPLETED"
        job = httpx.post(f"{base}/run", json={"input": {**STORY, "conversation_id": "kill-1"}}).json()
        with httpx.Client(base_url=base) as http:
            wait_status(http, job["id"], "IN_PROGRESS")
        time.sleep(0.5)  # well inside the reply: the LLM is writing, sentences are being spoken
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            stop(process)
    base, process = start_server(tmp_path, concurrency="1")  # a new worker on the same store
    try:
        after = httpx.post(
            f"{base}/runsync",
            json={"input": {"message": "And now?", "conversation_id": "kill-1", "max_tokens": 5, "speak": False}},
            timeout=120,
        ).json()["output"]
        contents = [turn["content"] for turn in after["history"]]
        assert (
            contents[:2] == ["Remember: blue.", first["output"]["text"]]
            and contents[2] == "And now?"
            and len(contents) == 4
        )
    finally:
        stop(process)


def start_redis(port: int, workdir: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            shutil.which("redis-server"),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(workdir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            import socket

            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process
        except OSError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)


@pytest.mark.parametrize("jobs_in_redis", [False, True], ids=["jobs-in-memory", "jobs-in-redis"])
def test_redis_restarted_under_load_loses_no_completed_turn(tmp_path, jobs_in_redis):
    port = free_port()
    redis_process = start_redis(port, tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    base, server_process = start_server(
        tmp_path, concurrency="2", queue_size="64", store=url, **({"jobs": url} if jobs_in_redis else {})
    )
    outcomes: dict[str, list[tuple[str, dict]]] = {f"load-{n}": [] for n in range(3)}

    def talk(conversation: str) -> None:
        with httpx.Client(base_url=base, timeout=120) as http:
            for turn in range(8):
                message = f"{conversation} turn {turn}: say a word."
                job = http.post(
                    "/run",
                    json={
                        "input": {"message": message, "conversation_id": conversation, "max_tokens": 6, "speak": False}
                    },
                ).json()
                outcomes[conversation].append((message, wait_final(http, job["id"])))

    try:
        threads = [threading.Thread(target=talk, args=(c,)) for c in outcomes]
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        stop(redis_process)  # a clean restart under load: its append-only file keeps what was written
        redis_process = start_redis(port, tmp_path)
        for thread in threads:
            thread.join(timeout=300)
        with httpx.Client(base_url=base, timeout=120) as http:
            for conversation, results in outcomes.items():
                assert all(job["status"] in ("COMPLETED", "FAILED") for _, job in results)
                assert all(
                    job["output"]["error_code"] == "backend_unavailable"
                    for _, job in results
                    if job["status"] == "FAILED"
                )
                completed = [
                    (message, job["output"]["text"]) for message, job in results if job["status"] == "COMPLETED"
                ]
                assert len(completed) >= 4  # most turns went through; the restart cost a few at most
                check = http.post(
                    "/runsync",
                    json={
                        "input": {"message": "done?", "conversation_id": conversation, "max_tokens": 2, "speak": False}
                    },
                ).json()["output"]["history"]
                stored = [(check[i]["content"], check[i + 1]["content"]) for i in range(0, len(check) - 2, 2)]
                assert stored == completed  # every completed turn, in order, and nothing else
    finally:
        stop(server_process)
        stop(redis_process)
