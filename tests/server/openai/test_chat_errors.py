"""The transcription and chat routes in process with the embedded Whisper: bad requests named by their
parameter, silent `input_audio` refused, and a reply that fails midway (a fault injected into the real LLM)
ending its stream with an error and storing nothing. What the routes hear is tested in test_openai_chat.py."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import numpy as np
import openai
import pytest
import soundfile
from fastapi.testclient import TestClient

from fishvoice.asr.base import ASR
from fishvoice.assistant import Assistant
from fishvoice.config import Settings
from fishvoice.errors import FishvoiceError
from fishvoice.factory import build_asr
from fishvoice.server.app import create_app
from fishvoice.server.http.auth import key_namespace

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

KEY = "asr-key"


def whisper() -> ASR:
    asr = build_asr(Settings())
    assert asr is not None, "the embedded Whisper backend is on by default"
    return asr


def wav(seconds: float, loud: bool = True) -> bytes:
    rate = 16000
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * 220 * t) if loud else np.zeros_like(t)).astype(np.float32)
    out = io.BytesIO()
    soundfile.write(out, samples, rate, format="WAV")
    return out.getvalue()


@pytest.fixture
def client(assistant) -> Iterator[openai.OpenAI]:
    app = create_app(assistant, Settings(api_key=KEY), asr=whisper())
    with TestClient(app) as http:
        http.headers["Authorization"] = f"Bearer {KEY}"
        yield openai.OpenAI(base_url="http://testserver/v1", api_key=KEY, http_client=http, max_retries=0)


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"model": "tts-2"}, "model"),
        ({"response_format": "xml"}, "response_format"),
        ({"language": "English"}, "language"),
        ({"timestamp_granularities": ["word"], "response_format": "verbose_json"}, "timestamp_granularities[]"),
        ({"stream": True, "response_format": "srt"}, "stream"),
        ({"file": ("a.wav", b"not audio at all")}, "file"),
        ({"file": ("a.wav", wav(61))}, "file"),
        ({"extra_body": {"beam_size": "5"}}, "beam_size"),
    ],
)
def test_bad_transcription_requests_name_their_parameter(client, params, param):
    body = {"file": ("a.wav", wav(1)), "model": "whisper-1", **params}
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(**body)
    assert caught.value.param == param


def test_silent_input_audio_is_refused(client):
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav(1, False)).decode(), "format": "wav"}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="fishvoice", messages=[{"role": "user", "content": [part]}])
    assert caught.value.param == "messages[0].content[0].input_audio" and caught.value.code == "invalid_audio"


class FailingLLM:
    """Writes a few words, then fails: a reply that breaks after its stream began."""

    name = "failing"

    def __init__(self, llm) -> None:
        self.llm = llm
        self.context_window = llm.context_window

    def count_tokens(self, messages):
        return self.llm.count_tokens(messages)

    async def stream(self, messages, *, temperature, max_tokens, tools=None):
        yield "Hello there, "
        raise FishvoiceError("backend_unavailable", "the LLM went away")

    async def close(self) -> None:
        pass


def test_a_reply_failing_midway_ends_the_stream_with_an_error_and_stores_nothing(assistant, store):
    import asyncio

    failing = Assistant(FailingLLM(assistant.llm), assistant.tts, store, default_system_message="Be brief.")
    app = create_app(failing, Settings(api_key=KEY), asr=None)
    with TestClient(app) as http:
        oai = openai.OpenAI(base_url="http://testserver/v1", api_key=KEY, http_client=http, max_retries=0)
        stream = oai.chat.completions.create(
            model="fishvoice",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            extra_body={"conversation_id": "broken"},
        )
        with pytest.raises(openai.APIError, match="the LLM went away"):
            list(stream)
        with pytest.raises(openai.APIStatusError) as caught:
            oai.chat.completions.create(
                model="fishvoice",
                messages=[{"role": "user", "content": "Hi"}],
                extra_body={"conversation_id": "broken"},
            )
        assert caught.value.status_code == 503
    assert asyncio.run(store.load(key_namespace(KEY), "broken")).turns == []


def test_a_stream_failing_midway_is_sdk_chunks_then_an_sdk_error_object(assistant, store):
    """The raw events of a broken reply: chunks the SDK's `ChatCompletionChunk` declares key by key, then
    `{"error": ...}` an `ErrorObject` (no `[DONE]` after it)."""
    import json

    from openai.types.chat import ChatCompletionChunk
    from openai.types.shared import ErrorObject

    from tests.server.openai.test_chat import assert_sdk_shape

    failing = Assistant(FailingLLM(assistant.llm), assistant.tts, store, default_system_message="Be brief.")
    body = {"model": "fishvoice", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    with TestClient(create_app(failing, Settings(api_key=KEY), asr=None)) as http:
        response = http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    *chunks, last = events
    assert chunks and any(chunk["choices"][0]["delta"].get("content") for chunk in chunks)
    for chunk in chunks:
        assert_sdk_shape(ChatCompletionChunk, chunk)
    assert set(last) == {"error"} and last["error"]["message"] == "the LLM went away"
    assert_sdk_shape(ErrorObject, last["error"])
