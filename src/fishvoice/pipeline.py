"""The speech pipeline: the LLM's words in, text and spoken pieces out, as soon as each is ready.

Two tasks run side by side in one TaskGroup: one reads the LLM and cuts its words into speakable
chunks (a sentence or clause, the first a short phrase: see text.SpeechChunker); the other speaks
each chunk as it comes, so the first words are heard while the LLM still writes. Only the first chunk
is spoken alone: the reading waits until its first audio is out, since on a shared CPU an LLM writing
on would slow the voice on the one piece the listener is waiting for (two to three times, with
llama.cpp and Piper on 2 cores), and the LLM is far ahead of the speech anyway. Pieces come out in
the order they are produced; if either task fails, the other is cancelled and the failure is raised
as itself.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass

from .audio import Audio, TimeStretch, resample
from .contract import LLMItem
from .markers import carry_speaker, without_markers
from .numbers import spell_out_numbers
from .text import SpeechChunker, is_speakable, normalize_for_speech
from .threads import fail_on_stall, iterate_in_thread, run_in_thread
from .tts.base import TTS
from .voices import VoiceReference


@dataclass(frozen=True)
class Spoken:
    """A piece of speech: the audio, the chunk of the reply it speaks, and the voice's time on it."""

    audio: Audio
    text: str
    seconds: float


# What the pipeline yields: a text delta, the LLM's token counts (once, after its last delta), or speech.
Piece = LLMItem | Spoken
Speak = Callable[[str], AsyncGenerator[Audio, None]]
_END = None  # the last item on a queue


async def speech_pipeline(words: AsyncGenerator[LLMItem, None], speak: Speak | None) -> AsyncGenerator[Piece, None]:
    """Yield the LLM's items as they come and, when `speak` is given, the speech of each chunk of them.

    The tasks run in a TaskGroup inside a task of their own, so a failure cancels its sibling but never
    the caller, whatever the caller is doing between two pieces; the failure is raised here once the
    pieces before it are out. Closing the iterator early cancels both tasks."""
    pieces: asyncio.Queue[Piece | None] = asyncio.Queue()
    runner = asyncio.create_task(_run(words, speak, pieces))
    try:
        while (piece := await pieces.get()) is not _END:
            yield piece
        await runner
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def _run(words: AsyncGenerator[LLMItem, None], speak: Speak | None, pieces: asyncio.Queue[Piece | None]) -> None:
    try:
        async with asyncio.TaskGroup() as group:
            chunks: asyncio.Queue[str | None] | None = None
            first_out = asyncio.Event()
            if speak is not None:
                chunks = asyncio.Queue()
                group.create_task(_speak_chunks(chunks, speak, pieces, first_out))
            group.create_task(_read_words(words, pieces, chunks, first_out))
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    finally:
        pieces.put_nowait(_END)


async def _read_words(
    words: AsyncGenerator[LLMItem, None],
    pieces: asyncio.Queue[Piece | None],
    chunks: asyncio.Queue[str | None] | None,
    first_out: asyncio.Event,
) -> None:
    chunker = SpeechChunker()
    # Owned here: a cancel that lands between two items (on the first-audio wait) closes the LLM's stream
    # at once, which stops its generation and gives the model back.
    async with aclosing(words):
        async for item in words:
            pieces.put_nowait(item)
            if chunks is not None and isinstance(item, str):
                cut = chunker.feed(item)
                for chunk in cut:
                    chunks.put_nowait(chunk)
                if cut and not first_out.is_set():
                    await first_out.wait()  # the first chunk's voice has the CPU to itself (see the module)
    if chunks is not None:
        for chunk in chunker.flush():
            chunks.put_nowait(chunk)
        chunks.put_nowait(_END)


async def _speak_chunks(
    chunks: asyncio.Queue[str | None], speak: Speak, pieces: asyncio.Queue[Piece | None], first_out: asyncio.Event
) -> None:
    try:
        while (chunk := await chunks.get()) is not _END:
            spoken = normalize_for_speech(chunk)
            if is_speakable(spoken):
                started = time.perf_counter()
                # A voice may yield a chunk in pieces (Fish decodes as frames arrive): each goes out as it comes.
                async with aclosing(speak(spoken)) as audio:
                    async for piece in audio:
                        now = time.perf_counter()
                        pieces.put_nowait(Spoken(piece, chunk, now - started))
                        started = now
                        first_out.set()
            first_out.set()  # a chunk with nothing to say (or no audio) holds nothing up
    finally:
        # A failed voice too: the reader, let go, meets the TaskGroup's cancel inside the LLM's stream,
        # which then closes (its generation stops) instead of waiting to be collected.
        first_out.set()


def voice_speaker(
    tts: TTS,
    voice: VoiceReference | None,
    sample_rate: int,
    stall_s: float,
    speed: float = 1.0,
    *,
    numbers_in_words: bool = True,
) -> Speak:
    """Speech of a chunk of text with `tts`, piece by piece at `sample_rate`, `speed` times as fast (pitch
    kept), its numbers said in words unless asked not to (numbers.py) and Fish's markers removed where the
    voice does not render them; the voice runs in a thread, and one that yields nothing for `stall_s`
    seconds fails with backend_unavailable."""

    speaker: str | None = None  # a dialogue's speaker so far (<|speaker:N|>): a chunk cut in a turn carries it

    async def speak(text: str) -> AsyncGenerator[Audio, None]:
        nonlocal speaker
        if tts.renders_markers:
            text, speaker = carry_speaker(text, speaker)
        elif not is_speakable(text := without_markers(text)):
            return  # markers alone: nothing this voice would say
        if numbers_in_words:
            text = spell_out_numbers(text)
        pieces = iterate_in_thread(
            lambda stop: tts.stream(text, voice, stop), unread_s=stall_s, what=f"speech ({tts.name})"
        )
        # One stretch per chunk, fed its pieces as they come: seamless inside the chunk, nothing held over.
        stretch = TimeStretch(speed, sample_rate) if speed != 1.0 else None
        # Closed explicitly, so a cancelled reply stops the voice's thread at once, not when collected.
        async with aclosing(fail_on_stall(pieces, stall_s, f"the voice ({tts.name})")) as audio:
            async for piece in audio:
                resampled = await run_in_thread(resample, piece, sample_rate)
                out = resampled if stretch is None else await run_in_thread(stretch.feed, resampled)
                if out.samples.size:
                    yield out
        if stretch is not None and (rest := await run_in_thread(stretch.flush)).samples.size:
            yield rest

    return speak


async def speak_text(text: str, speak: Speak) -> AsyncGenerator[Spoken, None]:
    """The speech of a whole text, chunk by chunk as each is ready (what the TTS-only routes serve)."""

    async def words() -> AsyncGenerator[LLMItem, None]:
        yield text

    async with aclosing(speech_pipeline(words(), speak)) as pieces:
        async for piece in pieces:
            if isinstance(piece, Spoken):
                yield piece
