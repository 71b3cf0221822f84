"""Function calling in `/v1/chat/completions` through the official `openai` client: the embedded llama.cpp model
writes forced calls under their arguments' schema (plain and streamed), answers from a function's result, and
keeps a stored conversation's calls; an OpenAI-compatible LLM gets the tools as sent (llama-cpp-python's server);
bad tool fields are named."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.servers import server

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

KEY = "tools-key"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather now in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "description": "The time now", "parameters": {"type": "object", "properties": {}}},
}
ASK = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "What is the weather in Paris?"},
]
SHORT = {"model": "fishvoice", "max_tokens": 60, "temperature": 0.2}


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> Iterator[str]:
    with server(tmp_path_factory.mktemp("tools"), api_key=KEY) as base:
        yield base


@pytest.fixture
def client(url) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=300) as oai:
        yield oai


def weather_args(arguments: str) -> dict[str, Any]:
    args = json.loads(arguments)
    assert set(args) == {"city", "unit"} and args["unit"] in ("celsius", "fahrenheit") and isinstance(args["city"], str)
    return args


def test_a_named_call_is_a_tool_call_with_arguments_that_fit_the_schema(client):
    choice = {"type": "function", "function": {"name": "get_weather"}}
    done = client.chat.completions.create(messages=ASK, tools=[TIME, WEATHER], tool_choice=choice, **SHORT)
    choice0 = done.choices[0]
    assert choice0.finish_reason == "tool_calls" and choice0.message.content is None
    (call,) = choice0.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
    assert "paris" in weather_args(call.function.arguments)["city"].lower()


def test_a_required_call_is_one_of_the_functions_with_its_own_arguments(client):
    """A 135M model's choice between two functions is its own; the grammar keeps each call to its schema."""
    done = client.chat.completions.create(messages=ASK, tools=[TIME, WEATHER], tool_choice="required", **SHORT)
    (call,) = done.choices[0].message.tool_calls
    assert call.function.name in ("get_time", "get_weather")
    if call.function.name == "get_weather":
        weather_args(call.function.arguments)
    else:
        assert json.loads(call.function.arguments) == {}


def test_a_streamed_call_comes_in_tool_call_deltas(client):
    chunks = list(
        client.chat.completions.create(
            messages=ASK,
            tools=[WEATHER],
            tool_choice="required",
            stream=True,
            stream_options={"include_usage": True},
            **SHORT,
        )
    )
    deltas = [call for chunk in chunks if chunk.choices for call in chunk.choices[0].delta.tool_calls or []]
    assert deltas[0].id.startswith("call_") and deltas[0].function.name == "get_weather"
    weather_args("".join(d.function.arguments or "" for d in deltas))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def called(arguments: str = '{"city": "Paris", "unit": "celsius"}') -> list[dict[str, Any]]:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    return [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Heavy snow, minus 7 degrees celsius."},
    ]


def test_the_reply_to_a_functions_result_says_it(client):
    done = client.chat.completions.create(messages=called(), tools=[WEATHER], **SHORT)
    text = done.choices[0].message.content.lower()
    assert done.choices[0].finish_reason in ("stop", "length") and done.choices[0].message.tool_calls is None
    assert "snow" in text or "7" in text or "minus" in text, text


def test_a_stored_conversation_keeps_the_call_and_its_result_once_answered(client, url):
    extra = {"conversation_id": "tools-1"}
    first = client.chat.completions.create(
        messages=ASK, tools=[WEATHER], tool_choice="required", extra_body=extra, **SHORT
    )
    call = first.choices[0].message.tool_calls[0]
    result = {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 25 degrees."}
    sent = [*ASK, first.choices[0].message.model_dump(exclude_none=True), result]
    answer = client.chat.completions.create(messages=sent, tools=[WEATHER], extra_body=extra, **SHORT)
    assert answer.choices[0].message.content
    # a job in the same conversation reads (and shows) the stored exchange: the call waited for its answer
    job = httpx.post(
        f"{url}/runsync",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"input": {"message": "Thanks.", "conversation_id": "tools-1", "speak": False, "max_tokens": 8}},
        timeout=300,
    ).json()
    history = job["output"]["history"]
    assert [turn["role"] for turn in history] == ["user", "assistant", "tool", "assistant", "user", "assistant"]
    assert history[1]["tool_calls"][0]["id"] == call.id and history[2]["tool_call_id"] == call.id


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice.function.name",
        ),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"messages": [*ASK, {"role": "tool", "content": "x"}]}, "messages[2].tool_call_id"),
        (
            {"messages": [{"role": "user", "content": "hi", "tool_calls": called()[2]["tool_calls"]}]},
            "messages[0].tool_calls",
        ),
        ({"messages": [*ASK, {"role": "assistant", "content": "ok"}]}, "messages"),
        ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "c"}]}, "messages"),
    ],
)
def test_bad_tool_fields_are_named(client, params, param):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(**{"messages": ASK, **SHORT, **params})
    assert refused.value.body["param"] == param, refused.value.body


def test_tools_reach_an_openai_compatible_llm_as_sent(llama_server, tmp_path):
    """llama-cpp-python's server writes a named function's call itself: the call comes back through ours."""
    with (
        server(tmp_path, api_key=KEY, llm="openai", openai_base_url=llama_server) as base,
        openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=300) as oai,
    ):
        choice = {"type": "function", "function": {"name": "get_weather"}}
        done = oai.chat.completions.create(messages=ASK, tools=[WEATHER], tool_choice=choice, **SHORT)
        (call,) = done.choices[0].message.tool_calls
        assert call.function.name == "get_weather" and done.choices[0].finish_reason == "tool_calls"
        weather_args(call.function.arguments)
        answer = oai.chat.completions.create(messages=called(), tools=[WEATHER], **SHORT)
        assert answer.choices[0].message.content


def test_auto_lets_an_openai_compatible_llm_choose_the_call_then_answer_from_its_result(llama_tools_server, tmp_path):
    """A function-calling server (llama-cpp-python's chatml-function-calling) chooses the call itself with `auto`,
    out as the chat's tool_calls, then answers from its result; a greeting it answers in words. (That server
    cannot stream a chosen call: `openai_stream_tools` off asks for such replies whole.)"""
    settings = {"llm": "openai", "openai_base_url": llama_tools_server, "openai_stream_tools": "false"}
    with (
        server(tmp_path, api_key=KEY, **settings) as base,
        openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=300) as oai,
    ):
        done = oai.chat.completions.create(messages=ASK, tools=[WEATHER], tool_choice="auto", **SHORT)
        (call,) = done.choices[0].message.tool_calls
        assert call.function.name == "get_weather" and done.choices[0].finish_reason == "tool_calls"
        assert "paris" in json.loads(call.function.arguments)["city"].lower()
        result = {"role": "tool", "tool_call_id": call.id, "content": "Heavy snow, minus 7 degrees celsius."}
        sent = [*ASK, done.choices[0].message.model_dump(exclude_none=True), result]
        # (with `auto` again, the 135M model calls again: its own choice)
        chunks = oai.chat.completions.create(messages=sent, tools=[WEATHER], tool_choice="none", stream=True, **SHORT)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
        greeted = [{"role": "user", "content": "Hello, how are you?"}]
        plain = oai.chat.completions.create(messages=greeted, tools=[WEATHER], tool_choice="auto", **SHORT)
        assert plain.choices[0].message.tool_calls is None and plain.choices[0].finish_reason != "tool_calls"
