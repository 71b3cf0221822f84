"""OpenAI's Agents SDK with its defaults, pointed at `fishvoice serve`: for JavaScript (@openai/agents-realtime,
through node) a RealtimeSession over OpenAIRealtimeWebSocket, which asks for semantic_vad, its own transcription
model and formats (a typed question and a spoken one are answered in speech); for Python (openai-agents) a
RealtimeRunner's session."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.realtime_client import heard_as_asked, silence
from tests.servers import server

pytestmark = pytest.mark.model  # starts a server that loads the models

SDK = ROOT / "tests" / "agents_js"
KEY = "agents-sdk-key"


@pytest.fixture(scope="module")
def sdk() -> Path:
    """The SDK as package-lock.json pins it, installed once (npm's registry)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are needed (Debian: apt-get install nodejs npm; .ci/run installs them)"
    if not (SDK / "node_modules" / "@openai" / "agents-realtime").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=SDK, check=True, capture_output=True, timeout=600)
    return SDK / "agent.mjs"


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> Iterator[str]:
    with server(tmp_path_factory.mktemp("agents-sdk"), api_key=KEY) as base:
        yield base


def assert_spoken(transcript: str | None, pcm16_bytes: int) -> None:
    """A reply was said: its words, and pcm16 at 24 kHz as long as they take to say (0.1 to 1.2 s a word)."""
    words = len((transcript or "").split())
    assert words > 0, transcript
    assert 0.1 * words <= pcm16_bytes / (2 * 24000) <= 1.2 * words + 1.0, (transcript, pcm16_bytes)


def run_agent(script: Path, url: str, *args: str) -> dict:
    done = subprocess.run(
        ["node", str(script), url, *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "FISHVOICE_KEY": KEY},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_agents_sdk_with_its_defaults_gets_a_spoken_answer_to_a_typed_question(sdk, url):
    seen = run_agent(sdk, url)
    assert seen["errors"] == [] and "error" not in seen["events"], seen
    assert_spoken(seen["text"], seen["audioBytes"])
    assert [item["role"] for item in seen["history"]] == ["user", "assistant"]
    assert "session.updated" in seen["events"]  # its default session (semantic_vad, ...) was taken


def test_the_agents_sdk_calls_its_tool_and_speaks_the_answer_from_its_result(sdk, url):
    seen = run_agent(sdk, url, "--weather")
    assert seen["errors"] == [] and "error" not in seen["events"], seen
    assert [city.lower() for city in seen["toolCalls"]] == ["paris"], seen
    assert "response.function_call_arguments.done" in seen["events"]
    assert [item["role"] for item in seen["history"]] == ["user", "function_call", "assistant"], seen["history"]
    assert "snow" in seen["history"][1]["output"].lower()
    assert_spoken(seen["text"], seen["audioBytes"])
    assert not seen["text"].lstrip().startswith("{"), seen["text"]  # words, not another call (the 135M model's own)


def test_the_agents_sdk_hears_a_spoken_question_through_its_default_semantic_vad(sdk, url, question, tmp_path):
    speech = tmp_path / "question.pcm"
    speech.write_bytes(silence(0.3) + question + silence(2.5))
    seen = run_agent(sdk, url, str(speech))
    assert seen["errors"] == [], seen
    assert "input_audio_buffer.speech_stopped" in seen["events"], seen
    said = seen["history"][0]["content"][0]
    assert heard_as_asked(said.get("transcript") or ""), said
    assert_spoken(seen["text"], seen["audioBytes"])


def test_the_python_agents_sdk_with_its_defaults_gets_a_spoken_answer(url):
    """openai-agents' RealtimeRunner, as it opens a session by default (its voice `ash`, one of OpenAI's presets,
    spoken in the default voice)."""
    from agents.realtime import RealtimeAgent, RealtimeRunner

    agent = RealtimeAgent(name="Assistant", instructions="Answer in one short sentence.")
    runner = RealtimeRunner(agent)
    audio, errors, history = asyncio.run(ask_python_agent(url, runner, "What is the capital of France?"))
    said = history[-1]
    assert errors == [] and said.role == "assistant", (errors, said)
    assert_spoken(said.content[0].transcript, audio)


def test_the_python_agents_sdk_calls_its_tool_and_speaks_the_answer(url):
    """openai-agents' RealtimeRunner with a function tool it must call (`tool_choice: required` in its model
    settings): the SDK runs the tool, sends its output, and the answer from it is spoken."""
    from agents import function_tool
    from agents.realtime import RealtimeAgent, RealtimeRunner

    cities: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather now in a city."""
        cities.append(city)
        return f"Heavy snow in {city}, minus seven degrees."

    agent = RealtimeAgent(name="Assistant", instructions="Answer in one short sentence.", tools=[get_weather])
    runner = RealtimeRunner(agent, config={"model_settings": {"tool_choice": "required"}})
    asked = ask_python_agent(url, runner, "What is the weather in Paris?", spoken=lambda: bool(cities))
    audio, errors, history = asyncio.run(asked)
    assert errors == [] and [city.lower() for city in cities] == ["paris"], (errors, cities)
    kinds = [getattr(item, "role", None) or item.type for item in history]
    assert kinds == ["user", "function_call", "assistant"], history
    assert "snow" in history[1].output.lower()
    assert_spoken(history[-1].content[0].transcript, audio)


async def ask_python_agent(
    url: str, runner: Any, message: str, spoken: Callable[[], bool] = lambda: True
) -> tuple[int, list[str], list[Any]]:
    """Sends a typed message through openai-agents' session and reads its events until the agent ends a turn
    that `spoken` accepts (a tool's turn ends before its answer's): audio bytes heard, errors, the history."""
    config = {"url": url.replace("http", "ws", 1) + "/v1/realtime", "api_key": KEY}
    audio, errors = 0, []
    async with asyncio.timeout(180), await runner.run(model_config=config) as session:
        await session.send_message(message)
        async for event in session:
            if event.type == "audio":
                audio += len(event.audio.data)
            elif event.type == "error":
                errors.append(str(event.error))
            elif event.type == "agent_end" and audio and spoken():
                break
        return audio, errors, list(session._history)
