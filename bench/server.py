"""Load on the live server: N concurrent clients, each running one job through /run and /stream.

Starts `fishvoice serve` with the embedded models on a free port, then for each N (default 10 and 50)
prints jobs per second, p50/p95 time to first audio as a client polling /stream hears it, and the
server's own overhead: a job's time in the server (delayTime + executionTime) minus the handler's
own total, and the time waiting in the queue.

    python bench/server.py [--clients 10 50] [--concurrency 2] [--max-tokens 40]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time

import httpx
from common import free_port, percentile, wait_up

PROMPTS = [
    "Tell me a fact about the sea.",
    "Describe a sunrise.",
    "Give me a tip for sleeping well.",
    "Say something about cats.",
]


async def one_job(http: httpx.AsyncClient, n: int, max_tokens: int) -> dict[str, float]:
    started = time.perf_counter()
    job_id = (
        await http.post(
            "/run",
            json={"input": {"message": PROMPTS[n % len(PROMPTS)], "max_tokens": max_tokens, "audio_format": "pcm16"}},
        )
    ).json()["id"]
    first_audio = None
    while True:
        part = (await http.get(f"/stream/{job_id}")).json()
        if first_audio is None and any(item["output"]["type"] == "audio" for item in part["stream"]):
            first_audio = time.perf_counter() - started
        if part["status"] not in ("IN_QUEUE", "IN_PROGRESS") and not part["stream"]:
            break
        if not part["stream"]:
            await asyncio.sleep(0.05)
    seen = time.perf_counter() - started
    job = (await http.get(f"/status/{job_id}")).json()
    assert job["status"] == "COMPLETED", job
    handler_ms = job["output"]["timings_ms"]["total"]
    return {
        "first_audio": first_audio or seen,
        "latency": seen,
        "queue_ms": job["delayTime"],
        "overhead_ms": job["executionTime"] - handler_ms,
        "handler_ms": handler_ms,
    }


async def load(url: str, clients: int, max_tokens: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        started = time.perf_counter()
        results = await asyncio.gather(*(one_job(http, n, max_tokens) for n in range(clients)))
        elapsed = time.perf_counter() - started
    first = [r["first_audio"] * 1000 for r in results]
    overhead = [r["overhead_ms"] for r in results]
    handler = [r["handler_ms"] for r in results]
    print(
        f"clients={clients:3d}  jobs/s={clients / elapsed:5.2f}  first audio p50={percentile(first, 0.5):6.0f} ms "
        f"p95={percentile(first, 0.95):6.0f} ms"
        f"  latency p95={percentile([r['latency'] * 1000 for r in results], 0.95):6.0f} ms"
        f"  queue p50={percentile([r['queue_ms'] for r in results], 0.5):6.0f} ms"
        f"  server overhead p50={statistics.median(overhead):.1f} ms "
        f"p95={percentile(overhead, 0.95):.1f} ms  (handler p50 {statistics.median(handler):.0f} ms; overhead/handler "
        f"{statistics.median(overhead) / statistics.median(handler):.4f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=40)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "FISHVOICE_PORT": str(port),
            "FISHVOICE_CONCURRENCY": str(args.concurrency),
            "FISHVOICE_QUEUE_SIZE": str(max(args.clients) + 8),
            "FISHVOICE_STORE": f"{tmp}/bench.sqlite3",
            "FISHVOICE_LOG_LEVEL": "WARNING",
        }
        server = subprocess.Popen([sys.executable, "-m", "fishvoice", "serve"], env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_up(f"{url}/health")
            print(
                f"fishvoice serve, {args.concurrency} jobs at once, max_tokens={args.max_tokens},"
                f" {os.cpu_count()} CPU cores"
            )
            asyncio.run(load(url, 2, args.max_tokens))  # warm-up
            for clients in args.clients:
                asyncio.run(load(url, clients, args.max_tokens))
        finally:
            server.terminate()
            server.wait(timeout=15)


if __name__ == "__main__":
    main()
