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
  store, the last user message is the new turn, and the turn is stored once the reply completed (a turn
  that calls functions, once the reply to their results completed).
- `tools`: the embedded llama.cpp model writes a forced call (`tool_choice` "required" or a named function)
  under its arguments' JSON schema, and answers `auto` in words; an OpenAI-compatible LLM chooses itself.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from pydantic_core import ErrorDetails

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
    ToolCall,
    ToolCallDelta,
    Tools,
    guarded,
    is_conversation_id,
    parse_request,
)
from ...errors import FishvoiceError
from ...speech_service import DEFAULT_VOICE, SpeechService, WorkLimit, no_asr
from ...threads import run_in_thread
from ...validation import field_error
from ...voices import speech_from_bytes
from ..http.auth import Auth
from ..http.body import read_json
from ..http.errors import openai_body, status_of
from ..http.fields import invalid
from ..http.openapi import answers, json_body
from ..http.responses import OwnedStreamingResponse, sse_event
from .protocol import CHAT_AUDIO_FORMATS, ChatCompletionRequest, Message, NamedToolChoice, StreamOptions, TextPart
from .speech import SPEECH_RATE, resolve_voice

AUDIO_EXPIRES_S = 3600
# Chat completions


@dataclass(frozen=True)
class _AudioPart:
    field: str
    data: str
    format: str


_Part = str | _AudioPart


@dataclass(frozen=True)
class _Message:
    role: Literal["system", "user", "assistant", "tool"]
    parts: list[_Part]
    calls: list[ToolCall]  # an assistant message's function calls
    call_id: str | None = None  # the call a tool message answers


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
    tools: Tools | None


def parse_chat(raw: Any, models: tuple[str, ...]) -> ChatParams:
    """Validate the body; raise invalid_input naming the first bad parameter as OpenAI names it."""
    if not isinstance(raw, dict):
        raise invalid("body", "must be a JSON object")
    try:
        body = ChatCompletionRequest.model_validate(raw)
    except ValidationError as exc:
        raise _chat_error(exc.errors()[0]) from None
    if body.model not in models:
        raise invalid("model", f"unknown model {body.model[:60]!r}; use one of {', '.join(models)}")
    if body.n is not None and body.n != 1:
        raise invalid("n", f"only 1 choice is made (got {body.n})")
    if body.conversation_id is not None and not is_conversation_id(body.conversation_id):
        raise invalid("conversation_id", CONVERSATION_ID_RULE)
    stream = bool(body.stream)
    audio_format, voice = _audio_output(body, stream)
    tokens_field = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    return ChatParams(
        model=body.model,
        messages=_messages(body.messages),
        temperature=0.7 if body.temperature is None else min(1.0, max(0.1, body.temperature)),
        max_tokens=body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens,
        tokens_field=tokens_field,
        stream=stream,
        include_usage=_include_usage(body.stream_options, stream),
        audio_format=audio_format,
        voice=voice.strip(),
        conversation_id=body.conversation_id,
        tools=_tools(body),
    )


def _tools(body: ChatCompletionRequest) -> Tools | None:
    """`tools` and `tool_choice` as the LLM takes them."""
    if not body.tools:
        if body.tool_choice not in (None, "none", "auto"):
            raise invalid("tool_choice", "a function can be required only with tools")
        return None
    names = [tool.function.name for tool in body.tools]
    if len(set(names)) < len(names):
        raise invalid("tools", "each function needs a name of its own")
    choice = body.tool_choice or "auto"
    if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
        raise invalid("tool_choice.function.name", f"no function {choice.function.name[:64]!r} in tools")
    named = choice.function.name if isinstance(choice, NamedToolChoice) else choice
    functions = tuple({"type": "function", "function": t.function.model_dump(exclude_none=True)} for t in body.tools)
    return Tools(functions, named)


def _chat_error(error: ErrorDetails) -> FishvoiceError:
    """A validation error with OpenAI's name of the parameter (`messages[0].content[1].type`)."""
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):  # a content part of no known type
        where = field_error(error, ChatCompletionRequest, whole="body", brackets=True).field
        return invalid(f"{where}.type", "must be text or input_audio")
    return field_error(error, ChatCompletionRequest, whole="body", unknown="unknown parameter", brackets=True)


def _messages(messages: list[Message]) -> list[_Message]:
    """The messages as the assistant takes them (developer is system), their audio parts to be heard."""
    taken = []
    for number, message in enumerate(messages):
        where = f"messages[{number}]"
        if message.role == "assistant" and message.audio is not None:
            raise invalid(f"{where}.audio", "a previous reply's audio is not kept here; send its transcript as content")
        _check_calls(message, where)
        content = [message.content or ""] if not isinstance(message.content, list) else message.content
        parts: list[_Part] = []
        for index, part in enumerate(content):
            if isinstance(part, str | TextPart):
                parts.append(part if isinstance(part, str) else part.text)
                continue
            if message.role != "user":
                raise invalid(f"{where}.content[{index}].type", "input_audio parts are for user messages")
            audio = part.input_audio
            parts.append(_AudioPart(f"{where}.content[{index}].input_audio", audio.data, audio.format))
        calls: list[ToolCall] = [call.model_dump() for call in message.tool_calls or []]  # type: ignore[misc]
        role = "system" if message.role == "developer" else message.role
        taken.append(_Message(role, parts, calls, message.tool_call_id))
    if taken[-1].role not in ("user", "tool"):
        raise invalid("messages", "the last message must be the user's, or a function's result")
    return taken


def _check_calls(message: Message, where: str) -> None:
    """The fields of function calling are where they belong: calls in assistant messages, results in tool ones."""
    if message.tool_calls and message.role != "assistant":
        raise invalid(f"{where}.tool_calls", "only an assistant message calls functions")
    if message.role == "tool" and not message.tool_call_id:
        raise invalid(f"{where}.tool_call_id", "required: the id of the call this is the result of")
    if message.content is None and not (message.role == "assistant" and message.tool_calls):
        raise invalid(f"{where}.content", "required (only an assistant message that calls functions may omit it)")


def _include_usage(options: StreamOptions | None, stream: bool) -> bool:
    """`stream_options`: whether a streamed reply ends with its usage."""
    if options is None:
        return False
    if not stream:
        raise invalid("stream_options", "only with stream: true")
    return bool(options.include_usage)


def _audio_output(body: ChatCompletionRequest, stream: bool) -> tuple[AudioFormat | None, str]:
    """`modalities` and `audio`: the spoken reply's format (None: text only) and voice."""
    modalities = body.modalities or ["text"]
    if sorted(modalities) not in (["text"], ["audio", "text"]):
        raise invalid("modalities", '["text"] or ["text", "audio"]')
    if "audio" not in modalities:
        if body.audio is not None:
            raise invalid("audio", 'only with modalities ["text", "audio"]')
        return None, DEFAULT_VOICE
    if body.audio is None:
        raise invalid("audio", 'required with the audio modality: {"voice": ..., "format": ...}')
    voice = body.audio.voice if isinstance(body.audio.voice, str) else body.audio.voice.id
    if not voice.strip():
        raise invalid("audio.voice", "required: default or a saved voice's id")
    audio_format = CHAT_AUDIO_FORMATS[body.audio.format]
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
) -> tuple[str | None, list[ChatMessage], str, list[ChatMessage]]:
    """The system message, the turns before the last user message, that message's text, and what followed it
    (the assistant's function calls and their results, which the reply goes on from)."""
    system: list[str] = []
    turns: list[tuple[int, ChatMessage]] = []
    for number, message in enumerate(params.messages):
        text = await _message_text(message, asr, work)
        if len(text) > MAX_MESSAGE_CHARS:
            raise invalid(
                f"messages[{number}].content", f"must be at most {MAX_MESSAGE_CHARS} characters (got {len(text)})"
            )
        if message.role == "system":
            system.append(text)
        elif text or message.calls or message.role != "assistant":
            turns.append((number, _chat_message(message, text)))
    asked = max((at for at, (_, turn) in enumerate(turns) if turn["role"] == "user"), default=None)
    if asked is None:
        raise invalid("messages", "a user message is needed")
    number, last = turns[asked]
    if not last["content"]:
        raise invalid(f"messages[{number}].content", "must not be empty")
    before, after = [turn for _, turn in turns[:asked]], [turn for _, turn in turns[asked + 1 :]]
    return "\n\n".join(part for part in system if part) or None, before, last["content"], after


def _chat_message(message: _Message, text: str) -> ChatMessage:
    if message.role == "tool":
        return {"role": "tool", "content": text, "tool_call_id": message.call_id or ""}
    if message.calls:
        return {"role": "assistant", "content": text, "tool_calls": message.calls}
    return {"role": "user" if message.role == "user" else "assistant", "content": text}


def _finish_reason(reply: Reply, max_tokens: int) -> str:
    if _calls(reply):
        return "tool_calls"
    return "length" if reply.usage.completion_tokens >= max_tokens else "stop"


def _calls(reply: Reply) -> list[ToolCall]:
    """The functions the reply called (its message is the history's last)."""
    return reply.history[-1].get("tool_calls", []) if reply.history else []


def _call_delta(delta: ToolCallDelta) -> dict[str, Any]:
    """A piece of a call as the chat stream sends it: the first names it, the next add arguments."""
    if delta.id is None:
        return {"index": delta.index, "function": {"arguments": delta.arguments}}
    function = {"name": delta.name, "arguments": delta.arguments}
    return {"index": delta.index, "id": delta.id, "type": "function", "function": function}


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
        if calls := _calls(reply):
            message.update(content=reply.text or None, tool_calls=calls)
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
            elif isinstance(event, ToolCallDelta):
                yield completion.chunk({"tool_calls": [_call_delta(event)]})
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

    @router.post(
        "/v1/chat/completions",
        openapi_extra=json_body(ChatCompletionRequest),
        responses=answers("the chat completion (JSON), or its chunks (stream: true)", "text/event-stream"),
    )
    async def create_chat_completion(request: Request, namespace: str = caller) -> Response:
        params = parse_chat(await read_json(request, max_body_bytes), models)
        reference_id = None
        if params.audio_format is not None and params.voice != DEFAULT_VOICE:
            try:
                await resolve_voice(speech, namespace, params.voice)
            except FishvoiceError as exc:
                raise FishvoiceError(exc.code, f"audio.{exc.message}", "audio.voice") from None
            reference_id = params.voice
        system, turns, message, calls = await _conversation(params, asr, speech.work)
        reply_request = _reply_request(params, message, system, reference_id)
        history = None if params.conversation_id else turns
        completion = _Completion(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=params.model,
            audio_id=f"audio_{uuid.uuid4().hex}" if params.audio_format is not None else None,
            max_tokens=reply_request.max_tokens,
        )
        events = assistant.respond(reply_request, namespace, history=history, tools=params.tools, calls=calls)
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
