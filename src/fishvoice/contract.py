"""The API contract: the request with its rules, the response, and the events a reply is made of.

Validation runs before any model: every rule of the README's request table maps to one clear error that
names the field. Types are strict (a boolean is not a number, 1.5 is not an integer).
"""

from __future__ import annotations

import base64
import logging
import math
import re
import traceback
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import asdict, dataclass
from typing import Any, Literal, NotRequired, TypedDict, TypeGuard

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from .audio import (
    MAX_AUDIO_BASE64_CHARS,
    MAX_AUDIO_BYTES,
    MAX_SPEED,
    MIN_SPEED,
    SAMPLE_RATES,
    Audio,
    AudioFormat,
    ByteFormat,
    encode_bytes,
    to_array,
)
from .errors import FishvoiceError, as_api_error, is_out_of_memory
from .validation import first_error

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 8000
MAX_REFERENCE_TEXT_CHARS = 2000
CONVERSATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
CONVERSATION_ID_RULE = "must be 1 to 128 characters of A-Z a-z 0-9 . _ : -"


def is_conversation_id(value: object) -> TypeGuard[str]:
    """Whether `value` may name a conversation (or a saved voice: the same rule)."""
    return isinstance(value, str) and CONVERSATION_ID.match(value) is not None


class FunctionCall(TypedDict):
    name: str
    arguments: str  # a JSON object, as the model wrote it


class ToolCall(TypedDict):
    """A function the assistant called, as OpenAI's chat API writes it."""

    id: str
    type: Literal["function"]
    function: FunctionCall


class ChatMessage(TypedDict):
    """One message of a conversation, as `history` shows it and as the LLM reads it: an assistant message may
    call functions (`tool_calls`), and a `tool` message answers one of them (`tool_call_id`)."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: NotRequired[list[ToolCall]]
    tool_call_id: NotRequired[str]


def exchange_starts(turns: list[ChatMessage]) -> list[int]:
    """Where each exchange begins: at a user message (the assistant's calls and their results belong to the
    exchange they answer)."""
    return [index for index, turn in enumerate(turns) if turn["role"] == "user"]


def text_field(value: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """A text to answer or speak: trimmed, not empty, at most `limit` characters (a pydantic validator's
    ValueError otherwise, which the error mapping names with its field)."""
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    if len(value) > limit:
        raise ValueError(f"must be at most {limit} characters (got {len(value)})")
    return value


class ReplyRequest(BaseModel):
    """One job's `input`, validated."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    message: str = ""  # empty only when `user_audio` is given: its transcript becomes the message
    user_audio: str | None = None
    system_message: str | None = None
    system_audio: str | None = None
    reference_text: str | None = None
    reference_id: str | None = None
    conversation_id: str | None = None
    temperature: float = 0.7
    max_tokens: int = 512
    audio_format: AudioFormat = "array"
    sample_rate: int = 44100
    speak: bool = True
    speed: float = 1.0
    word_timestamps: bool = False  # the reply's words with when each is heard (`words`)

    @field_validator("message")
    @classmethod
    def _message(cls, value: str) -> str:
        return text_field(value)

    @field_validator("system_message")
    @classmethod
    def _system_message(cls, value: str | None) -> str | None:
        if value is not None and len(value) > MAX_MESSAGE_CHARS:
            raise ValueError(f"must be at most {MAX_MESSAGE_CHARS} characters (got {len(value)})")
        return value.strip() or None if value is not None else None

    @field_validator("system_audio", "user_audio")
    @classmethod
    def _audio(cls, value: str | None, info: ValidationInfo) -> str | None:
        name = str(info.field_name)
        if value is not None and len(value) > MAX_AUDIO_BASE64_CHARS:
            raise FishvoiceError(
                "payload_too_large", f"{name}: audio is larger than {MAX_AUDIO_BYTES // 2**20} MB", name
            )
        if value is not None and not value.strip():
            raise FishvoiceError("invalid_audio", f"{name}: empty audio", name)
        return value

    @field_validator("reference_text")
    @classmethod
    def _reference_text(cls, value: str | None) -> str | None:
        if value is not None and len(value) > MAX_REFERENCE_TEXT_CHARS:
            raise ValueError(f"must be at most {MAX_REFERENCE_TEXT_CHARS} characters (got {len(value)})")
        return value.strip() or None if value is not None else None

    @field_validator("conversation_id", "reference_id")
    @classmethod
    def _conversation_id(cls, value: str | None) -> str | None:
        if value is not None and not is_conversation_id(value):
            raise ValueError(CONVERSATION_ID_RULE)
        return value

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, value: float) -> float:
        if not (math.isfinite(value) and 0.1 <= value <= 1.0):
            raise ValueError(f"must be between 0.1 and 1.0 (got {value})")
        return value

    @field_validator("max_tokens")
    @classmethod
    def _max_tokens(cls, value: int) -> int:
        if not 1 <= value <= 4096:
            raise ValueError(f"must be between 1 and 4096 (got {value})")
        return value

    @field_validator("speed")
    @classmethod
    def _speed(cls, value: float) -> float:
        if not (math.isfinite(value) and MIN_SPEED <= value <= MAX_SPEED):
            raise ValueError(f"must be between {MIN_SPEED} and {MAX_SPEED} (got {value})")
        return value

    @field_validator("sample_rate")
    @classmethod
    def _sample_rate(cls, value: int) -> int:
        if value not in SAMPLE_RATES:
            raise ValueError(f"must be one of {', '.join(map(str, SAMPLE_RATES))} (got {value})")
        return value


def parse_request(raw: Any) -> ReplyRequest:
    """Validate a job's `input`; raise FishvoiceError naming the first bad field."""
    if not isinstance(raw, dict):
        raise FishvoiceError("invalid_input", "input: must be a JSON object", "input")
    if "user_audio" in raw and raw.get("user_audio") is not None and "message" in raw:
        raise FishvoiceError(
            "invalid_input",
            "user_audio, message: give the message as text (message) or as speech (user_audio), not both",
            "user_audio",
        )
    if "message" not in raw and raw.get("user_audio") is None:
        raise FishvoiceError("invalid_input", "message: required (or user_audio, the message as speech)", "message")
    try:
        request = ReplyRequest.model_validate(raw)
    except ValidationError as exc:
        raise first_error(exc, ReplyRequest, whole="input") from None
    if request.reference_id is not None:
        for other in ("system_audio", "reference_text"):
            if getattr(request, other) is not None:
                raise FishvoiceError(
                    "invalid_input",
                    f"reference_id, {other}: give a saved voice (reference_id) or system_audio with its"
                    " reference_text, not both",
                    "reference_id",
                )
    if request.reference_text and not request.system_audio:
        raise FishvoiceError("invalid_input", "reference_text: given without system_audio", "reference_text")
    return request


# The response: the job's output, and the events a reply is made of, serialised at the edge by `to_dict`.


@dataclass(frozen=True)
class Usage:
    """Token counts of one reply (the LLM's stream ends with one)."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a function call as the LLM streams it: the call's first piece names it (`id`, `name`), the
    next ones add to its `arguments` (calls are numbered by `index`, as OpenAI's chat stream does)."""

    index: int
    arguments: str
    id: str | None = None
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"type": "tool_call", **asdict(self)}

    def add_to(self, calls: dict[int, ToolCall], make_id: Callable[[], str] = str) -> bool:
        """Adds this piece to the calls gathered so far, by index; True when it begins one (whose id is the LLM's,
        else `make_id()`)."""
        call = calls.get(self.index)
        if call is None:
            function: FunctionCall = {"name": self.name or "", "arguments": ""}
            call = calls[self.index] = {"id": self.id or make_id(), "type": "function", "function": function}
            begun = True
        else:
            call["id"] = self.id or call["id"]
            call["function"]["name"] = self.name or call["function"]["name"]
            begun = False
        call["function"]["arguments"] += self.arguments
        return begun


@dataclass(frozen=True)
class Tools:
    """The functions a reply may call, as OpenAI's chat API lists them ({"type": "function", "function":
    {name, description, parameters}}), and how it chooses: "auto", "none", "required", or the name of the one
    function it must call."""

    functions: tuple[dict[str, Any], ...]
    choice: str = "auto"

    def named(self, name: str) -> dict[str, Any] | None:
        return next((f["function"] for f in self.functions if f["function"]["name"] == name), None)

    @property
    def offered(self) -> bool:
        """Whether the model is offered any function."""
        return bool(self.functions) and self.choice != "none"


# What an LLM's stream yields, defined once for every backend and the pipeline: the reply's text deltas and
# function calls' pieces as they come, then one Usage.
LLMItem = str | ToolCallDelta | Usage


@dataclass(frozen=True)
class VoiceInfo:
    backend: str
    cloned: bool


@dataclass(frozen=True)
class Timings:
    """Milliseconds from the request's start: to the first audio (None without audio), in the LLM,
    in the voice, and in all; in speech recognition only where it ran (serialised only then)."""

    first_audio: int | None
    llm: int
    tts: int
    total: int
    asr: int | None = None


@dataclass(frozen=True)
class TranscriptInfo:
    """What was heard in `user_audio`: its text and language."""

    text: str
    language: str


@dataclass(frozen=True)
class WordTiming:
    """Where a word of the reply is heard: seconds from the start of its audio (after `speed`)."""

    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Reply:
    """A completed reply, as the README's response table shows it."""

    text: str
    audio: str | list[float] | None
    audio_format: AudioFormat
    sample_rate: int
    duration_s: float
    history: list[ChatMessage]
    conversation_id: str | None
    voice: VoiceInfo
    usage: Usage
    timings_ms: Timings
    warnings: list[str]
    transcript: TranscriptInfo | None = None  # present when the request carried user_audio
    words: list[WordTiming] | None = None  # present when the request asked for word_timestamps

    def to_dict(self) -> dict[str, Any]:
        """The response's fields; `transcript` and `timings_ms.asr` only where speech was recognised, and
        `words` where they were asked for, so a reply to a text message keeps exactly its keys."""
        body = asdict(self)
        for optional in ("transcript", "words"):
            if body[optional] is None:
                del body[optional]
        if body["timings_ms"]["asr"] is None:
            del body["timings_ms"]["asr"]
        return body


@dataclass(frozen=True)
class TranscriptEvent:
    """The first event of a reply to speech: what was heard, before the reply's first text."""

    text: str
    language: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": "transcript", "text": self.text, "language": self.language}


@dataclass(frozen=True)
class TextEvent:
    """A piece of the reply's text, as the LLM writes it."""

    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": "text", "text": self.text}


@dataclass(frozen=True)
class AudioEvent:
    """A spoken piece of the reply (base64 in `audio_format`), with the text it speaks."""

    seq: int
    audio: str
    audio_format: AudioFormat
    sample_rate: int
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": "audio", **asdict(self)}


@dataclass(frozen=True)
class WordsEvent:
    """The timings of a spoken chunk's words (asked for by `word_timestamps`), after its audio events."""

    words: tuple[WordTiming, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "words", "words": [asdict(word) for word in self.words]}


@dataclass(frozen=True)
class DoneEvent:
    """The last event of a completed reply: the whole response."""

    response: Reply

    def to_dict(self) -> dict[str, Any]:
        return {"type": "done", **self.response.to_dict()}


@dataclass(frozen=True)
class ErrorEvent:
    """The last event of a failed reply. `refresh_worker` asks RunPod for a fresh worker after the job."""

    error: FishvoiceError
    trace: str | None = None
    refresh_worker: bool = False

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": "error", **self.error.to_dict()}
        if self.trace is not None:
            body["trace"] = self.trace
        if self.refresh_worker:
            body["refresh_worker"] = True
        return body


def encode_chunk(seq: int, audio: Audio, text: str, request: ReplyRequest) -> AudioEvent:
    """A spoken piece as an event, in the request's format (an `array` reply streams its pieces as pcm16)."""
    audio_format: ByteFormat = "pcm16" if request.audio_format == "array" else request.audio_format
    data, sample_rate = encode_bytes(audio, audio_format)
    return AudioEvent(seq, base64.b64encode(data).decode("ascii"), audio_format, sample_rate, text)


def encode_reply_audio(audio: Audio, audio_format: AudioFormat) -> tuple[str | list[float], int]:
    """The whole reply's audio as the response carries it (base64, or floats for `array`), and its rate."""
    if audio_format == "array":
        return to_array(audio), audio.sample_rate
    data, sample_rate = encode_bytes(audio, audio_format)
    return base64.b64encode(data).decode("ascii"), sample_rate


ReplyEvent = TranscriptEvent | TextEvent | ToolCallDelta | AudioEvent | WordsEvent | DoneEvent
Event = ReplyEvent | ErrorEvent


def error_event(exc: BaseException, *, debug: bool = False) -> ErrorEvent:
    """Any failure as the contract tells it: a FishvoiceError as it is; out of GPU memory as
    `backend_unavailable` with a fresh worker asked for (memory may stay fragmented or leaked); anything
    else as `internal`, with its stack trace where `debug` is on. Unexpected failures are logged whole."""
    if isinstance(exc, FishvoiceError):
        log.warning("request failed: %s (%s)", exc.message, exc.code)
        return ErrorEvent(exc)
    log.error("request failed unexpectedly", exc_info=exc)
    if is_out_of_memory(exc):
        return ErrorEvent(
            FishvoiceError("backend_unavailable", "out of GPU memory; the worker will be replaced"), refresh_worker=True
        )
    trace = "".join(traceback.format_exception(exc)) if debug else None
    return ErrorEvent(as_api_error(exc), trace)


async def guarded(events: AsyncGenerator[ReplyEvent, None], *, debug: bool = False) -> AsyncGenerator[Event, None]:
    """The reply's events, ending in an ErrorEvent instead of raising: what the edges send on.
    Closing this closes the reply (which then stores nothing)."""
    async with aclosing(events):
        try:
            async for event in events:
                yield event
        except Exception as exc:
            yield error_event(exc, debug=debug)
