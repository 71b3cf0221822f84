"""Load proof: two `fishvoice serve` processes sharing one Redis, each round 200 jobs from 20
concurrent clients, one conversation per client. Every job must end COMPLETED, every conversation
must hold exactly its turns in order, and the servers' memory must stay flat from round to round.

Two set-ups, compared in one run:
  own    each server keeps its own job table; a client follows a job on the server it sent it to
         (conversations are still shared: a client's turns alternate between the servers)
  shared the job table is in Redis too, and every request (the submit, and each status poll) goes
         to the next server in turn, as a round-robin balancer in front of both would send it
Prints jobs/s, p50/p95 latency and RSS per round, and shared/own ratios.

    python bench/load.py [--jobs 200] [--clients 20] [--rounds 3] [--shared-only]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from common import free_port, percentile, wait_up


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


@dataclass
class Round:
    elapsed: float
    latencies: list[float]
    failures: list[str]
    stored: dict[str, tuple[list, list]]  # conversation: (turns stored, turns completed)
    rss: list[float]

    @property
    def jobs_per_s(self) -> float:
        return len(self.latencies) / self.elapsed

    @property
    def in_order(self) -> int:
        return sum(stored == expected for stored, expected in self.stored.values())

    @property
    def passed(self) -> bool:
        return not self.failures and self.in_order == len(self.stored)

    def report(self, label: str) -> None:
        print(
            f"{label}: {len(self.latencies)} jobs; jobs/s {self.jobs_per_s:.2f}"
            f"  latency p50 {percentile(self.latencies, 0.5):.1f} s"
            f"  p95 {percentile(self.latencies, 0.95):.1f} s; COMPLETED {len(self.latencies) - len(self.failures)}/"
            f"{len(self.latencies)}; conversations holding exactly their turns in order"
            f" {self.in_order}/{len(self.stored)}; server RSS MB {[round(m) for m in self.rss]}"
        )
        for failure in self.failures[:5]:
            print("  FAILED", failure)
        for name, (stored, expected) in self.stored.items():
            if stored != expected:
                print("  MISMATCH", name, "stored", stored[:3], "expected", expected[:3])


async def client(
    http: httpx.AsyncClient,
    route: Callable[[int], Callable[[], str]],
    conversation: str,
    turns: int,
    latencies: list[float],
    failures: list[str],
) -> list[tuple[str, str]]:
    """One conversation's turns, in order; `route(turn)` says where each of the turn's requests goes."""
    done = []
    for turn in range(turns):
        server = route(turn)
        message = f"{conversation}: turn {turn}. Say one word."
        started = time.perf_counter()
        job = (
            await http.post(
                f"{server()}/run",
                json={"input": {"message": message, "conversation_id": conversation, "max_tokens": 6, "speak": False}},
            )
        ).json()
        while (status := (await http.get(f"{server()}/status/{job['id']}")).json())["status"] in (
            "IN_QUEUE",
            "IN_PROGRESS",
        ):
            await asyncio.sleep(0.25)  # polite polling: 20 clients must not starve 2 cores
        latencies.append(time.perf_counter() - started)
        if status["status"] != "COMPLETED":
            failures.append(f"{conversation} turn {turn}: {status['status']} {status.get('error')}")
            continue
        done.append((message, status["output"]["text"]))
    return done


async def run_round(
    urls: list[str], shared: bool, jobs: int, clients: int, label: str
) -> tuple[float, list[float], list[str], dict]:
    latencies: list[float] = []
    failures: list[str] = []
    every_request = itertools.cycle(urls)

    def router(number: int) -> Callable[[int], Callable[[], str]]:
        def route(turn: int) -> Callable[[], str]:
            if shared:
                return lambda: next(every_request)
            server = urls[(number + turn) % len(urls)]  # the job stays with its server; the next turn goes to the other
            return lambda: server

        return route

    names = [f"{label}-{i}" for i in range(clients)]
    async with httpx.AsyncClient(timeout=300) as http:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(client(http, router(n), name, jobs // clients, latencies, failures) for n, name in enumerate(names))
        )
        elapsed = time.perf_counter() - started
        stored = {}
        for name, expected in zip(names, results, strict=True):
            check = (
                await http.post(
                    f"{urls[0]}/runsync",
                    json={"input": {"message": "check", "conversation_id": name, "max_tokens": 1, "speak": False}},
                )
            ).json()
            turns = check["output"]["history"][:-2]
            stored[name] = ([(turns[i]["content"], turns[i + 1]["content"]) for i in range(0, len(turns), 2)], expected)
    return elapsed, latencies, failures, stored


def start_servers(redis_url: str, shared: bool, count: int = 2) -> tuple[list[subprocess.Popen], list[str]]:
    servers, urls = [], []
    for _ in range(count):
        port = free_port()
        env = {
            **os.environ,
            "FISHVOICE_PORT": str(port),
            "FISHVOICE_STORE": redis_url,
            "FISHVOICE_CONCURRENCY": "2",
            "FISHVOICE_QUEUE_SIZE": "256",
            "FISHVOICE_LOG_LEVEL": "WARNING",
            "FISHVOICE_LLM_THREADS": "1",  # two servers on two cores: more threads only fight over them
            "FISHVOICE_REDIS_PREFIX": f"load-{'shared' if shared else 'own'}",
        }
        if shared:
            env["FISHVOICE_JOBS"] = redis_url
        servers.append(subprocess.Popen([sys.executable, "-m", "fishvoice", "serve"], env=env))
        urls.append(f"http://127.0.0.1:{port}")
    for url in urls:
        wait_up(f"{url}/health")
    return servers, urls


def measure(redis_url: str, shared: bool, rounds: int, jobs: int, clients: int) -> list[Round]:
    servers, urls = start_servers(redis_url, shared)
    name = "shared" if shared else "own"
    try:
        asyncio.run(run_round(urls, shared, 4, 2, f"{name}-warmup"))
        print(f"{name}: server RSS MB after warm-up {[round(rss_mb(p.pid)) for p in servers]}")
        results = []
        for number in range(1, rounds + 1):
            results.append(
                Round(
                    *asyncio.run(run_round(urls, shared, jobs, clients, f"{name}-{number}")),
                    rss=[rss_mb(p.pid) for p in servers],
                )
            )
            results[-1].report(f"{name} round {number}")
        return results
    finally:
        for process in servers:
            process.terminate()
            process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs per round")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds with the shared table; memory must not grow after the first"
    )
    parser.add_argument("--shared-only", action="store_true", help="skip the round with each server's own table")
    args = parser.parse_args()
    print(
        f"2 servers x 2 jobs at once, conversations in one Redis; {args.jobs} jobs a round"
        f" from {args.clients} clients, 6 tokens each, text only"
    )
    with tempfile.TemporaryDirectory() as tmp:
        redis_port = free_port()
        redis = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                tmp,
            ],
            stdout=subprocess.DEVNULL,
        )
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        try:
            own = None if args.shared_only else measure(redis_url, False, 1, args.jobs, args.clients)[0]
            shared = measure(redis_url, True, args.rounds, args.jobs, args.clients)
        finally:
            redis.terminate()
    first = shared[0]
    if own is not None:
        print(
            f"shared/own: jobs/s {first.jobs_per_s / own.jobs_per_s:.2f}, "
            f"p95 {percentile(first.latencies, 0.95) / percentile(own.latencies, 0.95):.2f}"
        )
    growth = [round(after - before) for before, after in zip(shared[0].rss, shared[-1].rss, strict=True)]
    print(f"shared: RSS growth from round 1 to round {len(shared)}: {growth} MB")
    if not ((own is None or own.passed) and all(result.passed for result in shared)):
        sys.exit(1)


if __name__ == "__main__":
    main()
