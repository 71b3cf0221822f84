"""Callers who leave at the worst moment, against a real `fishvoice serve` on each voice the tests have (Piper,
and the Fish engine on its tiny checkpoint): realtime sessions that speak again, or drop their connection, at
many offsets around the moment a reply begins (before, during and after the reply begun at the pause is
confirmed, and while its first chunk is spoken); jobs cancelled at each stage of the pipeline; speech and
chat streams dropped mid-way. After each, a plain job completes promptly and nothing is left behind: no
stream thread, speech slot or realtime session in use, the LLM and the engine free (/health)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from tests.realtime_client import TALKATIVE, b64, session, silence, speak, vad_session
from tests.servers import server

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

# Seconds from the end of the question's speech: the pause is guessed at about 0.1 s, the turn confirmed
# by 0.3 s of silence, and the reply's first chunk spoken within about half a second after.
OFFSETS = [0.1, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 1.0]
PROMPT_S = 30  # a plain job after a caller left is done within this (about a second alone)
FREE_S = 15  # and what the caller held is free within this
STORY = {"message": "Tell me a long story about the sea.", "max_tokens": 120, "system_message": TALKATIVE}


@pytest.fixture(scope="module", params=["piper", "fish"])
def url(request, tmp_path_factory) -> Iterator[str]:
    settings = {"concurrency": "2", "realtime_sessions": "3"}
    if request.param == "fish":
        pytest.importorskip("torch", reason="the Fish engine needs the `fish` extra (torch)")
        from .fish_tiny import write_voice

        checkpoint = write_voice(tmp_path_factory.mktemp("fish") / "tiny-s1")
        settings |= {"voice": "fish", "fish_checkpoint": str(checkpoint), "fish_device": "cpu", "fish_seed": "1"}
    with server(tmp_path_factory.mktemp(f"chaos-{request.param}"), **settings) as base:
        yield base


def in_use(url: str) -> dict[str, Any]:
    """What /health says is held: counts, and the backends held by anyone (None where free)."""
    health = httpx.get(f"{url}/health", timeout=10).json()
    progress = health["progress"]
    voice = progress.get("voice", {})
    return {
        **health["in_use"],
        "jobs_running": health["workers"]["running"],
        "llm": progress["llm"]["held_by"],
        "asr": progress["asr"]["held_by"],
        "engine": voice.get("running", 0) + voice.get("waiting", 0),
    }


def settled(url: str, after: str) -> None:
    """A plain job completes promptly, and nothing stays held."""
    job = httpx.post(
        f"{url}/runsync?wait={PROMPT_S * 1000}",
        json={"input": {"message": "Say hi.", "max_tokens": 4, "audio_format": "wav"}},
        timeout=PROMPT_S + 10,
    ).json()
    assert job["status"] == "COMPLETED", f"after {after}: {job}"
    deadline = time.monotonic() + FREE_S
    while any((held := in_use(url)).values()):
        assert time.monotonic() < deadline, f"after {after}, still held: {held}"
        time.sleep(0.1)


async def record(connection: Any, seen: list[str]) -> None:
    """Every event's type (OpenAI's client), until the connection ends."""
    with contextlib.suppress(Exception):
        while True:
            seen.append((await connection.recv()).type)


async def drain(socket: websockets.ClientConnection) -> None:
    with contextlib.suppress(Exception):
        async for _ in socket:
            pass


async def until(condition: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        await asyncio.sleep(0.05)


async def speak_again_at(url: str, question: bytes, interruption: bytes, offset: float) -> None:
    """Ask, speak again `offset` s after the question ends, and hang up once the reply to that has begun
    (the reply before it has ended by then: one at a time)."""
    async with session(url) as connection:
        await vad_session(connection, TALKATIVE, silence_ms=300)
        seen: list[str] = []
        reading = asyncio.create_task(record(connection, seen))
        try:
            await speak(connection, silence(0.3) + question + silence(offset), 20, paced=True)
            spoke_again = len(seen)
            await speak(connection, interruption + silence(0.5), 20, paced=True)
            await until(lambda: "response.created" in seen[spoke_again:], PROMPT_S)
        finally:
            reading.cancel()


async def drop_at(url: str, question: bytes, offset: float) -> None:
    """Ask, and `offset` s after the question ends, drop the connection (no close handshake)."""
    turn = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 300}
    socket = await websockets.connect(url.replace("http://", "ws://") + "/v1/realtime")
    reading = asyncio.create_task(drain(socket))
    update = {"instructions": TALKATIVE, "audio": {"input": {"turn_detection": turn}}}
    await socket.send(json.dumps({"type": "session.update", "session": {"type": "realtime", **update}}))
    data, step, started = silence(0.3) + question + silence(offset), 2 * 24000 * 20 // 1000, time.monotonic()
    for n, at in enumerate(range(0, len(data), step)):
        await asyncio.sleep(max(0.0, started + n * 0.02 - time.monotonic()))
        await socket.send(json.dumps({"type": "input_audio_buffer.append", "audio": b64(data[at : at + step])}))
    socket.transport.abort()
    reading.cancel()


def test_realtime_callers_who_speak_again_as_a_reply_begins_leave_nothing_held(url, question, interruption):
    for offset in OFFSETS:
        asyncio.run(speak_again_at(url, question, interruption, offset))
        settled(url, f"speaking again {offset} s after the question")


def test_realtime_connections_dropped_as_a_reply_begins_leave_nothing_held(url, question):
    for offset in OFFSETS:
        asyncio.run(drop_at(url, question, offset))
        settled(url, f"a connection dropped {offset} s after the question")


def submit(url: str, job: dict[str, Any]) -> str:
    return str(httpx.post(f"{url}/run", json={"input": job}, timeout=10).json()["id"])


def cancel(url: str, job_id: str) -> str:
    return str(httpx.post(f"{url}/cancel/{job_id}", timeout=30).json()["status"])


def stream_until(url: str, job_id: str, events: int, kind: str) -> None:
    """Read the job's stream until it has sent `events` events of `kind` (text, audio)."""
    seen, deadline = 0, time.monotonic() + PROMPT_S
    while seen < events:
        taken = httpx.post(f"{url}/stream/{job_id}", timeout=10).json()
        seen += sum(1 for item in taken["stream"] if item["output"].get("type") == kind)
        assert taken["status"] in ("IN_QUEUE", "IN_PROGRESS") or seen >= events, taken["status"]
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("stage", "kind", "events"),
    [("its first words", "text", 1), ("its first audio", "audio", 1), ("its third audio", "audio", 3)],
)
def test_a_job_cancelled_at_each_stage_leaves_nothing_held(url, stage, kind, events):
    job_id = submit(url, STORY)
    stream_until(url, job_id, events, kind)
    assert cancel(url, job_id) in ("CANCELLED", "COMPLETED")
    settled(url, f"a job cancelled at {stage}")


def test_jobs_cancelled_while_queued_heard_or_just_begun_leave_nothing_held(url, speech):
    from .conftest import speech_b64

    heard = {"user_audio": speech_b64(speech), "max_tokens": 120}
    running = [submit(url, STORY), submit(url, STORY)]  # both workers busy
    queued = submit(url, STORY)
    assert cancel(url, queued) == "CANCELLED"
    for job_id in running:
        cancel(url, job_id)
    for delay in (0.0, 0.05, 0.15, 0.3, 0.6):  # the transcription, the prompt's prefill, the first chunk
        job_id = submit(url, heard)
        time.sleep(delay)
        cancel(url, job_id)
        settled(url, f"a spoken job cancelled {delay} s after it was sent")


LONG = "The sea was calm that morning. " * 6


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/audio/speech", {"model": "tts-1", "voice": "default", "input": LONG, "response_format": "pcm"}),
        ("/v1/tts", {"text": LONG, "format": "pcm", "streaming": True}),
        (
            "/v1/chat/completions",
            {
                "model": "fishvoice",
                "messages": [{"role": "user", "content": "Tell me a long story about the sea."}],
                "stream": True,
                "modalities": ["text", "audio"],
                "audio": {"voice": "default", "format": "pcm16"},
            },
        ),
    ],
)
def test_a_stream_dropped_after_its_first_bytes_leaves_nothing_held(url, path, body):
    with httpx.stream("POST", f"{url}{path}", json=body, timeout=PROMPT_S) as response:
        assert response.status_code == 200
        next(response.iter_raw())  # then the client goes
    settled(url, f"a {path} stream dropped")
