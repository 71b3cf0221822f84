"""The speech pipeline and context fitting, alone: ordering, overlap, pacing, failure and early close."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from fishvoice.audio import Audio
from fishvoice.context import CONTEXT_MARGIN, fit_context
from fishvoice.contract import ChatMessage, ToolCall, Usage
from fishvoice.errors import FishvoiceError
from fishvoice.pipeline import Spoken, speech_pipeline
from fishvoice.threads import iterate_in_thread


def tone(text: str) -> Audio:
    return Audio(np.full(len(text), 0.1, np.float32), 16000)


async def collect(pieces: AsyncIterator[object]) -> list[object]:
    return [piece async for piece in pieces]


async def test_each_sentence_is_spoken_while_the_words_still_come():
    first_spoken = asyncio.Event()

    async def words() -> AsyncIterator[str | Usage]:
        yield "Hello there. "
        await asyncio.wait_for(first_spoken.wait(), 5)  # the first sentence is heard before the LLM goes on
        yield "How are you? Fine"
        yield Usage(3, 4)

    async def speak(text: str) -> AsyncIterator[Audio]:
        yield tone(text)
        first_spoken.set()

    pieces = await collect(speech_pipeline(words(), speak))
    spoken = [p for p in pieces if isinstance(p, Spoken)]
    assert [s.text for s in spoken] == ["Hello there.", "How are you?", "Fine"]
    assert pieces.index(spoken[0]) < pieces.index("How are you? Fine")
    assert [p for p in pieces if isinstance(p, str)] == ["Hello there. ", "How are you? Fine"]
    assert pieces.count(Usage(3, 4)) == 1 and all(s.seconds >= 0 for s in spoken)


async def test_the_first_words_are_spoken_before_the_first_sentence_ends():
    first_spoken = asyncio.Event()

    async def words() -> AsyncIterator[str | Usage]:
        for word in ("The", " night", " sky", " was", " ablaze", " with", " hues"):
            yield word
        await asyncio.wait_for(first_spoken.wait(), 5)  # heard while the sentence is still being written
        yield " of crimson and gold. It was late."

    async def speak(text: str) -> AsyncIterator[Audio]:
        yield tone(text)
        first_spoken.set()

    pieces = await collect(speech_pipeline(words(), speak))
    assert [p.text for p in pieces if isinstance(p, Spoken)] == [
        "The night sky was ablaze",
        "with hues of crimson and gold.",
        "It was late.",
    ]


async def test_the_llm_is_not_read_while_the_first_chunk_is_spoken():
    read: list[str] = []
    voice_busy, voice_go = asyncio.Event(), asyncio.Event()

    async def words() -> AsyncIterator[str | Usage]:
        for word in ("One", " day,", " a", " cat", " sat", " down. ", "Then it left."):
            read.append(word)
            yield word

    async def speak(text: str) -> AsyncIterator[Audio]:
        if not voice_busy.is_set():  # the first chunk takes a while to speak
            voice_busy.set()
            await voice_go.wait()
        yield tone(text)

    reply = asyncio.create_task(collect(speech_pipeline(words(), speak)))
    await asyncio.wait_for(voice_busy.wait(), 5)
    await asyncio.sleep(0.1)
    assert read == ["One", " day,", " a"]  # " a" showed the comma ended a clause; nothing more was asked for
    voice_go.set()
    pieces = await asyncio.wait_for(reply, 5)
    assert [p.text for p in pieces if isinstance(p, Spoken)] == ["One day,", "a cat sat down.", "Then it left."]
    assert len(read) == 7


async def test_a_first_chunk_with_nothing_to_say_holds_nothing_up():
    async def words() -> AsyncIterator[str | Usage]:
        yield "... ** "
        yield "Then words."

    async def speak(text: str) -> AsyncIterator[Audio]:
        yield tone(text)

    pieces = await asyncio.wait_for(collect(speech_pipeline(words(), speak)), 5)
    assert [p.text for p in pieces if isinstance(p, Spoken)] == ["** Then words."]  # "..." was said by nothing


async def test_a_thread_runs_at_most_ahead_items_past_its_reader():
    made: list[int] = []

    def count(stop: threading.Event) -> Iterator[int]:
        for n in range(100):
            made.append(n)
            yield n

    items = iterate_in_thread(count, ahead=3)
    assert await anext(items) == 0
    await asyncio.sleep(0.2)  # the reader pauses: the thread makes 3 items past the one taken, then waits
    assert made == [0, 1, 2, 3]
    assert [await anext(items) for _ in range(3)] == [1, 2, 3]
    await items.aclose()
    await asyncio.sleep(0.1)
    assert len(made) <= 7  # it ended on the close instead of running on to 100
    unbounded = [n async for n in iterate_in_thread(count)]
    assert unbounded == list(range(100))


async def test_without_a_voice_only_the_words_come_out():
    async def words() -> AsyncIterator[str | Usage]:
        yield "One. Two."
        yield Usage(1, 2)

    assert await collect(speech_pipeline(words(), None)) == ["One. Two.", Usage(1, 2)]


async def test_a_failing_voice_raises_its_own_error_and_stops_the_llm():
    stopped = asyncio.Event()

    async def words() -> AsyncIterator[str | Usage]:
        try:
            yield "First. "
            await asyncio.sleep(30)
            yield "never"
        finally:
            stopped.set()

    async def speak(text: str) -> AsyncIterator[Audio]:
        raise FishvoiceError("backend_unavailable", "the voice failed")
        yield tone(text)  # an async generator that fails at once

    with pytest.raises(FishvoiceError, match="the voice failed"):
        await asyncio.wait_for(collect(speech_pipeline(words(), speak)), 5)
    assert stopped.is_set()


async def test_closing_early_stops_the_llm_and_the_voice():
    llm_stopped, voice_stopped = asyncio.Event(), asyncio.Event()

    async def words() -> AsyncIterator[str | Usage]:
        try:
            for n in range(1000):
                yield f"Sentence {n}. "
                await asyncio.sleep(0.01)
        finally:
            llm_stopped.set()

    async def speak(text: str) -> AsyncIterator[Audio]:
        try:
            await asyncio.sleep(0.05)
            yield tone(text)
        finally:
            voice_stopped.set()

    pieces = speech_pipeline(words(), speak)
    async for piece in pieces:
        if isinstance(piece, Spoken):
            break
    await pieces.aclose()
    assert llm_stopped.is_set() and voice_stopped.is_set()


def words_in(messages: list[ChatMessage]) -> int:
    return sum(len(m["content"].split()) + 2 for m in messages)  # a stand-in tokenizer: words plus a role mark


TURNS: list[ChatMessage] = [
    {"role": "user", "content": "one two three"},
    {"role": "assistant", "content": "four five"},
    {"role": "user", "content": "six seven eight nine"},
    {"role": "assistant", "content": "ten"},
]


HI: list[ChatMessage] = [{"role": "user", "content": "hi there"}]


def test_context_keeps_whole_recent_exchanges_that_fit():
    whole = fit_context("sys", TURNS, HI, 10, count_tokens=words_in, context_window=100)
    assert whole.messages[1:-1] == TURNS and whole.max_tokens == 10 and whole.warning is None
    # system 3 + message 4 + the 2 exchanges 18 + max_tokens 10 = 35 do not fit in 34: older turns are
    # dropped a step of TRIM_EXCHANGES at a time from the start, here all of them
    trimmed = fit_context("sys", TURNS, HI, 10, count_tokens=words_in, context_window=34 + CONTEXT_MARGIN)
    system, message = {"role": "system", "content": "sys"}, {"role": "user", "content": "hi there"}
    assert trimmed.messages == [system, message]


def test_context_drops_old_turns_in_steps_so_its_start_holds_for_several_replies():
    exchange: list[ChatMessage] = [{"role": "user", "content": "a b c"}, {"role": "assistant", "content": "d e"}]
    fitted = [
        fit_context("sys", exchange * n, HI, 10, count_tokens=words_in, context_window=110 + CONTEXT_MARGIN)
        for n in range(6, 20)
    ]
    # Each exchange is 9 tokens; 3 + 4 + 10 leave room for 10 of them. The first kept turn moves only in
    # steps of TRIM_EXCHANGES exchanges from the conversation's start, so it stays put from one reply to
    # the next (the prompt's beginning is the LLM's cached prefix), and the newest exchange is always kept.
    dropped = [(n + 6) - (len(f.messages) - 2) // 2 for n, f in enumerate(fitted)]
    assert dropped == [0, 0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12]
    assert all(f.messages[-2] == exchange[1] for f in fitted)


def test_context_trims_by_exchanges_with_their_function_calls_and_ends_with_the_one_answered():
    call: ToolCall = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    called: list[ChatMessage] = [
        {"role": "user", "content": "a b c"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "d", "tool_call_id": "c"},
        {"role": "assistant", "content": "e"},
    ]
    tail: list[ChatMessage] = [*HI, {"role": "assistant", "content": "", "tool_calls": [call]}]
    fitted = fit_context("sys", called * 9, tail, 10, count_tokens=words_in, context_window=100 + CONTEXT_MARGIN)
    # 4 exchanges of 4 messages are dropped (a step), never a call without its exchange
    assert fitted.messages[1:-2] == called * 5 and fitted.messages[-2:] == tail


def test_calls_no_result_answered_are_left_out_of_the_context():
    def call(call_id: str) -> ToolCall:
        return {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}

    turns: list[ChatMessage] = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "", "tool_calls": [call("x")]},  # the caller talked on instead
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "let me see", "tool_calls": [call("y"), call("z")]},
        {"role": "tool", "content": "y's", "tool_call_id": "y"},
        {"role": "assistant", "content": "done"},
    ]
    fitted = fit_context("sys", turns, HI, 10, count_tokens=words_in, context_window=1000)
    assert fitted.messages[1:-1] == [
        turns[0],
        turns[2],
        {"role": "assistant", "content": "let me see", "tool_calls": [call("y")]},
        *turns[4:],
    ]


def test_context_lowers_max_tokens_and_refuses_a_message_too_long():
    lowered = fit_context("sys", TURNS, HI, 500, count_tokens=words_in, context_window=20 + CONTEXT_MARGIN)
    assert lowered.max_tokens == 13 and lowered.messages[1:-1] == []
    assert lowered.warning == "max_tokens lowered to 13 to fit the model's context"
    with pytest.raises(FishvoiceError) as refused:
        fit_context("sys", [], [{"role": "user", "content": "word " * 50}], 5, count_tokens=words_in, context_window=40)
    assert refused.value.field == "message" and refused.value.code == "invalid_input"
