"""What watching the server costs: each request's trace, route name, count and log line (RequestTracing and
name_route), and a /metrics scrape.

The same small route is called in process (httpx's ASGI transport, no network) on an app without and with
the tracing; prints each one's time per request and their ratio. Then a /metrics scrape of a server that has
served those requests: its time and size.

    python bench/operations.py [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time

import httpx
from fastapi import Depends, FastAPI

from fishvoice.memory.sqlite import SQLiteStore
from fishvoice.server.http.tracing import RequestTracing, name_route
from fishvoice.server.operations.collector import exposition
from fishvoice.server.operations.watched import Watched
from fishvoice.tts.piper import PiperTTS


def app(traced: bool) -> FastAPI:
    built = FastAPI(dependencies=[Depends(name_route)] if traced else [])

    @built.get("/status/{job_id}")
    async def status(job_id: str) -> dict[str, str]:
        return {"id": job_id, "status": "IN_QUEUE"}

    if traced:
        built.add_middleware(RequestTracing, generation_routes=("/v1/tts",))
    return built


async def per_request_us(traced: bool, requests: int) -> float:
    transport = httpx.ASGITransport(app=app(traced))
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for n in range(200):  # warm
            await client.get(f"/status/{n}")
        rounds = []
        for _ in range(5):
            started = time.perf_counter()
            for n in range(requests // 5):
                await client.get(f"/status/{n}")
            rounds.append((time.perf_counter() - started) / (requests // 5) * 1e6)
    return statistics.median(rounds)


async def scrape_ms(tmp: str) -> tuple[float, int]:
    async def counts() -> dict[str, int]:
        return {"IN_QUEUE": 0, "IN_PROGRESS": 0}

    progress = {
        "progress": {},
        "in_use": {"work": 0, "stream_threads": 0, "realtime_sessions": 0, "tts_live_sockets": 0},
    }
    watched = Watched(counts, lambda: 0, 2, lambda: progress, SQLiteStore(f"{tmp}/bench.sqlite3"), PiperTTS())
    times, size = [], 0
    for _ in range(50):
        started = time.perf_counter()
        size = len(await exposition(watched))
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), size


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    logging.disable(logging.INFO)  # a request's line costs what the handler does with it; measured without output
    plain = await per_request_us(False, args.requests)
    traced = await per_request_us(True, args.requests)
    print(f"per request, in process: plain {plain:.0f} us, traced and counted {traced:.0f} us ({traced / plain:.2f}x)")
    with tempfile.TemporaryDirectory() as tmp:
        ms, size = await scrape_ms(tmp)
    print(f"/metrics scrape: {ms:.1f} ms, {size / 1024:.0f} KiB")


if __name__ == "__main__":
    asyncio.run(main())
