"""Live conversation latency on `/v1/realtime`: voice to voice, and barge-in, beside the sequential path.

Starts `fishvoice serve` with the embedded models on a free port and talks to it through the official
`openai` client's realtime connection, sending Piper's speech as pcm16 at real-time pace (20 ms a
chunk, so the server's VAD waits for silence in real time), with server VAD. For each of `--turns`
turns it measures:
- voice to voice: from the end of the user's speech (the last voiced sample's send time) to the first
  reply audio received;
- barge-in: the user speaks again as the reply's first audio arrives; from the send time of that
  speech's first voiced sample to the last audio of the interrupted reply received (0 if none came).
The sequential path (in this process, same models: wait `silence_ms`, transcribe the whole turn, write
the whole reply, speak it whole) gives the figure voice to voice is compared with.

With `--semantic` it compares turn detection instead: the time from the end of a finished question's speech
to `input_audio_buffer.speech_stopped` with server VAD's default (500 ms of silence) and with semantic VAD
(`eagerness: high`), and how many turns sentences paused in the middle (1.5 s after "... with") become with
server VAD and with semantic VAD's `low`.

    python bench/realtime.py [--turns 20] [--silence-ms 300] [--stages]
    python bench/realtime.py --semantic [--turns 10]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import openai
from common import free_port, percentile, wait_up
from pipeline import SPOKEN, sequential

from fishvoice.asr.whisper import WhisperASR
from fishvoice.audio import Audio, encode_bytes, from_pcm16, resample, to_pcm16
from fishvoice.llm.llama_cpp import LlamaCppLLM
from fishvoice.tts.base import synthesize
from fishvoice.tts.piper import PiperTTS

RATE = 24000
CHUNK_MS = 20
SYSTEM = "You are a storyteller. Answer every question with a story of at least eight sentences."
QUESTIONS = [
    "What is the capital of France?",
    "How do bees make honey?",
    "Tell me something about the moon.",
    "Why is the sky blue?",
    "What should I cook for dinner tonight?",
]
INTERRUPTION = "Please tell me about dogs instead."
PAUSED = [  # (before the pause, after it): a sentence that trails off, then goes on
    ("I would like to order a large pizza with", "extra cheese and mushrooms, please."),
    ("Could you remind me to call my sister and", "my brother tomorrow morning?"),
    ("The weather today is warm but", "it might rain later in the evening."),
]
SERVER_VAD = {"type": "server_vad", "silence_duration_ms": 500, "create_response": False}


def voiced_span(audio: Audio, level: float = 0.02) -> tuple[int, int]:
    """First and last sample (24 kHz pcm16 byte offsets) louder than `level`."""
    loud = np.flatnonzero(np.abs(audio.samples) > level)
    return int(loud[0]) * 2, int(loud[-1]) * 2


class Line:
    """One realtime connection: a paced microphone, and the server's events with their arrival times."""

    def __init__(self, connection: Any, stages: bool):
        self.connection = connection
        self.events: list[tuple[float, Any]] = []
        self.arrived = asyncio.Event()
        self.stages = stages  # print when each turn's events came

    async def listen(self) -> None:
        async for event in self.connection:
            self.events.append((time.perf_counter(), event))
            self.arrived.set()
            if event.type == "error":
                print("error event:", event.error, file=sys.stderr)

    async def speak(self, data: bytes, marks: dict[int, str], times: dict[str, float]) -> None:
        """Send `data` at real-time pace; the send time of each byte offset in `marks` lands in `times`."""
        step = 2 * RATE * CHUNK_MS // 1000
        started = time.perf_counter()
        for n, offset in enumerate(range(0, len(data), step)):
            await asyncio.sleep(max(0.0, started + n * CHUNK_MS / 1000 - time.perf_counter()))
            chunk = data[offset : offset + step]
            await self.connection.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
            for mark, name in marks.items():
                if offset <= mark < offset + step:
                    times[name] = time.perf_counter()

    async def wait_for(self, kind: str, since: int, **match: Any) -> tuple[float, Any]:
        while True:
            for at, event in self.events[since:]:
                if event.type == kind and all(getattr(event, k, None) == v for k, v in match.items()):
                    return at, event
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 120)


async def one_turn(
    line: Line, question: bytes, interruption: bytes, span: tuple[int, int], cut: tuple[int, int]
) -> tuple[float, float, float, str]:
    """(voice to voice s, barge-in s, speech start to speech_started s, the interrupted reply's status) of one
    question interrupted by the user."""
    times: dict[str, float] = {}
    since = len(line.events)
    silence = bytes(2 * RATE)  # a second of silence: the VAD hears the turn end
    await line.speak(question + silence, {span[1]: "speech_end"}, times)
    _, heard = await line.wait_for("conversation.item.input_audio_transcription.completed", since)
    _, created = await line.wait_for("response.created", index_of(line, heard))
    first_at, first = await line.wait_for(
        "response.output_audio.delta", index_of(line, created), response_id=created.response.id
    )
    voice_to_voice = first_at - times["speech_end"]
    if line.stages:
        stages = (
            "input_audio_buffer.speech_stopped",
            "conversation.item.input_audio_transcription.completed",
            "response.created",
        )
        marks = [
            f"{e.type.split('.')[-1]} +{(at - times['speech_end']) * 1000:.0f} ms"
            for at, e in line.events[since:]
            if e.type in stages
        ]
        print("   ", ", ".join(marks), f"first audio +{voice_to_voice * 1000:.0f} ms")
    speaking = asyncio.create_task(line.speak(interruption + silence, {cut[0]: "barge_in"}, times))
    done = await wait_done(line, since, first.response_id)
    await speaking
    audio_times = [
        at
        for at, event in line.events[since:]
        if event.type == "response.output_audio.delta" and event.response_id == first.response_id
    ]
    barge_in = max(0.0, audio_times[-1] - times["barge_in"]) if "barge_in" in times else 0.0
    heard_at = [at for at, e in line.events[since:] if e.type == "input_audio_buffer.speech_started"]
    detection = heard_at[-1] - times["barge_in"] if heard_at and "barge_in" in times else 0.0
    # The interruption is a turn of its own: let its reply finish before the next question.
    await wait_done(line, len(line.events) - 1, None, after=first.response_id)
    return voice_to_voice, barge_in, detection, done.response.status


def index_of(line: Line, event: Any) -> int:
    return next(i for i, (_, seen) in enumerate(line.events) if seen is event)


async def wait_done(line: Line, since: int, response_id: str | None, after: str | None = None) -> Any:
    """The response.done of `response_id` (or of any response but `after`) from event `since` on."""
    while True:
        _, event = await line.wait_for("response.done", since)
        since = index_of(line, event) + 1
        if (response_id is None or event.response.id == response_id) and event.response.id != after:
            return event


async def realtime(
    url: str, turns: int, silence_ms: int, spoken: dict[str, bytes], stages: bool = False
) -> list[tuple[float, float, float, str]]:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0)
    async with client.realtime.connect(model="fishvoice") as connection:
        line = Line(connection, stages)
        listener = asyncio.create_task(line.listen())
        detection = {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": silence_ms,
        }
        await connection.session.update(
            session={
                "type": "realtime",
                "instructions": SYSTEM,
                "audio": {"input": {"turn_detection": detection, "transcription": {"language": "en"}}},
            }
        )
        results = []
        interruption = spoken[INTERRUPTION]
        cut = voiced_span(Audio(from_pcm16(interruption), RATE))
        for n in range(turns):
            question = spoken[QUESTIONS[n % len(QUESTIONS)]]
            span = voiced_span(Audio(from_pcm16(question), RATE))
            results.append(await one_turn(line, question, interruption, span, cut))
            print(
                f"turn {n + 1}: voice to voice {results[-1][0] * 1000:.0f} ms, barge-in {results[-1][1] * 1000:.0f} ms"
            )
        listener.cancel()
        return results


async def sequential_path(silence_ms: int, turns: int) -> list[float]:
    llm, tts, asr = LlamaCppLLM(context=2048), PiperTTS(), WhisperASR()
    times = []
    for n in range(turns):
        question = QUESTIONS[n % len(QUESTIONS)]
        SPOKEN[question] = base64.b64encode(encode_bytes(synthesize(tts, question), "wav")[0]).decode()
        first, _, _ = await sequential(llm, tts, question, 160, asr)
        times.append(silence_ms / 1000 + first)
    return times


async def turn_ends(url: str, detection: dict[str, Any], spoken: list[tuple[bytes, int]]) -> list[tuple[float, int]]:
    """For each (speech, byte offset of its end): seconds from that offset's send time to speech_stopped, and
    how many turns were committed, with `detection` (no replies)."""
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0)
    async with client.realtime.connect(model="fishvoice") as connection:
        line = Line(connection, False)
        listener = asyncio.create_task(line.listen())
        await connection.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": detection}}})
        results = []
        for data, end in spoken:
            since, times = len(line.events), {}
            await line.speak(data + bytes(2 * RATE * 6), {end: "end"}, times)  # six seconds of silence after
            stopped = [at for at, e in line.events[since:] if e.type == "input_audio_buffer.speech_stopped"]
            committed = sum(e.type == "input_audio_buffer.committed" for _, e in line.events[since:])
            results.append((stopped[-1] - times["end"] if stopped else float("nan"), committed))
        listener.cancel()
        return results


def semantic(url: str, turns: int, tts: PiperTTS) -> None:
    def pcm(text: str) -> bytes:
        return to_pcm16(resample(synthesize(tts, text), RATE).samples)

    questions = [pcm(QUESTIONS[n % len(QUESTIONS)]) for n in range(turns)]
    asked = [(q, voiced_span(Audio(from_pcm16(q), RATE))[1]) for q in questions]
    paused = []
    for before, after in PAUSED:
        data = pcm(before) + bytes(2 * RATE * 3 // 2) + pcm(after)
        paused.append((data, voiced_span(Audio(from_pcm16(data), RATE))[1]))
    high = {"type": "semantic_vad", "eagerness": "high", "create_response": False}
    low = {"type": "semantic_vad", "eagerness": "low", "create_response": False}
    asyncio.run(turn_ends(url, SERVER_VAD, asked[:1]))  # warm-up
    for name, detection in (("server_vad 500 ms", SERVER_VAD), ("semantic_vad high", high)):
        waited = [at for at, _ in asyncio.run(turn_ends(url, detection, asked))]
        print(
            f"{name}: a finished question's speech end to speech_stopped p50 {percentile(waited, 0.5) * 1000:.0f} ms,"
            f" p95 {percentile(waited, 0.95) * 1000:.0f} ms over {len(waited)} questions"
        )
    for name, detection in (("server_vad 500 ms", SERVER_VAD), ("semantic_vad low", low)):
        counts = [count for _, count in asyncio.run(turn_ends(url, detection, paused))]
        print(f"{name}: {len(paused)} sentences paused 1.5 s mid-way became {counts} turns")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--silence-ms", type=int, default=300, help="server VAD's silence_duration_ms")
    parser.add_argument("--sequential-turns", type=int, default=5)
    parser.add_argument("--stages", action="store_true", help="print when each turn's events came")
    parser.add_argument("--semantic", action="store_true", help="compare turn detection: server and semantic VAD")
    args = parser.parse_args()
    tts = PiperTTS()
    spoken = {text: to_pcm16(resample(synthesize(tts, text), RATE).samples) for text in [*QUESTIONS, INTERRUPTION]}
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {
            **os.environ,
            "FISHVOICE_PORT": str(port),
            "FISHVOICE_STORE": f"{tmp}/bench.sqlite3",
            "FISHVOICE_LOG_LEVEL": "WARNING",
        }
        server = subprocess.Popen([sys.executable, "-m", "fishvoice", "serve"], env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_up(f"{url}/health")
            if args.semantic:
                semantic(url, args.turns, tts)
                return
            asyncio.run(realtime(url, 1, args.silence_ms, spoken))  # warm-up: first-call costs out of the figures
            results = asyncio.run(realtime(url, args.turns, args.silence_ms, spoken, args.stages))
        finally:
            server.terminate()
            server.wait(30)
    sequential_times = asyncio.run(sequential_path(args.silence_ms, args.sequential_turns))
    v2v = [r[0] for r in results]
    barge = [r[1] for r in results]
    detected = [r[2] for r in results]
    cancelled = sum(r[3] == "cancelled" for r in results)
    seq = statistics.median(sequential_times)
    print(
        f"voice to voice over {len(v2v)} turns (silence_duration_ms {args.silence_ms}):"
        f" p50 {percentile(v2v, 0.5) * 1000:.0f} ms, p95 {percentile(v2v, 0.95) * 1000:.0f} ms (goal p50 <= 800 ms);"
        f" sequential path median {seq * 1000:.0f} ms"
        f" over {len(sequential_times)} turns; ratio p50/sequential {percentile(v2v, 0.5) / seq:.3f}"
    )
    print(
        f"barge-in (user speech start to last reply audio): p50 {percentile(barge, 0.5) * 1000:.0f} ms,"
        f" p95 {percentile(barge, 0.95) * 1000:.0f} ms (goal p95 <= 200 ms);"
        f" replies cancelled {cancelled}/{len(barge)};"
        f" speech_started received p50 {percentile(detected, 0.5) * 1000:.0f} ms,"
        f" p95 {percentile(detected, 0.95) * 1000:.0f} ms after the speech began"
    )


if __name__ == "__main__":
    main()
