"""The embedded LLM (llama.cpp) shared by streams: a paused reply lends the model to another and resumes
exactly where it was, a reply whose caller left while it waited never starts, and a model held without
progress past the stall limit is rebuilt for the next reply."""

from __future__ import annotations

import asyncio
import threading

import pytest

from fishvoice.contract import ChatMessage, Usage
from fishvoice.llm.llama_cpp import LlamaCppLLM, _Text

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

STORY: list[ChatMessage] = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "Tell me a short story about a cat."},
]
CAPITAL: list[ChatMessage] = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "What is the capital of France?"},
]


async def whole(llm: LlamaCppLLM, messages: list[ChatMessage]) -> list[str | Usage]:
    return [item async for item in llm.stream(messages, temperature=0.0, max_tokens=40)]


async def test_a_paused_reply_lends_the_model_and_resumes_where_it_was(llm):
    story, capital = await whole(llm, STORY), await whole(llm, CAPITAL)
    paused = llm.stream(STORY, temperature=0.0, max_tokens=40)
    begun = [await anext(paused) for _ in range(3)]
    await asyncio.sleep(0.2)
    assert llm.model.report()["held_by"] is None  # its reader waits, so the model is free
    assert await asyncio.wait_for(whole(llm, CAPITAL), 30) == capital  # another reply, whole, meanwhile
    resumed = begun + [item async for item in paused]
    assert resumed == story  # the same greedy reply as alone: what the other displaced was evaluated again


async def test_a_reply_whose_caller_left_while_it_waited_never_starts(llm):
    waiting_for, release = threading.Event(), threading.Event()

    def occupy() -> None:
        llm.model.take(None, "the test")
        waiting_for.set()
        release.wait(10)
        llm.model.give_back()

    threading.Thread(target=occupy).start()
    waiting_for.wait(5)
    handovers, evaluated = llm.model.handovers, llm.model.resource.n_tokens
    reply = llm.stream(STORY, temperature=0.5, max_tokens=40)
    reading = asyncio.create_task(anext(reply))
    while llm.model.report()["waiting"] == 0:
        await asyncio.sleep(0.01)
    reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)
    while llm.model.report()["waiting"]:
        await asyncio.sleep(0.01)
    release.set()
    await asyncio.sleep(0.2)
    assert llm.model.handovers == handovers  # the reply never took it after the test's thread
    assert llm.model.resource.n_tokens == evaluated  # no prefill
    assert len(await whole(llm, CAPITAL)) > 1


async def test_a_model_held_past_the_stall_limit_is_rebuilt_for_the_next_reply(caplog):
    llm = LlamaCppLLM(stall_s=0.5)
    held, release = threading.Event(), threading.Event()

    def hang() -> None:  # a holder that never moves (as a native call that does not return would)
        llm.model.take(None, "a stuck reply")
        held.set()
        release.wait(30)

    threading.Thread(target=hang, daemon=True).start()
    held.wait(5)
    reply = await asyncio.wait_for(whole(llm, CAPITAL), 30)
    assert isinstance(reply[-1], Usage) and reply[-1].completion_tokens > 0
    assert llm.progress()["rebuilds"] == 1 and "a stuck reply" in caplog.text
    release.set()
    await llm.close()


def test_reply_text_keeps_whole_characters_and_ends_at_a_stop_string():
    text = _Text(["<|im_end|>"])
    said = [
        text.feed(b"Caf"),
        text.feed("é".encode()[:1]),
        text.feed("é".encode()[1:] + b" <|im"),
        text.feed(b"_end|>x"),
    ]
    assert said == ["Caf", "", "é ", ""] and text.stopped and text.flush() == ""
    plain = _Text(["<|im_end|>"])
    assert plain.feed(b"a <b") + plain.flush() == "a <b"  # a held-back '<' that began no stop string
