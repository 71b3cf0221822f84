"""The transcription route and `input_audio` over the ASR protocol, in process with a scripted ASR (the real
Whisper backend's tests are in test_openai_chat.py): every response format's shape, the SSE stream, the
worker-thread stop, silence as empty text, and a chat answering what the audio said."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator

import numpy as np
import openai
import pytest
import soundfile
from fastapi.testclient import TestClient

from fishvoice.asr.base import Segment, Transcript
from fishvoice.assistant import Assistant
from fishvoice.audio import Audio
from fishvoice.config import Settings
from fishvoice.errors import FishvoiceError
from fishvoice.server.app import create_app
from fishvoice.server.runpod_api import key_namespace

KEY = "asr-key"
SEGMENTS = [Segment(0.0, 1.25, " The quick brown fox"), Segment(1.25, 2.5, " jumps over the lazy dog.")]


class ScriptedASR:
    """Hears SEGMENTS in anything audible, nothing in silence."""

    name = "scripted"

    def __init__(self) -> None:
        self.prompts: list[str | None] = []

    def segments(
        self,
        audio: Audio,
        *,
        language: str | None = None,
        prompt: str | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[Segment]:
        self.prompts.append(prompt)
        if float(np.max(np.abs(audio.samples))) < 1e-3:
            return
        for segment in SEGMENTS:
            if stop is not None and stop.is_set():
                return
            yield segment

    def transcribe(self, audio: Audio, *, language: str | None = None, prompt: str | None = None) -> Transcript:
        segments = list(self.segments(audio, language=language, prompt=prompt))
        text = " ".join(segment.text.strip() for segment in segments)
        return Transcript(text, language or "en", audio.duration_s, segments)


def wav(seconds: float, loud: bool = True) -> bytes:
    rate = 16000
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * 220 * t) if loud else np.zeros_like(t)).astype(np.float32)
    out = io.BytesIO()
    soundfile.write(out, samples, rate, format="WAV")
    return out.getvalue()


@pytest.fixture
def client(assistant) -> Iterator[openai.OpenAI]:
    app = create_app(assistant, Settings(api_key=KEY), asr=ScriptedASR())
    with TestClient(app) as http:
        http.headers["Authorization"] = f"Bearer {KEY}"
        yield openai.OpenAI(base_url="http://testserver/v1", api_key=KEY, http_client=http, max_retries=0)


def test_json_and_text(client):
    assert client.audio.transcriptions.create(file=("a.wav", wav(3)), model="whisper-1").text == (
        "The quick brown fox jumps over the lazy dog."
    )
    text = client.audio.transcriptions.create(file=("a.wav", wav(3)), model="fishvoice", response_format="text")
    assert str(text).strip() == "The quick brown fox jumps over the lazy dog."


def test_verbose_json_has_language_duration_and_segments(client):
    result = client.audio.transcriptions.create(
        file=("a.wav", wav(3)),
        model="whisper-1",
        response_format="verbose_json",
        timestamp_granularities=["segment"],
        language="en",
        temperature=0.0,
    )
    assert result.language == "en" and result.duration == 3.0
    assert [(s.start, s.end, s.text) for s in result.segments] == [
        (0.0, 1.25, "The quick brown fox"),
        (1.25, 2.5, "jumps over the lazy dog."),
    ]


def test_srt_and_vtt(client):
    srt = str(client.audio.transcriptions.create(file=("a.wav", wav(3)), model="whisper-1", response_format="srt"))
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,250\nThe quick brown fox\n\n2\n00:00:01,250 --> 00:00:02,500")
    vtt = str(client.audio.transcriptions.create(file=("a.wav", wav(3)), model="whisper-1", response_format="vtt"))
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.250\nThe quick brown fox\n")


def test_stream_sends_deltas_then_done(client):
    events = list(client.audio.transcriptions.create(file=("a.wav", wav(3)), model="whisper-1", stream=True))
    assert [event.type for event in events] == ["transcript.text.delta"] * 2 + ["transcript.text.done"]
    assert (
        "".join(event.delta for event in events[:2]) == events[2].text == "The quick brown fox jumps over the lazy dog."
    )


def test_silence_is_empty_text(client):
    assert client.audio.transcriptions.create(file=("a.wav", wav(2, loud=False)), model="whisper-1").text == ""


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


def test_chat_answers_the_words_of_an_input_audio_part(client):
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav(3)).decode(), "format": "wav"}}
    alone = client.chat.completions.create(
        model="fishvoice", messages=[{"role": "user", "content": "Hi"}], max_tokens=20, temperature=0.2
    )
    reply = client.chat.completions.create(
        model="fishvoice", messages=[{"role": "user", "content": [part]}], max_tokens=20, temperature=0.2
    )
    assert reply.choices[0].message.content.strip()
    assert reply.usage.prompt_tokens >= alone.usage.prompt_tokens + 8  # the ten words heard are in the prompt


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

    async def stream(self, messages, *, temperature, max_tokens):
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
