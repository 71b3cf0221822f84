"""Function calling in a realtime session through the official `openai` client: a forced call comes out as a
`function_call` item with its arguments streamed, the client's `function_call_output` is added, and
`response.create` goes on to a spoken answer from it; the exchange, calls and result included, is stored."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.realtime_client import (
    KEY,
    TALKATIVE,
    session,
    silence,
    speak,
    stored_history,
    transcript_of,
    until,
    vad_session,
    words,
)
from tests.servers import server

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather now in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ASKED = "What is the weather in Paris?"
RESULT = "Heavy snow, minus seven degrees."


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> Iterator[str]:
    with server(tmp_path_factory.mktemp("realtime-tools"), api_key=KEY) as base:
        yield base


def said(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


async def call_and_answer(url: str) -> tuple[list[Any], list[Any]]:
    async with session(url, conversation_id="weather") as connection:
        await connection.session.update(
            session={
                "type": "realtime",
                "instructions": "You answer in one short sentence.",
                "temperature": 0.2,
                "tools": [WEATHER],
                "tool_choice": "required",
            }
        )
        updated = await until(connection, "session.updated", [])
        assert updated.session.tools[0].name == "get_weather" and updated.session.tool_choice == "required"
        await connection.conversation.item.create(item=said(ASKED))
        calling: list[Any] = []
        await connection.response.create()
        done = await until(connection, "response.done", calling)
        call = next(item for item in done.response.output if item.type == "function_call")
        await connection.conversation.item.create(
            item={"type": "function_call_output", "call_id": call.call_id, "output": RESULT}
        )
        answering: list[Any] = []
        await connection.response.create()
        await until(connection, "response.done", answering)
        await connection.conversation.item.delete(item_id=call.id)  # a call goes with its reply
        answering.append(await until(connection, "error", []))
        await connection.conversation.item.retrieve(item_id=call.id)
        answering.append(await until(connection, "conversation.item.retrieved", []))
        return calling, answering


def test_a_forced_call_is_a_function_call_item_and_its_result_is_answered_aloud(url):
    calling, answering = asyncio.run(call_and_answer(url))
    kinds = [e.type for e in calling]
    added = next(e for e in calling if e.type == "response.output_item.added" and e.item.type == "function_call")
    deltas = [e.delta for e in calling if e.type == "response.function_call_arguments.delta"]
    (done,) = [e for e in calling if e.type == "response.function_call_arguments.done"]
    assert added.item.name == done.name == "get_weather" and added.output_index == done.output_index == 0
    assert "".join(deltas) == done.arguments and "paris" in json.loads(done.arguments)["city"].lower()
    assert kinds.index("response.function_call_arguments.delta") < kinds.index("response.function_call_arguments.done")
    assert "response.output_audio.delta" not in kinds  # a call, not a spoken reply: no message item
    assert [e.item.type for e in calling if e.type == "response.output_item.added"] == ["function_call"]
    (called,) = calling[-1].response.output
    assert called.call_id == done.call_id and called.arguments == done.arguments and called.status == "completed"

    reply = answering[-3].response
    assert answering[-2].error.param == "item_id"
    assert reply.status == "completed" and not [i for i in reply.output if i.type == "function_call"]
    spoken = transcript_of(answering, reply.id).lower()
    assert "snow" in spoken or "seven" in spoken or "7" in spoken, spoken
    audio = b"".join(base64.b64decode(e.delta) for e in answering if e.type == "response.output_audio.delta")
    assert len(audio) > 24000  # over half a second of speech
    assert answering[-1].item.type == "function_call" and answering[-1].item.call_id == called.call_id

    history = stored_history(url, "weather")
    assert [turn["role"] for turn in history[:4]] == ["user", "assistant", "tool", "assistant"]
    assert history[1]["tool_calls"][0]["id"] == called.call_id and history[2]["content"] == RESULT


async def refusals(url: str) -> list[Any]:
    async with session(url) as connection:
        seen: list[Any] = []
        bad_sessions = [
            {"tools": [{"type": "function", "name": "bad name!"}]},
            {"tools": [{"type": "mcp", "server_label": "x"}]},
            {"tools": [WEATHER, WEATHER]},
            {"tool_choice": {"type": "function", "name": "nope"}},
            {"tool_choice": "required"},
        ]
        for bad in bad_sessions:
            await connection.session.update(session={"type": "realtime", **bad})
            seen.append(await until(connection, "error", []))
        await connection.conversation.item.create(
            item={"type": "function_call_output", "call_id": "call_x", "output": "1"}
        )
        seen.append(await until(connection, "error", []))
        await connection.response.create(
            response={"tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}
        )
        seen.append(await until(connection, "error", []))
        await connection.session.update(session={"type": "realtime", "tools": [WEATHER]})
        seen.append(await until(connection, "session.updated", []))  # the session goes on
        return seen


def test_bad_tools_are_refused_by_field_and_the_session_goes_on(url):
    *errors, updated = asyncio.run(refusals(url))
    assert [e.error.param for e in errors] == [
        "session.tools[0].name",
        "session.tools[0].type",
        "tools",
        "tool_choice.name",
        "tool_choice",
        "item.call_id",
        "tool_choice.name",
    ]
    assert updated.session.tool_choice == "auto" and updated.session.tools[0].name == "get_weather"


async def cancel_a_call(url: str) -> list[Any]:
    async with session(url) as connection:
        await connection.session.update(session={"type": "realtime", "tools": [WEATHER], "tool_choice": "required"})
        await until(connection, "session.updated", [])
        await connection.conversation.item.create(item=said(ASKED))
        seen: list[Any] = []
        await connection.response.create()
        await until(connection, "response.created", seen)
        await connection.response.cancel()  # before its call is written (a forced call comes whole)
        await until(connection, "response.done", seen)
        await connection.response.create(response={"tool_choice": "none", "output_modalities": ["text"]})
        await until(connection, "response.done", seen)  # the question is still there to answer
        return seen


def test_a_call_cancelled_is_not_made_and_its_question_stays_to_answer(url):
    seen = asyncio.run(cancel_a_call(url))
    cancelled, answered = [e.response for e in seen if e.type == "response.done"]
    assert cancelled.status == "cancelled" and not [i for i in cancelled.output if i.type == "function_call"]
    assert "response.function_call_arguments.done" not in [e.type for e in seen]
    assert answered.status == "completed" and answered.output[0].content[0].text


async def barge_into_an_answer(url: str, interruption: bytes) -> tuple[list[Any], str]:
    """A call's result answered aloud, and the caller speaks over the answer 400 ms into it."""
    async with session(url, conversation_id="weather-barge-in") as connection:
        await vad_session(connection, TALKATIVE)
        await connection.conversation.item.create(item=said(ASKED))
        seen: list[Any] = []
        await connection.response.create(response={"tools": [WEATHER], "tool_choice": "required"})
        calling = await until(connection, "response.done", seen)
        (call,) = calling.response.output
        output = {"type": "function_call_output", "call_id": call.call_id, "output": RESULT}
        await connection.conversation.item.create(item=output)
        await connection.response.create()
        first_audio = await until(connection, "response.output_audio.delta", seen)
        await speak(connection, interruption)
        await until(connection, "input_audio_buffer.speech_started", seen)
        await connection.conversation.item.truncate(item_id=first_audio.item_id, content_index=0, audio_end_ms=400)
        await speak(connection, silence(1.0))
        answered = {calling.response.id, first_audio.response_id}
        while not [e for e in seen if e.type == "response.done" and e.response.id not in answered]:
            await until(connection, "response.done", seen)
        return seen, first_audio.response_id


def test_speaking_over_the_answer_to_a_call_keeps_the_call_its_result_and_what_was_heard(url, interruption):
    seen, interrupted = asyncio.run(barge_into_an_answer(url, interruption))
    done = next(e.response for e in seen if e.type == "response.done" and e.response.id == interrupted)
    assert done.status in ("cancelled", "completed")  # cancelled, or sent whole and still playing
    assert seen[-1].response.status == "completed"
    full = words(transcript_of(seen, interrupted))
    history = stored_history(url, "weather-barge-in")
    roles = [turn["role"] for turn in history]
    assert roles[:6] == ["user", "assistant", "tool", "assistant", "user", "assistant"], history
    assert history[1]["tool_calls"][0]["function"]["name"] == "get_weather" and history[2]["content"] == RESULT
    kept = words(history[3]["content"])  # the answer's first 400 ms, as heard
    assert 1 <= len(kept) <= 3 and kept == full[: len(kept)] and len(kept) < len(full), (kept, full)
    assert "dogs" in words(history[4]["content"])
