"""A reply cancelled at each await it passes through, found by tracing, not by timing: whatever the moment,
its streams close, the LLM and the voice are given back, no stream thread is left behind, and the next
reply runs at once. On the embedded models (llama.cpp, Piper, Whisper) and on the Fish engine's tiny
checkpoint. The first-audio wait (a reader paused while the first chunk is spoken) is where a cancel once
left llama.cpp held for every later request."""

from __future__ import annotations

import asyncio
import dis
import functools
import sys
import threading
import time
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import fishvoice
from fishvoice.assistant import Assistant
from fishvoice.contract import DoneEvent, ErrorEvent, guarded, parse_request
from fishvoice.memory.sqlite import SQLiteStore
from fishvoice.tts.base import synthesize

from .conftest import SYSTEM, speech_b64

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

PACKAGE = str(Path(fishvoice.__file__).parent)
_SUSPENDING = 0x80 | 0x200  # CO_COROUTINE | CO_ASYNC_GENERATOR
# Nearly greedy, so every run of the reply passes the same awaits.
ASK = {
    "message": "Tell me about the sea, in two sentences.",
    "max_tokens": 40,
    "temperature": 0.1,
    "audio_format": "pcm16",
}
PLAIN = {"message": "Say hello.", "max_tokens": 8, "speak": False}
SETTLE_S = 10.0  # a cancelled reply's threads and backends are free within this
NEXT_REPLY_S = 60.0  # and the next reply is done within this (it takes about a second alone)

Point = tuple[str, int]  # (file within the package, line) of an await


class Awaits:
    """Where coroutines of fishvoice give the event loop back (each await that suspended), on this thread,
    in the order first seen; `fire` is called once, the first time execution suspends at `at`."""

    def __init__(self, at: Point | None = None, fire: Callable[[], None] | None = None):
        self.seen: list[Point] = []
        self._at, self._fire = at, fire

    def __enter__(self) -> Awaits:
        sys.settrace(self._call)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.settrace(None)

    def _call(self, frame: FrameType, event: str, arg: Any) -> Any:
        code = frame.f_code
        if code.co_flags & _SUSPENDING and code.co_filename.startswith(PACKAGE):
            return self._local
        return None

    def _local(self, frame: FrameType, event: str, arg: Any) -> Any:
        code = frame.f_code
        suspended = dis.opname[code.co_code[frame.f_lasti]] == "YIELD_VALUE"
        if event == "return" and suspended and type(arg).__name__ != "async_generator_wrapped_value":
            point = (code.co_filename[len(PACKAGE) + 1 :], frame.f_lineno)
            if point not in self.seen:
                self.seen.append(point)
                if point == self._at and self._fire is not None:
                    self._fire()
                    self._fire = None
        return self._local


def stream_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "fishvoice-iter")


async def reply(assistant: Assistant, fields: dict[str, Any]) -> DoneEvent | ErrorEvent:
    """One reply as the job runner consumes it; its last event."""
    last: DoneEvent | ErrorEvent | None = None
    async with aclosing(guarded(assistant.respond(parse_request(fields)))) as events:
        async for event in events:
            if isinstance(event, DoneEvent | ErrorEvent):
                last = event
    assert last is not None
    return last


async def settled(baseline: int, busy: Callable[[], bool], after: str) -> None:
    """Wait until no stream thread beyond `baseline` is left and `busy()` is False; fail after SETTLE_S."""
    deadline = time.monotonic() + SETTLE_S
    while (left := stream_threads() - baseline) > 0 or busy():
        assert time.monotonic() < deadline, f"{after}: {left} stream threads left behind, backends busy: {busy()}"
        await asyncio.sleep(0.02)


async def cancel_at_every_await(
    assistant: Assistant, fields: dict[str, Any], busy: Callable[[], bool], skip: frozenset[Point] = frozenset()
) -> list[Point]:
    """Run the reply once to find its awaits, then once per await (but those in `skip`), cancelled there;
    after each, everything is given back and the next reply completes. Returns the awaits."""
    await reply(assistant, fields)  # warm
    baseline = stream_threads()
    with Awaits() as found:
        assert isinstance(await reply(assistant, fields), DoneEvent)
    await settled(baseline, busy, "a whole reply")
    loop = asyncio.get_running_loop()
    for point in [p for p in found.seen if p not in skip]:
        task = asyncio.create_task(reply(assistant, fields))
        with Awaits(point, functools.partial(loop.call_soon, task.cancel)) as tracing:
            done, _ = await asyncio.wait([task], timeout=NEXT_REPLY_S)
        assert done, f"cancelled at {point}, the reply did not end"
        assert point in tracing.seen
        await settled(baseline, busy, f"cancelled at {point}")
        after = await asyncio.wait_for(reply(assistant, PLAIN), NEXT_REPLY_S)
        assert isinstance(after, DoneEvent), f"after a cancel at {point}: {after}"
    return found.seen


def line_of(module: str, text: str) -> Point:
    source = (Path(PACKAGE) / module).read_text().splitlines()
    return (module, next(n for n, line in enumerate(source, 1) if text in line))


FIRST_AUDIO_WAIT = ("pipeline.py", "await first_out.wait()")


@pytest.fixture
def assistant_here(llm, tts, asr, tmp_path) -> Assistant:
    return Assistant(llm, tts, SQLiteStore(tmp_path / "c.sqlite3"), default_system_message=SYSTEM, asr=asr)


def llm_held(llm: Any) -> bool:
    return getattr(llm, "model", None) is not None and llm.model.report()["held_by"] is not None


async def test_a_reply_cancelled_at_any_await_gives_everything_back(assistant_here, llm, tts):
    def busy() -> bool:
        return llm_held(llm) or asr_held(assistant_here)

    spoken = await cancel_at_every_await(assistant_here, ASK, busy)
    assert line_of(*FIRST_AUDIO_WAIT) in spoken and len(spoken) >= 10
    # Heard (Whisper), slowed (the time stretch) and remembered (the store): the awaits not met above.
    heard = {
        "user_audio": speech_b64(synthesize(tts, "Hello there, how are you?")),
        "speed": 1.25,
        "conversation_id": "cancelled-everywhere",
        "max_tokens": 16,
        "temperature": 0.1,
        "audio_format": "wav",
    }
    more = await cancel_at_every_await(assistant_here, heard, busy, skip=frozenset(spoken))
    assert {"assistant.py", "pipeline.py", "threads.py", "memory/sqlite.py"} <= {file for file, _ in more}


def asr_held(assistant: Assistant) -> bool:
    return assistant.asr is not None and assistant.asr.progress()["held_by"] is not None  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def asr():
    from fishvoice.asr.whisper import WhisperASR

    return WhisperASR()


@pytest.fixture(scope="module")
def fish_voice(tmp_path_factory):
    pytest.importorskip("torch", reason="the Fish engine needs the `fish` extra (torch)")
    from fishvoice.fish.engine import FishEngine
    from fishvoice.fish.generate import Sampling
    from fishvoice.tts.fish import FishTTS

    from .fish_tiny import write_voice

    checkpoint = write_voice(tmp_path_factory.mktemp("fish") / "tiny-s1")
    voice = FishTTS(FishEngine.load(checkpoint, device="cpu", first_frames=4, chunk_frames=16), Sampling(seed=1))
    yield voice
    voice.engine.close()


async def test_a_reply_in_the_fish_voice_cancelled_at_any_await_gives_its_slots_back(llm, fish_voice, speech, tmp_path):
    assistant = Assistant(llm, fish_voice, SQLiteStore(tmp_path / "c.sqlite3"), default_system_message=SYSTEM)

    def busy() -> bool:
        engine = fish_voice.progress()
        return llm_held(llm) or engine["running"] + engine["waiting"] > 0

    cloned = {**ASK, "system_audio": speech_b64(speech), "reference_text": "The quick brown fox jumps."}
    seen = await cancel_at_every_await(assistant, cloned, busy)
    assert line_of(*FIRST_AUDIO_WAIT) in seen
