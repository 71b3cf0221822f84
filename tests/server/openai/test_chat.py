"""OpenAI's chat completions and transcriptions (`/v1/chat/completions`, `/v1/audio/transcriptions`) through
the official `openai` client against a real `fishvoice serve`: text and spoken replies, plain and streamed,
stored conversations, errors naming their parameter, and speech input heard by the embedded Whisper."""

from __future__ import annotations

import base64
import io
import json
import types
import typing
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pydantic
import pytest
from openai.types.audio import Transcription, TranscriptionVerbose
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from fishvoice.audio import Audio, decode_audio
from fishvoice.server.openai.transcriptions import LANGUAGE_NAMES
from tests.servers import server

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

KEY = "chat-key"
SAID = "The quick brown fox jumps over the lazy dog."
SHORT = {"model": "fishvoice", "max_tokens": 40, "temperature": 0.2}


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> Iterator[str]:
    with server(tmp_path_factory.mktemp("chat"), api_key=KEY, concurrency="2") as base:
        yield base


@pytest.fixture
def client(url) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=300) as oai:
        yield oai


def ask(text: str) -> list[dict]:
    return [{"role": "system", "content": "You answer in one short sentence."}, {"role": "user", "content": text}]


def pcm_audio(data: bytes) -> Audio:
    return Audio(np.frombuffer(data, "<i2").astype(np.float32) / 32767.0, 24000)


def assert_plausible_speech(audio: Audio, transcript: str) -> None:
    """Audible, and as long as its words take to say (0.1 to 1.2 s a word)."""
    words = len(transcript.split())
    assert words > 0
    assert 0.1 * words <= audio.duration_s <= 1.2 * words + 1.0
    assert float(np.sqrt(np.mean(np.square(audio.samples)))) > 0.01


def test_chat_text_answers_with_usage(client):
    reply = client.chat.completions.create(messages=ask("What colour is the sky?"), **SHORT)
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.message.audio is None
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_text_streams_deltas_then_finish_and_usage(client):
    stream = client.chat.completions.create(
        messages=ask("Name three fruits."), stream=True, stream_options={"include_usage": True}, **SHORT
    )
    chunks = list(stream)
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text.strip()
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_chat_audio_reply_is_speech_of_its_transcript(client):
    reply = client.chat.completions.create(
        messages=ask("Say something nice about robots."),
        modalities=["text", "audio"],
        audio={"voice": "default", "format": "wav"},
        **SHORT,
    )
    audio = reply.choices[0].message.audio
    assert audio.id and audio.expires_at > 0 and audio.transcript.strip()
    wav = base64.b64decode(audio.data)
    assert wav[:4] == b"RIFF"
    assert_plausible_speech(decode_audio(wav, "audio", 120), audio.transcript)


def test_chat_audio_streams_transcript_and_pcm16(client):
    stream = client.chat.completions.create(
        messages=ask("Tell me about the sea."),
        modalities=["text", "audio"],
        audio={"voice": "default", "format": "pcm16"},
        stream=True,
        **SHORT,
    )
    transcript, data, finish = [], [], None
    for chunk in stream:
        delta = chunk.choices[0].delta
        finish = chunk.choices[0].finish_reason or finish
        if audio := delta.audio:
            transcript.append(audio.transcript or "")
            data.append(base64.b64decode(audio.data or ""))
    assert finish in ("stop", "length")
    assert_plausible_speech(pcm_audio(b"".join(data)), "".join(transcript))


def test_conversation_id_keeps_the_history_across_calls(client):
    first = client.chat.completions.create(
        messages=ask("My name is Ada. Say hello."), extra_body={"conversation_id": "chat-ada"}, **SHORT
    )
    second = client.chat.completions.create(
        messages=ask("My name is Ada. Say hello."), extra_body={"conversation_id": "chat-ada"}, **SHORT
    )
    # The second call's prompt holds the first exchange: its message and the reply.
    assert second.usage.prompt_tokens >= first.usage.prompt_tokens + first.usage.completion_tokens
    again = client.chat.completions.create(messages=ask("My name is Ada. Say hello."), **SHORT)
    assert again.usage.prompt_tokens == first.usage.prompt_tokens  # no conversation_id: nothing stored or read


def test_messages_are_the_conversation_without_conversation_id(client):
    alone = client.chat.completions.create(messages=ask("And then?"), **SHORT)
    history = [
        *ask("Tell me a riddle.")[:2],
        {"role": "assistant", "content": "What has keys but cannot open locks? A piano."},
        {"role": "user", "content": [{"type": "text", "text": "And then?"}]},
    ]
    within = client.chat.completions.create(messages=history, **SHORT)
    assert within.usage.prompt_tokens > alone.usage.prompt_tokens + 10


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
        ({"messages": [{"role": "user", "content": "  "}]}, "messages[0].content"),
        ({"modalities": ["text", "audio"], "audio": {"voice": "default", "format": "ogg"}}, "audio.format"),
        ({"modalities": ["text", "audio"], "audio": {"voice": "nobody", "format": "wav"}}, "audio.voice"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"model": "gpt-5"}, "model"),
        ({"extra_body": {"max_new_tokens": 5}}, "max_new_tokens"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "ogg"}}],
                    }
                ]
            },
            "messages[0].content[0].input_audio.format",
        ),
    ],
)
def test_bad_chat_requests_name_their_parameter(client, params, param):
    body = {"model": "fishvoice", "messages": ask("Hi"), **params}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**body)
    assert caught.value.status_code == 400 and caught.value.param == param
    assert caught.value.body["type"] == "invalid_request_error"


def test_a_bad_key_is_refused_with_401(url):
    with openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as caught:
            bad.chat.completions.create(messages=ask("Hi"), **SHORT)
        assert caught.value.status_code == 401
        with pytest.raises(openai.AuthenticationError):
            bad.audio.transcriptions.create(file=("a.wav", b"RIFF"), model="whisper-1")


def test_speech_input_without_an_asr_backend_is_503_naming_the_audio(client, tmp_path):
    wav = client.audio.speech.create(model="tts-1", voice="default", input=SAID, response_format="wav").content
    with server(tmp_path, api_key=KEY, asr="none") as base:  # recognition turned off
        deaf = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=120)
        check_deaf(deaf, wav)


def check_deaf(client: openai.OpenAI, wav: bytes) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.audio.transcriptions.create(file=("said.wav", wav), model="whisper-1")
    assert caught.value.status_code == 503 and caught.value.body["param"] == "file"
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"}}
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(messages=[{"role": "user", "content": [part]}], **SHORT)
    assert caught.value.status_code == 503 and caught.value.body["param"] == "messages[0].content[0].input_audio"


# Speech input, heard by the embedded Whisper.


def word_error_rate(reference: str, heard: str) -> float:
    ref = [w.strip(".,!?;:").lower() for w in reference.split()]
    hyp = [w.strip(".,!?;:").lower() for w in heard.split()]
    row = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, other in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (word != other))
    return row[-1] / max(1, len(ref))


@pytest.fixture
def said_wav(client) -> bytes:
    return client.audio.speech.create(model="tts-1", voice="default", input=SAID, response_format="wav").content


def test_transcription_returns_what_was_said(client, said_wav):
    result = client.audio.transcriptions.create(file=("said.wav", said_wav), model="whisper-1")
    assert word_error_rate(SAID, result.text) < 0.15


@pytest.mark.parametrize("response_format", ["json", "text", "srt", "vtt", "verbose_json"])
def test_transcription_in_every_format(client, said_wav, response_format):
    result = client.audio.transcriptions.create(
        file=("said.wav", said_wav), model="whisper-1", response_format=response_format, language="en"
    )
    if response_format == "json":
        assert word_error_rate(SAID, result.text) < 0.15
    elif response_format == "text":
        assert word_error_rate(SAID, str(result)) < 0.15
    elif response_format == "verbose_json":
        assert result.language == "english" and 1.5 < result.duration < 10  # OpenAI's name, not the code
        assert result.segments and all(s.start < s.end <= result.duration + 0.5 for s in result.segments)
        assert word_error_rate(SAID, " ".join(s.text for s in result.segments)) < 0.15
    else:
        text = str(result)
        assert "-->" in text and (text.startswith("WEBVTT") == (response_format == "vtt"))
        assert ("," in text.split("-->")[0]) == (response_format == "srt")


def test_transcription_streams_deltas_then_done(client, said_wav):
    events = list(client.audio.transcriptions.create(file=("said.wav", said_wav), model="whisper-1", stream=True))
    kinds = [event.type for event in events]
    assert kinds[-1] == "transcript.text.done" and set(kinds[:-1]) == {"transcript.text.delta"}
    assert "".join(event.delta for event in events[:-1]) == events[-1].text
    assert word_error_rate(SAID, events[-1].text) < 0.15


def test_word_timestamps_are_refused(client, said_wav):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(
            file=("said.wav", said_wav),
            model="whisper-1",
            response_format="verbose_json",
            timestamp_granularities=["word"],
        )
    assert caught.value.param == "timestamp_granularities[]"


def test_silence_transcribes_to_empty_text(client):
    import soundfile

    silent = io.BytesIO()
    soundfile.write(silent, np.zeros(16000 * 2, np.float32), 16000, format="WAV")
    assert client.audio.transcriptions.create(file=("quiet.wav", silent.getvalue()), model="whisper-1").text == ""


def test_chat_answers_an_input_audio_message(client, said_wav):
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(said_wav).decode(), "format": "wav"}}
    reply = client.chat.completions.create(
        messages=[{"role": "user", "content": [{"type": "text", "text": "Repeat what I said:"}, part]}], **SHORT
    )
    assert reply.choices[0].message.content.strip()
    assert reply.usage.prompt_tokens > 10


def test_sse_bodies_are_openai_json(url):
    """The raw stream: `data:` lines of JSON, closed by `[DONE]`."""
    body = {"messages": ask("Hi"), "stream": True, **SHORT}
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=300
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(json.loads(line[6:])["object"] == "chat.completion.chunk" for line in lines[:-1])


# The raw bodies, line by line against the official SDK's types.


def undeclared(model: type[pydantic.BaseModel], body: dict[str, Any], where: str = "") -> list[str]:
    """The keys of `body`, at any depth, that `model` does not declare: the SDK's models keep unknown keys
    silently, so `model_validate` alone would pass a key of our own."""
    fields = {field.alias or name: field for name, field in model.model_fields.items()}
    found = []
    for key, value in body.items():
        if key not in fields:
            found.append(f"{where}{key}")
        else:
            found += _undeclared_in(fields[key].annotation, value, f"{where}{key}")
    return found


def _undeclared_in(annotation: Any, value: Any, where: str) -> list[str]:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _undeclared_in(args[0], value, where)
    if origin in (typing.Union, types.UnionType):
        options = [_undeclared_in(arg, value, where) for arg in args if _may_hold(arg, value)]
        return min(options, key=len, default=[])
    if origin is list and isinstance(value, list):
        return [key for number, item in enumerate(value) for key in _undeclared_in(args[0], item, f"{where}[{number}]")]
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel) and isinstance(value, dict):
        return undeclared(annotation, value, f"{where}.")
    return []


def _may_hold(annotation: Any, value: Any) -> bool:
    """Whether a member of a union could be the one that holds `value` (a dict: a model or a mapping)."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _may_hold(typing.get_args(annotation)[0], value)
    if annotation is type(None):
        return value is None
    if isinstance(value, dict):
        is_model = isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)
        return is_model or typing.get_origin(annotation) is dict
    return True


def assert_sdk_shape(model: type[pydantic.BaseModel], body: dict[str, Any]) -> None:
    model.model_validate(body)
    assert undeclared(model, body) == [], body


def test_undeclared_finds_keys_of_our_own_at_any_depth():
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"audio": {"id": "a", "pitch": 1}}, "finish_reason": None}],
        "conversation_id": "x",
    }
    ChatCompletionChunk.model_validate(chunk)  # passes: the SDK keeps what it does not know
    assert undeclared(ChatCompletionChunk, chunk) == ["choices[0].delta.audio.pitch", "conversation_id"]


def test_every_language_whisper_reports_has_its_name():
    from faster_whisper.tokenizer import _LANGUAGE_CODES  # what faster-whisper's supported_languages lists

    assert set(LANGUAGE_NAMES) == set(_LANGUAGE_CODES)
    assert LANGUAGE_NAMES["en"] == "english" and LANGUAGE_NAMES["ht"] == "haitian creole"
    assert all(name == name.lower().strip() and name for name in LANGUAGE_NAMES.values())


@pytest.mark.parametrize(
    ("response_format", "model"), [("json", Transcription), ("verbose_json", TranscriptionVerbose)]
)
def test_transcription_bodies_are_the_sdk_types(client, said_wav, response_format, model):
    raw = client.audio.transcriptions.with_raw_response.create(
        file=("said.wav", said_wav), model="whisper-1", response_format=response_format
    )
    body = raw.http_response.json()
    assert_sdk_shape(model, body)
    if response_format == "verbose_json":
        assert body["language"] == "english" and body["segments"]


CHAT_SHAPES = {
    "text": {},
    "audio": {"modalities": ["text", "audio"], "audio": {"voice": "default", "format": "wav"}},
    "text-stream": {"stream": True, "stream_options": {"include_usage": True}, "conversation_id": "shapes-1"},
    "audio-stream": {
        "stream": True,
        "stream_options": {"include_usage": True},
        "modalities": ["text", "audio"],
        "audio": {"voice": "default", "format": "pcm16"},
    },
}


@pytest.mark.parametrize("shape", list(CHAT_SHAPES))
def test_chat_bodies_are_the_sdk_types(url, shape):
    """Each body, and each chunk of a stream, validates as the SDK's type and has no key it does not declare."""
    params = CHAT_SHAPES[shape]
    body = {"messages": ask("Say hello."), **SHORT, "max_tokens": 16, **params}
    headers = {"Authorization": f"Bearer {KEY}"}
    if not params.get("stream"):
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=300)
        assert reply.status_code == 200, reply.text
        assert_sdk_shape(ChatCompletion, reply.json())
        return
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers, timeout=300) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    for chunk in chunks:
        assert_sdk_shape(ChatCompletionChunk, chunk)
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks if chunk["choices"]]
    if "audio" in params:  # every kind of audio delta was checked: its transcript, its data, its expiry
        pieces = [delta["audio"] for delta in deltas if "audio" in delta]
        assert {key for piece in pieces for key in piece} == {"id", "transcript", "data", "expires_at"}
    else:
        assert any(delta.get("content") for delta in deltas)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
