"""A realtime client for the tests: OpenAI's `openai` client connected to a server's `/v1/realtime`, audio as
pcm16 at 24 kHz, and the waits and checks the realtime tests share."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai

from fishvoice.audio import Audio, resample, to_pcm16
from tests.test_asr import word_error_rate

KEY = "realtime-key"
QUESTION = "What is the capital of France?"
INTERRUPTION = "Please tell me about dogs instead."
TALKATIVE = "You are a chatty assistant. Answer every question in four or five long sentences."
RATE = 24000
WAIT_S = 120


def pcm(audio: Audio) -> bytes:
    return to_pcm16(resample(audio, RATE).samples)


def silence(seconds: float) -> bytes:
    return bytes(2 * int(RATE * seconds))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def heard_as_asked(transcript: str) -> bool:
    """The question as Whisper base hears it: "capital", and at most one word of six amiss."""
    return "capital" in words(transcript) and word_error_rate(QUESTION, transcript) < 0.2


@asynccontextmanager
async def session(url: str, **query: str) -> AsyncIterator[Any]:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    async with client.realtime.connect(model="fishvoice", extra_query=query) as connection:
        created = await asyncio.wait_for(connection.recv(), WAIT_S)
        assert created.type == "session.created"
        yield connection


async def speak(
    connection: Any, data: bytes, chunk_ms: int = 100, *, paced: bool = False, bytes_per_s: int = 2 * RATE
) -> None:
    """Stream audio in chunks, as a microphone would: faster than real time, or `paced` at it (the
    server's VAD then waits for silence in real time). `bytes_per_s`: pcm16 at 24 kHz unless said."""
    step, started = bytes_per_s * chunk_ms // 1000, time.monotonic()
    for n, offset in enumerate(range(0, len(data), step)):
        if paced:
            await asyncio.sleep(max(0.0, started + n * chunk_ms / 1000 - time.monotonic()))
        await connection.input_audio_buffer.append(audio=b64(data[offset : offset + step]))


def in_order(events: list[Any], order: list[str]) -> bool:
    """Whether the first event of each kind in `order` came in that order."""
    kinds = [e.type for e in events]
    return all(kind in kinds for kind in order) and [kinds.index(k) for k in order] == sorted(
        kinds.index(k) for k in order
    )


async def until(connection: Any, kind: str, seen: list[Any]) -> Any:
    """Events until one of `kind` (returned); every event is kept in `seen`. An error event fails."""
    while True:
        event = await asyncio.wait_for(connection.recv(), WAIT_S)
        seen.append(event)
        if event.type == "error" and kind != "error":
            raise AssertionError(f"error event: {event.error}")
        if event.type == kind:
            return event


async def vad_session(connection: Any, instructions: str, silence_ms: int = 500) -> None:
    turn = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": silence_ms}
    await connection.session.update(
        session={
            "type": "realtime",
            "instructions": instructions,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": RATE},
                    "turn_detection": turn,
                    "transcription": {"model": "whisper-1", "language": "en"},
                }
            },
        }
    )
    updated = await until(connection, "session.updated", [])
    assert updated.session.audio.input.turn_detection.silence_duration_ms == silence_ms
    assert updated.session.audio.input.transcription.language == "en"


def audio_of(events: list[Any], response_id: str) -> bytes:
    return b"".join(
        base64.b64decode(e.delta)
        for e in events
        if e.type == "response.output_audio.delta" and e.response_id == response_id
    )


def transcript_of(events: list[Any], response_id: str) -> str:
    return "".join(
        e.delta for e in events if e.type == "response.output_audio_transcript.delta" and e.response_id == response_id
    )


# A spoken turn's events, in the order they must come.
ANSWERED = [
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "conversation.item.input_audio_transcription.completed",
    "response.created",
    "response.output_audio.delta",
    "response.done",
]


def stored_history(url: str, conversation_id: str, key: str | None = KEY, message: str = "Thanks.") -> list[Any]:
    """The conversation as a job on it sees it (a short text job, answered without speech)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"input": {"message": message, "conversation_id": conversation_id, "speak": False, "max_tokens": 8}}
    return httpx.post(f"{url}/runsync", headers=headers, json=body, timeout=WAIT_S).json()["output"]["history"]


def ask_aloud(url: str, data: bytes, *, silence_ms: int = 500, paced: bool = False) -> list[Any]:
    """Speak `data` into a new server-VAD session (faster than real time, or `paced` at it, 20 ms a
    message); the events until the reply's response.done."""

    async def talk() -> list[Any]:
        async with session(url) as connection:
            await vad_session(connection, "You answer in one short sentence.", silence_ms=silence_ms)
            await speak(connection, data, 20 if paced else 100, paced=paced)
            seen: list[Any] = []
            await until(connection, "response.done", seen)
            return seen

    return asyncio.run(talk())
