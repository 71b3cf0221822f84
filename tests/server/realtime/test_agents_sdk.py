"""OpenAI's Agents SDK for JavaScript (@openai/agents-realtime, through node) with its defaults, pointed at
`fishvoice serve`: a RealtimeSession over OpenAIRealtimeWebSocket, which asks for semantic_vad, its own
transcription model and formats; a typed question and a spoken one are answered in speech."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

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
    assert seen["text"] and "paris" in seen["text"].lower(), seen
    assert seen["audioBytes"] > 24000 * 2 * 0.5  # half a second of pcm16 at least
    assert [item["role"] for item in seen["history"]] == ["user", "assistant"]
    assert "session.updated" in seen["events"]  # its default session (semantic_vad, ...) was taken


def test_the_agents_sdk_hears_a_spoken_question_through_its_default_semantic_vad(sdk, url, question, tmp_path):
    speech = tmp_path / "question.pcm"
    speech.write_bytes(silence(0.3) + question + silence(2.5))
    seen = run_agent(sdk, url, str(speech))
    assert seen["errors"] == [], seen
    assert "input_audio_buffer.speech_stopped" in seen["events"] and seen["text"], seen
    said = seen["history"][0]["content"][0]
    assert heard_as_asked(said.get("transcript") or ""), said
    assert seen["audioBytes"] > 0
