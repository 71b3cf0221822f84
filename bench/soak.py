"""Memory over many realtime sessions: does the server give back what a session took?

Starts `fishvoice serve` with the embedded models on a free port and opens `--sessions` realtime sessions
one after another through the official `openai` client, each one short text turn answered in speech, then
the same number of jobs (`/runsync`, the same turn) as the comparison: a job's memory is known to stay
flat. It prints the server's resident memory after the first `--warm` sessions and at the end, for both.

    python bench/soak.py [--sessions 1000] [--warm 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time

import httpx
import openai
import psutil
from common import free_port, wait_up

TURN = "Say hello in five words."


async def one_session(client: openai.AsyncOpenAI) -> None:
    async with client.realtime.connect(model="fishvoice") as connection:
        await connection.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": TURN}]}
        )
        await connection.response.create(response={"max_output_tokens": 16})
        while (await connection.recv()).type != "response.done":
            pass


def rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--warm", type=int, default=100)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as scratch:
        # Finished jobs' results are forgotten after 5 s: kept for the default half hour, 1,000 replies' audio
        # would be the jobs' growth.
        env = {
            **os.environ,
            "FISHVOICE_PORT": str(port),
            "FISHVOICE_STORE": f"{scratch}/db.sqlite3",
            "FISHVOICE_JOB_TTL": "5",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "fishvoice", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_up(f"{url}/health")
            process = psutil.Process(server.pid)
            print(f"at start: {rss_mb(process):.0f} MB")
            sessions = asyncio.run(soak_sessions(url, args.sessions, args.warm, process))
            jobs = soak_jobs(url, args.sessions, args.warm, process)
        finally:
            server.terminate()
            server.wait(30)
    for name, (warm, end, seconds) in (("realtime sessions", sessions), ("jobs", jobs)):
        print(
            f"{name}: {warm:.0f} MB after {args.warm}, {end:.0f} MB after {args.sessions} "
            f"({end - warm:+.0f} MB over the last {args.sessions - args.warm}; {seconds:.0f} s)"
        )


async def soak_sessions(url: str, sessions: int, warm: int, process: psutil.Process) -> tuple[float, float, float]:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    started, after_warm = time.monotonic(), 0.0
    for n in range(1, sessions + 1):
        await one_session(client)
        if n == warm:
            after_warm = rss_mb(process)
        if n % 100 == 0:
            print(f"  session {n}: {rss_mb(process):.0f} MB", flush=True)
    return after_warm, rss_mb(process), time.monotonic() - started


def soak_jobs(url: str, jobs: int, warm: int, process: psutil.Process) -> tuple[float, float, float]:
    started, after_warm = time.monotonic(), 0.0
    body = {"input": {"message": TURN, "max_tokens": 16, "audio_format": "pcm16", "sample_rate": 24000}}
    with httpx.Client(base_url=url, timeout=120) as http:
        for n in range(1, jobs + 1):
            assert http.post("/runsync", json=body).json()["status"] == "COMPLETED"
            if n == warm:
                after_warm = rss_mb(process)
            if n % 100 == 0:
                print(f"  job {n}: {rss_mb(process):.0f} MB", flush=True)
    return after_warm, rss_mb(process), time.monotonic() - started


if __name__ == "__main__":
    main()
