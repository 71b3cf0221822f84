"""OpenAI's `POST /v1/chat/completions`: the assistant's reply, spoken when `modalities` asks for audio.

Conventions are the other OpenAI routes': the same keys, body limits and error shape, every error naming
its parameter, an unknown parameter refused by name. Audio parts of user messages are heard under the limit
on work at once; without an ASR backend they are a 503 naming the part.

Choices where fishvoice differs from OpenAI:
- `model` is any id `/v1/models` lists; one LLM, one voice and one ASR answer them all.
- `temperature` accepts OpenAI's 0 to 2, and is held to the LLM's 0.1 to 1.0.
- `audio.voice` is `default` or a saved voice of the key (as `/v1/audio/speech`); the reply's audio
  is not kept, so an assistant message cannot name a previous `audio.id` (send its transcript instead).
- The extra field `conversation_id` answers within a stored conversation: its history comes from the
  store, the last user message is the new turn, and the turn is stored once the reply completed.

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
from fastapi.responses import JSONResponse, Response

from ...asr.base import ASR
from ...assistant import Assistant
from ...audio import AudioFormat, b64decode_audio
from ...contract import (
    CONVERSATION_ID_RULE,
    MAX_MESSAGE_CHARS,
    AudioEvent,
    ChatMessage,
    DoneEvent,
    ErrorEvent,
    Reply,
    ReplyRequest,
    TextEvent,
    guarded,
    is_conversation_id,
    parse_request,
)
from ...errors import FishvoiceError
from ...speech_service import DEFAULT_VOICE, SpeechService, WorkLimit
from ...threads import run_in_thread
from ...voices import speech_from_bytes
from ..http.auth import Auth
from ..http.body import read_json
from ..http.errors import openai_body, status_of
from ..http.fields import as_boolean, as_integer, as_number, invalid
from ..http.responses import OwnedStreamingResponse, sse_event
from .protocol import CHAT_AUDIO_FORMATS, CHAT_BODY, INPUT_AUDIO_FORMATS, MAX_MESSAGES
from .speech import SPEECH_RATE, resolve_voice
from .transcriptions import no_asr

T = TypeVar("T")
AUDIO_EXPIRES_S = 3600
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
    include_usage = _include_usage(raw.get("stream_options"), stream)
    audio_format, voice = _audio_output(raw, stream)
    conversation_id = raw.get("conversation_id")
    if conversation_id is not None and not is_conversation_id(conversation_id):
        raise invalid("conversation_id", CONVERSATION_ID_RULE)
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


def _include_usage(options: Any, stream: bool) -> bool:
    """`stream_options`: whether a streamed reply ends with its usage."""
    if options is None:
        return False
    if not stream:
        raise invalid("stream_options", "only with stream: true")
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise invalid("stream_options", 'must be {"include_usage": true or false}')
    return _optional(options, "include_usage", as_boolean) or False


def _audio_output(raw: dict[str, Any], stream: bool) -> tuple[AudioFormat | None, str]:
    """`modalities` and `audio`: the spoken reply's format (None: text only) and voice."""
    modalities = raw.get("modalities") or ["text"]
    if not isinstance(modalities, list) or sorted(modalities) not in (["text"], ["audio", "text"]):
        raise invalid("modalities", '["text"] or ["text", "audio"]')
    audio = raw.get("audio")
    if "audio" not in modalities:
        if audio is not None:
            raise invalid("audio", 'only with modalities ["text", "audio"]')
        return None, DEFAULT_VOICE
    if not isinstance(audio, dict):
        raise invalid("audio", 'required with the audio modality: {"voice": ..., "format": ...}')
    for name in audio:
        if name not in ("voice", "format"):
            raise invalid(f"audio.{str(name)[:60]}", "unknown parameter")
    voice = audio.get("voice")
    if isinstance(voice, dict) and set(voice) == {"id"}:
        voice = voice["id"]
    if not isinstance(voice, str) or not voice.strip():
        raise invalid("audio.voice", "required: default or a saved voice's id")
    if audio.get("format") not in CHAT_AUDIO_FORMATS:
        formats = ", ".join(CHAT_AUDIO_FORMATS)
        raise invalid("audio.format", f"must be one of {formats} (got {str(audio.get('format'))[:20]!r})")
    audio_format = CHAT_AUDIO_FORMATS[audio["format"]]
    if stream and audio_format != "pcm16":
        raise invalid("audio.format", "streamed audio is pcm16 only")
    return audio_format, voice


async def _message_text(message: _Message, asr: ASR | None, work: WorkLimit) -> str:
    """A message's text: its text parts and the transcripts of its audio parts, in order."""
    texts = []
    for part in message.parts:
        if isinstance(part, str):
            texts.append(part.strip())
            continue
        if asr is None:
            raise no_asr(part.field)
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


def _reply_request(params: ChatParams, message: str, system: str | None, reference_id: str | None) -> ReplyRequest:
    """The assistant's request for the chat, its errors renamed to the chat's parameters."""
    raw: dict[str, Any] = {
        "message": message,
        "system_message": system,
        "conversation_id": params.conversation_id,
        "reference_id": reference_id,
        "temperature": params.temperature,
        "speak": params.audio_format is not None,
        "audio_format": params.audio_format or "pcm16",
        "sample_rate": SPEECH_RATE,
        "max_tokens": params.max_tokens,
    }
    try:
        return parse_request({name: value for name, value in raw.items() if value is not None})
    except FishvoiceError as exc:
        renamed = {"max_tokens": params.tokens_field, "message": "messages", "system_message": "messages"}
        field = renamed.get(exc.field or "", exc.field)
        prefix = f"{exc.field}:"
        text = exc.message[len(prefix) :].strip() if exc.message.startswith(prefix) else exc.message
        raise FishvoiceError(exc.code, f"{field}: {text}", field) from None


def build_chat_router(
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

    @router.post("/v1/chat/completions", openapi_extra=CHAT_BODY)
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
        reply_request = _reply_request(params, message, system, reference_id)
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
