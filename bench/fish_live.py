"""First audio on Fish's `/v1/tts/live`, text streamed in as an LLM would write it, beside the same text sent
whole to `/v1/tts` (streaming).

Starts `fishvoice serve` (the embedded Piper voice, or the one FISHVOICE_* settings choose) on a free port.
For each of `--utterances` replies:
- live: a WebSocket `start`, then the reply's words as `text` events every `--word-ms` (a writer's pace),
  then `stop`; first audio is timed from the first `text` event, the whole from `start`;
- whole: the finished text in one `POST /v1/tts` with `streaming: true`, first audio timed from the request
  (the text's writing time not counted: it is the best case a client that waits for the whole text gets,
  and it has waited for all of it).
Prints p50/p95 of each, and live's first audio against whole's with the writing time added back (what a
client that waits for the whole text gets after the first word is written).

    python bench/fish_live.py [--utterances 20] [--word-ms 30] [--latency balanced]
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
import msgpack
import websockets
from common import free_port, percentile, wait_up

REPLIES = [
    "Sure, here is a quick answer. The lighthouse keeper climbs the stairs at dusk and lights the lamp.",
    "Good question, and the answer is simple. Bees dance to tell the hive where the flowers are.",
    "Let me think about that for a moment. The river runs to the sea, carrying the snow of the mountains.",
    "Of course. A robot learned to paint by watching the sunset, one brush stroke at a time.",
]


async def live(url: str, text: str, word_ms: float, latency: str) -> tuple[float, float]:
    """(first audio s after the first text event, whole s after start) on /v1/tts/live."""
    socket_url = url.replace("http://", "ws://") + "/v1/tts/live"
    async with websockets.connect(socket_url) as socket:
        started = time.perf_counter()
        await socket.send(
            msgpack.packb({"event": "start", "request": {"text": "", "format": "pcm", "latency": latency}})
        )
        first_text = time.perf_counter()
        first_audio: float | None = None

        async def write() -> None:
            for word in text.split(" "):
                await socket.send(msgpack.packb({"event": "text", "text": word + " "}))
                await asyncio.sleep(word_ms / 1000)
            await socket.send(msgpack.packb({"event": "stop"}))

        writer = asyncio.create_task(write())
        while True:
            event = msgpack.unpackb(await socket.recv())
            if event["event"] == "audio" and first_audio is None:
                first_audio = time.perf_counter() - first_text
            if event["event"] == "finish":
                assert event["reason"] == "stop", event
                break
        await writer
        return first_audio or float("nan"), time.perf_counter() - started


def whole(url: str, text: str) -> tuple[float, float]:
    """(first audio s, whole s) of the finished text on /v1/tts, streamed."""
    started = time.perf_counter()
    first: float | None = None
    body = {"text": text, "format": "pcm", "streaming": True}
    with httpx.stream("POST", f"{url}/v1/tts", json=body, timeout=120) as reply:
        reply.raise_for_status()
        for chunk in reply.iter_bytes():
            if chunk and first is None:
                first = time.perf_counter() - started
    return first or float("nan"), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=20)
    parser.add_argument("--word-ms", type=float, default=30.0, help="the pace text events are sent at")
    parser.add_argument("--latency", default="balanced", choices=["low", "balanced", "normal"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {**os.environ, "FISHVOICE_PORT": str(port), "FISHVOICE_STORE": f"{tmp}/bench.sqlite3"}
        env.setdefault("FISHVOICE_LOG_LEVEL", "WARNING")
        server = subprocess.Popen([sys.executable, "-m", "fishvoice", "serve"], env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_up(f"{url}/health")
            asyncio.run(live(url, REPLIES[0], args.word_ms, args.latency))  # warm-up: first-call costs out
            whole(url, REPLIES[0])
            texts = [REPLIES[n % len(REPLIES)] for n in range(args.utterances)]
            lives = [asyncio.run(live(url, text, args.word_ms, args.latency)) for text in texts]
            wholes = [whole(url, text) for text in texts]
        finally:
            server.terminate()
            server.wait(30)
    writing = [len(text.split(" ")) * args.word_ms / 1000 for text in texts]
    waited = [first + w for (first, _), w in zip(wholes, writing, strict=True)]
    report("live, first audio after the first text", [first for first, _ in lives])
    report("whole, first audio after the request", [first for first, _ in wholes])
    report("whole, first audio after the first word written", waited)
    report("live, the whole utterance", [total for _, total in lives])
    report("whole, the whole utterance", [total for _, total in wholes])
    ratio = percentile([first for first, _ in lives], 0.5) / percentile(waited, 0.5)
    print(f"live first audio / whole-text first audio (writing included): {ratio:.2f} (p50s)")


def report(name: str, values: list[float]) -> None:
    print(f"{name}: p50 {percentile(values, 0.5) * 1000:.0f} ms, p95 {percentile(values, 0.95) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
