"""OpenAI's voice-in routes: `POST /v1/audio/transcriptions` (speech to text with the ASR) and
`POST /v1/chat/completions` (the assistant: the LLM's reply, spoken when `modalities` asks for audio).

Conventions are openai_api.py's: the same keys, body limits and error shape, every error naming its
parameter, an unknown parameter refused by name. Speech recognition runs in a worker thread under the
limit on work at once; without an ASR backend, audio input is a 503 naming the audio's parameter.

Choices where fishvoice differs from OpenAI:
- `model` is any id `/v1/models` lists; one LLM, one voice and one ASR answer them all.
- `temperature` accepts OpenAI's 0 to 2, and is held to the LLM's 0.1 to 1.0.
- `audio.voice` is `default` or a saved voice of the key (as `/v1/audio/speech`); the reply's audio
  is not kept, so an assistant message cannot name a previous `audio.id` (send its transcript instead).
- The extra field `conversation_id` answers within a stored conversation: its history comes from the
  store, the last user message is the new turn, and the turn is stored once the reply completed.
- verbose_json's `language` is the language's English name in lower case, as OpenAI's (`english`;
  the ASR's code where the table below lacks it); word timestamps are not supported.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from ...asr.base import ASR, Segment, Transcript
from ...assistant import Assistant
from ...audio import Audio, AudioFormat, b64decode_audio
from ...contract import (
    CONVERSATION_ID,
    MAX_MESSAGE_CHARS,
    AudioEvent,
    ChatMessage,
    DoneEvent,
    ErrorEvent,
    TextEvent,
    guarded,
    parse_request,
)
from ...contract import Response as Reply
from ...errors import FishvoiceError, as_api_error
from ...speech_service import SpeechService, WorkLimit
from ...threads import iterate_in_thread, run_in_thread
from ...voices import speech_from_bytes
from ..http.auth import Auth
from ..http.body import form_items, media_type, read_body, read_json
from ..http.errors import openai_body, status_of
from ..http.fields import as_boolean, as_integer, as_language, as_number, invalid
from ..http.responses import OwnedStreamingResponse, sse_event
from .speech import DEFAULT_VOICE, SPEECH_RATE, resolve_voice

T = TypeVar("T")
TRANSCRIPTION_MODEL = "whisper-1"
MAX_MESSAGES = 256
MAX_PROMPT_CHARS = 4096
TRANSCRIPTION_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
CHAT_AUDIO_FORMATS: dict[str, AudioFormat] = {
    "wav": "wav",
    "mp3": "mp3",
    "flac": "flac",
    "opus": "opus",
    "pcm16": "pcm16",
}
INPUT_AUDIO_FORMATS = ("wav", "mp3")
AUDIO_EXPIRES_S = 3600
# The languages Whisper tells apart, by the code the ASR reports, named as OpenAI's verbose_json names them.
# No installed package carries this table (faster-whisper has the codes alone), so it is kept here.
LANGUAGE_NAMES: dict[str, str] = {
    "af": "afrikaans",
    "am": "amharic",
    "ar": "arabic",
    "as": "assamese",
    "az": "azerbaijani",
    "ba": "bashkir",
    "be": "belarusian",
    "bg": "bulgarian",
    "bn": "bengali",
    "bo": "tibetan",
    "br": "breton",
    "bs": "bosnian",
    "ca": "catalan",
    "cs": "czech",
    "cy": "welsh",
    "da": "danish",
    "de": "german",
    "el": "greek",
    "en": "english",
    "es": "spanish",
    "et": "estonian",
    "eu": "basque",
    "fa": "persian",
    "fi": "finnish",
    "fo": "faroese",
    "fr": "french",
    "gl": "galician",
    "gu": "gujarati",
    "ha": "hausa",
    "haw": "hawaiian",
    "he": "hebrew",
    "hi": "hindi",
    "hr": "croatian",
    "ht": "haitian creole",
    "hu": "hungarian",
    "hy": "armenian",
    "id": "indonesian",
    "is": "icelandic",
    "it": "italian",
    "ja": "japanese",
    "jw": "javanese",
    "ka": "georgian",
    "kk": "kazakh",
    "km": "khmer",
    "kn": "kannada",
    "ko": "korean",
    "la": "latin",
    "lb": "luxembourgish",
    "ln": "lingala",
    "lo": "lao",
    "lt": "lithuanian",
    "lv": "latvian",
    "mg": "malagasy",
    "mi": "maori",
    "mk": "macedonian",
    "ml": "malayalam",
    "mn": "mongolian",
    "mr": "marathi",
    "ms": "malay",
    "mt": "maltese",
    "my": "myanmar",
    "ne": "nepali",
    "nl": "dutch",
    "nn": "nynorsk",
    "no": "norwegian",
    "oc": "occitan",
    "pa": "punjabi",
    "pl": "polish",
    "ps": "pashto",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sa": "sanskrit",
    "sd": "sindhi",
    "si": "sinhala",
    "sk": "slovak",
    "sl": "slovenian",
    "sn": "shona",
    "so": "somali",
    "sq": "albanian",
    "sr": "serbian",
    "su": "sundanese",
    "sv": "swedish",
    "sw": "swahili",
    "ta": "tamil",
    "te": "telugu",
    "tg": "tajik",
    "th": "thai",
    "tk": "turkmen",
    "tl": "tagalog",
    "tr": "turkish",
    "tt": "tatar",
    "uk": "ukrainian",
    "ur": "urdu",
    "uz": "uzbek",
    "vi": "vietnamese",
    "yi": "yiddish",
    "yo": "yoruba",
    "yue": "cantonese",
    "zh": "chinese",
}
_CHAT_FIELDS = frozenset(
    {
        "model",
        "messages",
        "temperature",
        "max_tokens",
        "max_completion_tokens",
        "stream",
        "stream_options",
        "modalities",
        "audio",
        "conversation_id",
        "n",
        "user",
    }
)
_TRANSCRIPTION_FIELDS = frozenset(
    {"file", "model", "language", "prompt", "response_format", "temperature", "timestamp_granularities[]", "stream"}
)


def _no_asr(field: str) -> FishvoiceError:
    return FishvoiceError(
        "backend_unavailable", f"{field}: speech recognition is not available on this server (no ASR backend)", field
    )


def _error_event(exc: BaseException) -> dict[str, Any]:
    error = as_api_error(exc)
    return openai_body(error, status_of(error))


def join_segments(segments: list[Segment]) -> str:
    return " ".join(text for segment in segments if (text := segment.text.strip()))


# Transcriptions


FormFields = dict[str, list[str | bytes]]


async def read_form(request: Request, max_bytes: int) -> FormFields:
    """A multipart form's fields, each with every value it was given (`timestamp_granularities[]` repeats)."""
    body = await read_body(request, max_bytes, "file")
    if media_type(request) != "multipart/form-data":
        raise invalid("body", "send a multipart form (multipart/form-data) with the audio as `file`")
    fields: FormFields = {}
    for name, value in await form_items(request, body, max_files=2):
        fields.setdefault(name, []).append(value)
    return fields


@dataclass(frozen=True)
class TranscriptionParams:
    file: bytes
    model: str
    language: str | None
    prompt: str | None
    response_format: str
    stream: bool


def _form_text(fields: FormFields, name: str) -> str | None:
    values = fields.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise invalid(name, "given more than once")
    if not isinstance(values[0], str):
        raise invalid(name, "must be text, not a file")
    return values[0]


def parse_transcription(fields: FormFields, models: tuple[str, ...]) -> TranscriptionParams:
    """Validate the form; raise invalid_input naming the first bad parameter."""
    for name in fields:
        if name not in _TRANSCRIPTION_FIELDS:
            raise invalid(name[:60], "unknown parameter")
    files = fields.get("file")
    if not files:
        raise FishvoiceError("invalid_audio", "file: required (the audio file, in a multipart form)", "file")
    if len(files) > 1 or not isinstance(files[0], bytes):
        raise FishvoiceError("invalid_audio", "file: must be one audio file, not text", "file")
    model = _form_text(fields, "model")
    if model is None:
        raise invalid("model", "required")
    if model not in models:
        raise invalid("model", f"unknown model {model[:60]!r}; use one of {', '.join(models)}")
    language = _form_text(fields, "language") or None
    if language is not None:
        as_language(language, "language")
    prompt = _form_text(fields, "prompt")
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        raise invalid("prompt", f"must be at most {MAX_PROMPT_CHARS} characters (got {len(prompt)})")
    response_format = _form_text(fields, "response_format") or "json"
    if response_format not in TRANSCRIPTION_FORMATS:
        raise invalid(
            "response_format", f"must be one of {', '.join(TRANSCRIPTION_FORMATS)} (got {response_format[:40]!r})"
        )
    temperature = _form_text(fields, "temperature")
    if temperature is not None:
        try:
            value = float(temperature)
        except ValueError:
            raise invalid("temperature", f"must be a number (got {temperature[:20]!r})") from None
        as_number(value, "temperature", 0.0, 1.0)
    for granularity in fields.get("timestamp_granularities[]", []):
        if granularity == "word":
            raise invalid("timestamp_granularities[]", "word timestamps are not supported; use segment")
        if granularity != "segment":
            raise invalid("timestamp_granularities[]", f"must be segment (got {str(granularity)[:20]!r})")
    if "timestamp_granularities[]" in fields and response_format != "verbose_json":
        raise invalid("timestamp_granularities[]", "needs response_format verbose_json")
    stream_text = (_form_text(fields, "stream") or "false").lower()
    if stream_text not in ("true", "false"):
        raise invalid("stream", f"must be true or false (got {stream_text[:20]!r})")
    stream = stream_text == "true"
    if stream and response_format not in ("json", "text"):
        raise invalid("stream", f"streaming is not supported with response_format {response_format}")
    return TranscriptionParams(files[0], model, language, prompt or None, response_format, stream)


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def subtitles(segments: list[Segment], kind: Literal["srt", "vtt"]) -> str:
    """The segments as an SRT or WebVTT file."""
    separator = "," if kind == "srt" else "."
    cues = []
    for number, segment in enumerate(segments, 1):
        span = f"{_timestamp(segment.start, separator)} --> {_timestamp(segment.end, separator)}"
        cue = f"{span}\n{segment.text.strip()}\n"
        cues.append(f"{number}\n{cue}" if kind == "srt" else cue)
    body = "\n".join(cues)
    return f"WEBVTT\n\n{body}" if kind == "vtt" else body


def transcription_response(transcript: Transcript, response_format: str) -> Response:
    text = transcript.text.strip()
    if response_format == "text":
        return PlainTextResponse(text + "\n" if text else "")
    if response_format in ("srt", "vtt"):
        media = "text/vtt" if response_format == "vtt" else "application/x-subrip"
        kind: Literal["srt", "vtt"] = "vtt" if response_format == "vtt" else "srt"
        return PlainTextResponse(subtitles(transcript.segments, kind), media_type=media)
    if response_format == "verbose_json":
        segments = [
            {
                "id": number,
                "seek": 0,
                "start": round(segment.start, 3),
                "end": round(segment.end, 3),
                "text": segment.text.strip(),
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
            }
            for number, segment in enumerate(transcript.segments)
        ]
        body = {
            "language": LANGUAGE_NAMES.get(transcript.language, transcript.language),
            "duration": round(transcript.duration_s, 3),
            "text": text,
            "segments": segments,
        }
        return JSONResponse(body)
    return JSONResponse({"text": text})


async def _transcript_events(
    asr: ASR, audio: Audio, params: TranscriptionParams, work: WorkLimit
) -> AsyncGenerator[bytes, None]:
    """`transcript.text.delta` as each segment is recognised, then `transcript.text.done`; a failure is
    an `error` event and the end."""
    pieces: list[str] = []
    try:
        async with work:
            segments = iterate_in_thread(
                lambda stop: asr.segments(audio, language=params.language, prompt=params.prompt, stop=stop)
            )
            async with aclosing(segments):
                async for segment in segments:
                    if text := segment.text.strip():
                        yield sse_event({"type": "transcript.text.delta", "delta": f" {text}" if pieces else text})
                        pieces.append(text)
    except Exception as exc:
        yield sse_event({"type": "error", **_error_event(exc)})
        return
    yield sse_event({"type": "transcript.text.done", "text": " ".join(pieces)})


# Chat completions


@dataclass(frozen=True)
class _AudioPart:
    field: str
    data: str
    format: str


_Part = str | _AudioPart


@dataclass(frozen=True)
class _Message:
    role: Literal["system", "user", "assistant"]
    parts: list[_Part]


@dataclass(frozen=True)
class ChatParams:
    model: str
    messages: list[_Message]
    temperature: float
    max_tokens: int | None
    tokens_field: str
    stream: bool
    include_usage: bool
    audio_format: AudioFormat | None  # None: text only
    voice: str
    conversation_id: str | None


def _optional(raw: dict[str, Any], name: str, check: Callable[..., T], *bounds: float) -> T | None:
    """`raw[name]` passed through `check` (fields.as_number, as_integer or as_boolean), or None when absent or
    null."""
    value = raw.get(name)
    return None if value is None else check(value, name, *bounds)


def _parse_parts(content: Any, field: str, role: str) -> list[_Part]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list) or not content:
        raise invalid(field, "must be a string or a non-empty list of content parts")
    parts: list[_Part] = []
    for number, part in enumerate(content):
        where = f"{field}[{number}]"
        if not isinstance(part, dict):
            raise invalid(where, "must be an object")
        kind = part.get("type")
        if kind == "text":
            if set(part) - {"type", "text"}:
                raise invalid(f"{where}.{sorted(set(part) - {'type', 'text'})[0][:60]}", "unknown parameter")
            if not isinstance(part.get("text"), str):
                raise invalid(f"{where}.text", "required, a string")
            parts.append(part["text"])
        elif kind == "input_audio":
            if role != "user":
                raise invalid(f"{where}.type", "input_audio parts are for user messages")
            if set(part) - {"type", "input_audio"}:
                raise invalid(f"{where}.{sorted(set(part) - {'type', 'input_audio'})[0][:60]}", "unknown parameter")
            audio = part.get("input_audio")
            if not isinstance(audio, dict):
                raise invalid(f"{where}.input_audio", 'required, {"data": "<base64>", "format": "wav" or "mp3"}')
            if set(audio) - {"data", "format"}:
                extra = sorted(set(audio) - {"data", "format"})[0][:60]
                raise invalid(f"{where}.input_audio.{extra}", "unknown parameter")
            if audio.get("format") not in INPUT_AUDIO_FORMATS:
                raise invalid(
                    f"{where}.input_audio.format", f"must be wav or mp3 (got {str(audio.get('format'))[:20]!r})"
                )
            if not isinstance(audio.get("data"), str):
                raise invalid(f"{where}.input_audio.data", "required, base64 audio")
            parts.append(_AudioPart(f"{where}.input_audio", audio["data"], audio["format"]))
        else:
            raise invalid(f"{where}.type", f"must be text or input_audio (got {str(kind)[:30]!r})")
    return parts


def _parse_messages(value: Any) -> list[_Message]:
    if not isinstance(value, list) or not value:
        raise invalid("messages", "required, a non-empty list of messages")
    if len(value) > MAX_MESSAGES:
        raise invalid("messages", f"at most {MAX_MESSAGES} messages (got {len(value)})")
    messages = []
    for number, message in enumerate(value):
        where = f"messages[{number}]"
        if not isinstance(message, dict):
            raise invalid(where, "must be an object")
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant"):
            raise invalid(f"{where}.role", f"must be system, developer, user or assistant (got {str(role)[:30]!r})")
        if role == "assistant" and message.get("audio") is not None:
            raise invalid(f"{where}.audio", "a previous reply's audio is not kept here; send its transcript as content")
        for name in message:
            if name not in ("role", "content", "name", "audio"):
                raise invalid(f"{where}.{name[:60]}", "unknown parameter")
        parts = _parse_parts(message.get("content"), f"{where}.content", role)
        messages.append(_Message("system" if role == "developer" else role, parts))
    if messages[-1].role != "user":
        raise invalid("messages", "the last message must be the user's")
    return messages


def parse_chat(raw: Any, models: tuple[str, ...]) -> ChatParams:
    """Validate the body; raise invalid_input naming the first bad parameter."""
    if not isinstance(raw, dict):
        raise invalid("body", "must be a JSON object")
    for name in raw:
        if name not in _CHAT_FIELDS:
            raise invalid(str(name)[:60], "unknown parameter")
    model = raw.get("model")
    if not isinstance(model, str):
        raise invalid("model", "required, a string")
    if model not in models:
        raise invalid("model", f"unknown model {model[:60]!r}; use one of {', '.join(models)}")
    messages = _parse_messages(raw.get("messages"))
    temperature = _optional(raw, "temperature", as_number, 0.0, 2.0)
    tokens_field = "max_completion_tokens" if raw.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _optional(raw, tokens_field, as_integer)
    if (n := _optional(raw, "n", as_integer)) is not None and n != 1:
        raise invalid("n", f"only 1 choice is made (got {n})")
    if raw.get("user") is not None and not isinstance(raw["user"], str):
        raise invalid("user", "must be a string")
    stream = _optional(raw, "stream", as_boolean) or False
    options = raw.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise invalid("stream_options", "only with stream: true")
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise invalid("stream_options", 'must be {"include_usage": true or false}')
        include_usage = _optional(options, "include_usage", as_boolean) or False
    modalities = raw.get("modalities") or ["text"]
    if not isinstance(modalities, list) or sorted(modalities) not in (["text"], ["audio", "text"]):
        raise invalid("modalities", '["text"] or ["text", "audio"]')
    audio_format: AudioFormat | None = None
    voice = DEFAULT_VOICE
    audio = raw.get("audio")
    if "audio" in modalities:
        if not isinstance(audio, dict):
            raise invalid("audio", 'required with the audio modality: {"voice": ..., "format": ...}')
        for name in audio:
            if name not in ("voice", "format"):
                raise invalid(f"audio.{str(name)[:60]}", "unknown parameter")
        asked = audio.get("voice")
        if isinstance(asked, dict) and set(asked) == {"id"}:
            asked = asked["id"]
        if not isinstance(asked, str) or not asked.strip():
            raise invalid("audio.voice", "required: default or a saved voice's id")
        voice = asked
        if audio.get("format") not in CHAT_AUDIO_FORMATS:
            formats = ", ".join(CHAT_AUDIO_FORMATS)
            raise invalid("audio.format", f"must be one of {formats} (got {str(audio.get('format'))[:20]!r})")
        audio_format = CHAT_AUDIO_FORMATS[audio["format"]]
        if stream and audio_format != "pcm16":
            raise invalid("audio.format", "streamed audio is pcm16 only")
    elif audio is not None:
        raise invalid("audio", 'only with modalities ["text", "audio"]')
    conversation_id = raw.get("conversation_id")
    if conversation_id is not None and (
        not isinstance(conversation_id, str) or not CONVERSATION_ID.match(conversation_id)
    ):
        raise invalid("conversation_id", "must be 1 to 128 characters of A-Z a-z 0-9 . _ : -")
    return ChatParams(
        model=model,
        messages=messages,
        temperature=0.7 if temperature is None else min(1.0, max(0.1, temperature)),
        max_tokens=max_tokens,
        tokens_field=tokens_field,
        stream=stream,
        include_usage=include_usage,
        audio_format=audio_format,
        voice=voice.strip(),
        conversation_id=conversation_id,
    )


async def _message_text(message: _Message, asr: ASR | None, work: WorkLimit) -> str:
    """A message's text: its text parts and the transcripts of its audio parts, in order."""
    texts = []
    for part in message.parts:
        if isinstance(part, str):
            texts.append(part.strip())
            continue
        if asr is None:
            raise _no_asr(part.field)
        audio = await run_in_thread(speech_from_bytes, b64decode_audio(part.data, part.field), part.field, 0)
        async with work:
            transcript = await run_in_thread(asr.transcribe, audio)
        if not transcript.text.strip():
            raise FishvoiceError("invalid_audio", f"{part.field}: no speech was heard in it", part.field)
        texts.append(transcript.text.strip())
    return "\n".join(text for text in texts if text)


async def _conversation(
    params: ChatParams, asr: ASR | None, work: WorkLimit
) -> tuple[str | None, list[ChatMessage], str]:
    """The system message, the turns before the last user message, and that message's text."""
    system: list[str] = []
    turns: list[ChatMessage] = []
    for number, message in enumerate(params.messages):
        text = await _message_text(message, asr, work)
        if len(text) > MAX_MESSAGE_CHARS:
            raise invalid(
                f"messages[{number}].content", f"must be at most {MAX_MESSAGE_CHARS} characters (got {len(text)})"
            )
        if message.role == "system":
            system.append(text)
        elif number < len(params.messages) - 1 and text:
            turns.append({"role": message.role, "content": text})
    last = text
    if not last:
        raise invalid(f"messages[{len(params.messages) - 1}].content", "must not be empty")
    return "\n\n".join(part for part in system if part) or None, turns, last


def _finish_reason(reply: Reply, max_tokens: int) -> str:
    return "length" if reply.usage.completion_tokens >= max_tokens else "stop"


def _usage(reply: Reply) -> dict[str, int]:
    prompt, completion = reply.usage.prompt_tokens, reply.usage.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@dataclass
class _Completion:
    id: str
    created: int
    model: str
    audio_id: str | None
    max_tokens: int

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return sse_event({**self._head("chat.completion.chunk"), "choices": [choice]})

    def _head(self, kind: str) -> dict[str, Any]:
        """The keys every body and chunk begins with: OpenAI's own alone (a `conversation_id` sent is not
        echoed, so every key is one the SDK's types declare)."""
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def whole(self, reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
        if self.audio_id is not None:
            message["content"] = None
            message["audio"] = {
                "id": self.audio_id,
                "data": reply.audio,
                "expires_at": self.created + AUDIO_EXPIRES_S,
                "transcript": reply.text,
            }
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": _finish_reason(reply, self.max_tokens),
        }
        return {**self._head("chat.completion"), "choices": [choice], "usage": _usage(reply)}


async def _chunks(
    completion: _Completion, events: AsyncGenerator[Any, None], include_usage: bool, work: WorkLimit
) -> AsyncGenerator[bytes, None]:
    """The reply as `chat.completion.chunk` events: text as `delta.content` (or, with audio, as
    `delta.audio.transcript`, the speech as `delta.audio.data` pcm16), a last chunk with the finish
    reason, the usage where asked, then `[DONE]`. A failure is an `{"error": ...}` event and the end."""
    audio = completion.audio_id is not None
    yield completion.chunk({"role": "assistant", "content": None if audio else ""})
    async with work, aclosing(guarded(events)) as replies:
        async for event in replies:
            if isinstance(event, TextEvent):
                if audio:
                    yield completion.chunk({"audio": {"id": completion.audio_id, "transcript": event.text}})
                else:
                    yield completion.chunk({"content": event.text})
            elif isinstance(event, AudioEvent):
                yield completion.chunk({"audio": {"id": completion.audio_id, "data": event.audio}})
            elif isinstance(event, ErrorEvent):
                yield sse_event(openai_body(event.error, status_of(event.error)))
                return
            elif isinstance(event, DoneEvent):
                reply = event.response
                if audio:
                    expires = completion.created + AUDIO_EXPIRES_S
                    yield completion.chunk({"audio": {"id": completion.audio_id, "expires_at": expires}})
                yield completion.chunk({}, _finish_reason(reply, completion.max_tokens))
                if include_usage:
                    yield sse_event(
                        {**completion._head("chat.completion.chunk"), "choices": [], "usage": _usage(reply)}
                    )
    yield b"data: [DONE]\n\n"


def build_openai_chat_router(
    assistant: Assistant,
    speech: SpeechService,
    asr: ASR | None,
    auth: Auth,
    *,
    models: tuple[str, ...],
    max_body_bytes: int,
) -> APIRouter:
    router = APIRouter()
    caller = Depends(auth)

    @router.post("/v1/audio/transcriptions")
    async def create_transcription(request: Request, namespace: str = caller) -> Response:
        params = parse_transcription(await read_form(request, max_body_bytes), models)
        if asr is None:
            raise _no_asr("file")
        audio = await run_in_thread(speech_from_bytes, params.file, "file", 0)
        if params.stream:
            return OwnedStreamingResponse(
                _transcript_events(asr, audio, params, speech.work), media_type="text/event-stream"
            )
        async with speech.work:
            transcript = await run_in_thread(asr.transcribe, audio, language=params.language, prompt=params.prompt)
        return transcription_response(transcript, params.response_format)

    @router.post("/v1/chat/completions")
    async def create_chat_completion(request: Request, namespace: str = caller) -> Response:
        params = parse_chat(await read_json(request, max_body_bytes), models)
        reference_id = None
        if params.audio_format is not None and params.voice != DEFAULT_VOICE:
            try:
                await resolve_voice(speech, namespace, params.voice)
            except FishvoiceError as exc:
                raise FishvoiceError(exc.code, f"audio.{exc.message}", "audio.voice") from None
            reference_id = params.voice
        system, turns, message = await _conversation(params, asr, speech.work)
        raw: dict[str, Any] = {
            "message": message,
            "system_message": system,
            "conversation_id": params.conversation_id,
            "reference_id": reference_id,
            "temperature": params.temperature,
            "speak": params.audio_format is not None,
            "audio_format": params.audio_format or "pcm16",
            "sample_rate": SPEECH_RATE,
        }
        if params.max_tokens is not None:
            raw["max_tokens"] = params.max_tokens
        try:
            reply_request = parse_request({name: value for name, value in raw.items() if value is not None})
        except FishvoiceError as exc:
            renamed = {"max_tokens": params.tokens_field, "message": "messages", "system_message": "messages"}
            field = renamed.get(exc.field or "", exc.field)
            prefix = f"{exc.field}:"
            text = exc.message[len(prefix) :].strip() if exc.message.startswith(prefix) else exc.message
            raise FishvoiceError(exc.code, f"{field}: {text}", field) from None
        history = None if params.conversation_id else turns
        completion = _Completion(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=params.model,
            audio_id=f"audio_{uuid.uuid4().hex}" if params.audio_format is not None else None,
            max_tokens=reply_request.max_tokens,
        )
        events = assistant.respond(reply_request, namespace, history=history)
        if params.stream:
            return OwnedStreamingResponse(
                _chunks(completion, events, params.include_usage, speech.work),
                owns=[events],
                media_type="text/event-stream",
            )
        async with speech.work, aclosing(events):
            async for event in events:
                if isinstance(event, DoneEvent):
                    return JSONResponse(completion.whole(event.response))
        raise FishvoiceError("internal", "internal error: the reply ended without its response")

    return router
