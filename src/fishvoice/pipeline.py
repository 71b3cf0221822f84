"""The speech pipeline: the LLM's words in, text and spoken pieces out, as soon as each is ready.

Two tasks run side by side in one TaskGroup: one reads the LLM and cuts its words into speakable
chunks (a sentence or clause, the first a short phrase: see text.SpeechChunker); the other speaks
each chunk as it comes, so the first words are heard while the LLM still writes. Only the first chunk
is spoken alone: the reading waits until its first audio is out, since on a shared CPU an LLM writing
on would slow the voice on the one piece the listener is waiting for (two to three times, with
llama.cpp and Piper on 2 cores), and the LLM is far ahead of the speech anyway. Pieces come out in
the order they are produced; if either task fails, the other is cancelled and the failure is raised
as itself. Asked for word timings, a chunk's words follow its audio: taken from the voice where it tells
them (Piper), else aligned in a thread beside the next chunk's speech (align/), so no audio waits for them.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass

import numpy as np

from . import metrics
from .align.reference import shared_reference_aligner
from .align.words import Span, TextWord, assign, caller_words
from .audio import Audio, TimeStretch, resample
from .contract import LLMItem, WordTiming
from .markers import carry_speaker, without_markers
from .numbers import spell_out_numbers
from .text import SpeechChunker, is_speakable, normalize_for_speech
from .threads import fail_on_stall, iterate_in_thread, run_in_thread
from .tts.base import TTS, TimesWords
from .voices import VoiceReference


@dataclass(frozen=True)
class Spoken:
    """A piece of speech: the audio, the chunk of the reply it speaks (and that chunk's number), and the
    voice's time on it."""

    audio: Audio
    text: str
    seconds: float
    chunk: int = 0


@dataclass(frozen=True)
class Words:
    """The timings of a spoken chunk's words, in seconds of the pipeline's audio (a reply's, a text's), with
    the chunk they are in: its number, text, and where its audio starts and how long it lasts."""

    words: tuple[WordTiming, ...]
    chunk: int
    text: str
    start: float
    duration: float


@dataclass(frozen=True)
class TimeWords:
    """The last thing a speaker yields for a chunk when asked for timings: a blocking call that gives its
    words' timings in seconds of the chunk's audio (at once for a voice that tells them; an alignment
    otherwise), run in a thread beside the next chunk's speech."""

    find: Callable[[], list[WordTiming]]


# What the pipeline yields: a text delta, the LLM's token counts (once, after its last delta), speech, words.
Piece = LLMItem | Spoken | Words
# A chunk's speech, as the chunk was written: its audio piece by piece, then (when asked) its words' timing.
Speak = Callable[[str], AsyncGenerator[Audio | TimeWords, None]]
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


@contextlib.asynccontextmanager
async def _first_failure() -> AsyncIterator[None]:
    """A TaskGroup's failure raised as itself (the first of its group)."""
    try:
        yield
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None


async def _run(words: AsyncGenerator[LLMItem, None], speak: Speak | None, pieces: asyncio.Queue[Piece | None]) -> None:
    try:
        async with _first_failure(), asyncio.TaskGroup() as group:
            chunks: asyncio.Queue[str | None] | None = None
            first_out = asyncio.Event()
            if speak is not None:
                chunks = asyncio.Queue()
                group.create_task(_speak_chunks(chunks, speak, pieces, first_out))
            group.create_task(_read_words(words, pieces, chunks, first_out))
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
    heard = 0.0  # seconds of audio out so far: where the next chunk's words are
    try:
        async with _first_failure(), asyncio.TaskGroup() as timing:
            number, timed = 0, None
            while (chunk := await chunks.get()) is not _END:
                if not is_speakable(normalize_for_speech(chunk)):
                    first_out.set()  # a chunk with nothing to say holds nothing up
                    continue
                started, at = time.perf_counter(), heard
                # A voice may yield a chunk in pieces (Fish decodes as frames arrive): each goes out as it comes.
                async with aclosing(speak(chunk)) as audio:
                    async for piece in audio:
                        if isinstance(piece, TimeWords):
                            said = Words((), number, chunk, at, heard - at)
                            timed = timing.create_task(_time_words(piece, said, pieces, after=timed))
                            continue
                        now = time.perf_counter()
                        pieces.put_nowait(Spoken(piece, chunk, now - started, number))
                        if heard == 0.0:  # the first audio of the whole reply
                            metrics.first_audio()
                        started, heard = now, heard + piece.duration_s
                        first_out.set()
                first_out.set()  # nor does one whose voice made no audio
                number += 1
    finally:
        # A failed voice too: the reader, let go, meets the TaskGroup's cancel inside the LLM's stream,
        # which then closes (its generation stops) instead of waiting to be collected.
        first_out.set()


async def _time_words(
    words: TimeWords, said: Words, pieces: asyncio.Queue[Piece | None], after: asyncio.Task[None] | None
) -> None:
    """A chunk's words, found in a thread, sent on in the pipeline's time (the chunk began at `said.start`)
    once the chunk before has sent its own: words come out in the order they are spoken."""
    started = time.perf_counter()
    timings = await run_in_thread(words.find)
    metrics.ALIGN_SECONDS.observe(time.perf_counter() - started)
    if after is not None:
        await after
    at = said.start
    shifted = tuple(WordTiming(w.word, round(w.start + at, 3), round(w.end + at, 3)) for w in timings)
    pieces.put_nowait(dataclasses.replace(said, words=shifted))


def voice_speaker(
    tts: TTS,
    voice: VoiceReference | None,
    sample_rate: int,
    stall_s: float,
    speed: float = 1.0,
    *,
    numbers_in_words: bool = True,
    word_timings: bool = False,
) -> Speak:
    """Speech of a chunk of text with `tts`, piece by piece at `sample_rate`, `speed` times as fast (pitch
    kept), cleaned for speaking (text.normalize_for_speech), its numbers said in words unless asked not to
    (numbers.py) and Fish's markers removed where the voice does not render them; with `word_timings`, the
    chunk's words' timing last. The voice runs in a thread, and one that yields nothing for `stall_s`
    seconds fails with backend_unavailable."""

    speaker: str | None = None  # a dialogue's speaker so far (<|speaker:N|>): a chunk cut in a turn carries it

    async def speak(written: str) -> AsyncGenerator[Audio | TimeWords, None]:
        nonlocal speaker
        if not is_speakable(text := normalize_for_speech(written)):
            return
        if tts.renders_markers:
            text, speaker = carry_speaker(text, speaker)
        elif not is_speakable(text := without_markers(text)):
            return  # markers alone: nothing this voice would say
        if numbers_in_words:
            text = spell_out_numbers(text)
        timed = word_timings and isinstance(tts, TimesWords)
        pieces = iterate_in_thread(
            lambda stop: _voice_pieces(tts, text, voice, stop, timed), unread_s=stall_s, what=f"speech ({tts.name})"
        )
        # One stretch per chunk, fed its pieces as they come: seamless inside the chunk, nothing held over.
        stretch = TimeStretch(speed, sample_rate) if speed != 1.0 else None
        spans: list[Span] = []  # the words the voice located, in seconds of the chunk
        said: list[Audio] = []  # the chunk's audio, aligned where the voice locates no words
        at, started = 0.0, time.perf_counter()
        # Closed explicitly, so a cancelled reply stops the voice's thread at once, not when collected.
        async with aclosing(fail_on_stall(pieces, stall_s, f"the voice ({tts.name})")) as audio:
            async for piece, located in audio:
                spans += [Span(at + s.start, at + s.end, s.weight) for s in located or ()]
                at += piece.duration_s
                resampled = await run_in_thread(resample, piece, sample_rate)
                if word_timings:
                    said.append(resampled)
                out = resampled if stretch is None else await run_in_thread(stretch.feed, resampled)
                if out.samples.size:
                    yield out
        if stretch is not None and (rest := await run_in_thread(stretch.flush)).samples.size:
            yield rest
        metrics.spoke(tts.name, at, time.perf_counter() - started)
        if word_timings:
            words = caller_words(written, numbers_in_words=numbers_in_words)
            yield TimeWords(functools.partial(_timings, words, spans, said, without_markers(text), speed))

    return speak


def _timings(words: list[TextWord], spans: list[Span], said: list[Audio], text: str, speed: float) -> list[WordTiming]:
    """The chunk's words timed by the spans its voice located, else by those found in its audio (`said`, of
    `text`); in seconds of the chunk as heard, after `speed`."""
    if not spans and said:
        audio = Audio(np.concatenate([piece.samples for piece in said]), said[0].sample_rate)
        spans = shared_reference_aligner().spans(audio, text)
    return assign(words, spans, scale=1 / speed)


def _voice_pieces(
    tts: TTS, text: str, voice: VoiceReference | None, stop: threading.Event, timed: bool
) -> Iterator[tuple[Audio, list[Span] | None]]:
    """The voice's pieces of `text`, each with its words' spans where asked and the voice tells them."""
    if timed:
        assert isinstance(tts, TimesWords)
        yield from tts.stream_timed(text, voice, stop)
    else:
        for piece in tts.stream(text, voice, stop):
            yield piece, None


async def speak_text(text: str, speak: Speak) -> AsyncGenerator[Spoken | Words, None]:
    """The speech of a whole text, chunk by chunk as each is ready (what the TTS-only routes serve), and its
    words' timings where the speaker gives them."""

    async def words() -> AsyncGenerator[LLMItem, None]:
        yield text

    async with aclosing(speech_pipeline(words(), speak)) as pieces:
        async for piece in pieces:
            if isinstance(piece, Spoken | Words):
                yield piece
