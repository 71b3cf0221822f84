"""Load proof: two `fishvoice serve` processes sharing one Redis, 200 jobs from 20 concurrent clients
over 10 conversations. Every job must end COMPLETED, every conversation must hold exactly its turns
in order, and the servers' memory must stay flat. Prints jobs/s, p50/p95 latency and RSS.

    python bench/load.py [--jobs 200] [--clients 20] [--conversations 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time

import httpx
from common import free_port, percentile, wait_up


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


async def client(http: httpx.AsyncClient, urls: list[str], conversation: str, turns: int, latencies: list[float],
                 failures: list[str]) -> list[tuple[str, str]]:
    """One conversation's turns, in order, each to whichever server is next: turns may land anywhere."""
    done = []
    for turn in range(turns):
        base = urls[turn % len(urls)]
        message = f"{conversation}: turn {turn}. Say one word."
        started = time.perf_counter()
        job = (await http.post(f"{base}/run", json={"input": {"message": message, "conversation_id": conversation,
                                                              "max_tokens": 6, "speak": False}})).json()
        while (status := (await http.get(f"{base}/status/{job['id']}")).json())["status"] in ("IN_QUEUE", "IN_PROGRESS"):
            await asyncio.sleep(0.25)  # polite polling: 20 clients must not starve 2 cores
        latencies.append(time.perf_counter() - started)
        if status["status"] != "COMPLETED":
            failures.append(f"{conversation} turn {turn}: {status['status']} {status.get('error')}")
            continue
        done.append((message, status["output"]["text"]))
    return done


async def run(urls: list[str], jobs: int, clients: int, conversations: int, label: str) -> tuple[float, list[float], list[str], dict]:
    latencies: list[float] = []
    failures: list[str] = []
    per_client = jobs // clients
    names = [f"{label}-{i % conversations}-{i}" for i in range(clients)]  # each client owns its conversation's order
    async with httpx.AsyncClient(timeout=300) as http:
        started = time.perf_counter()
        results = await asyncio.gather(*(client(http, urls, name, per_client, latencies, failures) for name in names))
        elapsed = time.perf_counter() - started
        stored = {}
        for name, expected in zip(names, results):
            history = (await http.post(f"{urls[0]}/runsync", json={"input": {"message": "check", "conversation_id": name,
                                                                            "max_tokens": 1, "speak": False}})).json()
            turns = history["output"]["history"][:-2]
            stored[name] = ([(turns[i]["content"], turns[i + 1]["content"]) for i in range(0, len(turns), 2)], expected)
    return elapsed, latencies, failures, stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--conversations", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        redis_port = free_port()
        redis = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                  "--save", "", "--dir", tmp], stdout=subprocess.DEVNULL)
        servers, urls = [], []
        try:
            for _ in range(2):
                port = free_port()
                env = {**os.environ, "FISHVOICE_PORT": str(port), "FISHVOICE_STORE": f"redis://127.0.0.1:{redis_port}/0",
                       "FISHVOICE_CONCURRENCY": "2", "FISHVOICE_QUEUE_SIZE": "256", "FISHVOICE_LOG_LEVEL": "WARNING"}
                servers.append(subprocess.Popen([sys.executable, "-m", "fishvoice", "serve"], env=env))
                urls.append(f"http://127.0.0.1:{port}")
            for url in urls:
                wait_up(f"{url}/health")
            asyncio.run(run(urls, 4, 2, 2, "warmup"))
            before = [rss_mb(p.pid) for p in servers]
            elapsed, latencies, failures, stored = asyncio.run(run(urls, args.jobs, args.clients, args.conversations, "load"))
            after = [rss_mb(p.pid) for p in servers]
            in_order = sum(stored_turns == expected for stored_turns, expected in stored.values())
            print(f"2 servers x 2 jobs at once, shared Redis; {len(latencies)} jobs from {args.clients} clients")
            print(f"jobs/s {len(latencies) / elapsed:.2f}  latency p50 {percentile(latencies, 0.5) * 1000:.0f} ms  "
                  f"p95 {percentile(latencies, 0.95) * 1000:.0f} ms")
            print(f"COMPLETED {len(latencies) - len(failures)}/{len(latencies)}; conversations holding exactly their turns in order: "
                  f"{in_order}/{len(stored)}")
            print(f"server RSS MB before {[round(m) for m in before]} after {[round(m) for m in after]}")
            for failure in failures[:5]:
                print("FAILED", failure)
            for name, (stored_turns, expected) in stored.items():
                if stored_turns != expected:
                    print("MISMATCH", name, "stored", stored_turns[:3], "expected", expected[:3])
            if failures or in_order != len(stored):
                sys.exit(1)
        finally:
            for process in servers:
                process.terminate()
            redis.terminate()


if __name__ == "__main__":
    main()
