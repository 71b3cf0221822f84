"""The API contract: the request model with its rules, and the events a reply is made of.

Validation runs before any model: every rule of DESIGN.md's table maps to one clear error that
names the field. Types are strict (a boolean is not a number, 1.5 is not an integer).
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .audio import AUDIO_FORMATS, MAX_AUDIO_BASE64_CHARS, MAX_AUDIO_BYTES, SAMPLE_RATES, AudioFormat
from .errors import FishvoiceError

MAX_MESSAGE_CHARS = 8000
MAX_REFERENCE_TEXT_CHARS = 2000
CONVERSATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class ChatMessage(TypedDict):
    """One message of a conversation, as `history` shows it and as the LLM reads it."""

    role: Literal["system", "user", "assistant"]
    content: str


PLANNED_FIELDS = {"user_audio": "speech input", "voice_id": "saved voices"}


class Request(BaseModel):
    """One job's `input`, validated."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    message: str
    system_message: str | None = None
    system_audio: str | None = None
    reference_text: str | None = None
    conversation_id: str | None = None
    temperature: float = 0.7
    max_tokens: int = 512
    audio_format: AudioFormat = "array"
    sample_rate: int = 44100
    speak: bool = True

    @field_validator("message")
    @classmethod
    def _message(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        if len(value) > MAX_MESSAGE_CHARS:
            raise ValueError(f"must be at most {MAX_MESSAGE_CHARS} characters (got {len(value)})")
        return value

    @field_validator("system_message")
    @classmethod
    def _system_message(cls, value: str | None) -> str | None:
        if value is not None and len(value) > MAX_MESSAGE_CHARS:
            raise ValueError(f"must be at most {MAX_MESSAGE_CHARS} characters (got {len(value)})")
        return value.strip() or None if value is not None else None

    @field_validator("system_audio")
    @classmethod
    def _system_audio(cls, value: str | None) -> str | None:
        if value is not None and len(value) > MAX_AUDIO_BASE64_CHARS:
            raise FishvoiceError(
                "payload_too_large", f"system_audio: audio is larger than {MAX_AUDIO_BYTES // 2**20} MB", "system_audio"
            )
        if value is not None and not value.strip():
            raise FishvoiceError("invalid_audio", "system_audio: empty audio", "system_audio")
        return value

    @field_validator("reference_text")
    @classmethod
    def _reference_text(cls, value: str | None) -> str | None:
        if value is not None and len(value) > MAX_REFERENCE_TEXT_CHARS:
            raise ValueError(f"must be at most {MAX_REFERENCE_TEXT_CHARS} characters (got {len(value)})")
        return value.strip() or None if value is not None else None

    @field_validator("conversation_id")
    @classmethod
    def _conversation_id(cls, value: str | None) -> str | None:
        if value is not None and not CONVERSATION_ID.match(value):
            raise ValueError("must be 1 to 128 characters of A-Z a-z 0-9 . _ : -")
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

    @field_validator("sample_rate")
    @classmethod
    def _sample_rate(cls, value: int) -> int:
        if value not in SAMPLE_RATES:
            raise ValueError(f"must be one of {', '.join(map(str, SAMPLE_RATES))} (got {value})")
        return value


_TYPE_NAMES = {
    "string_type": "a string",
    "float_type": "a number",
    "int_type": "an integer",
    "bool_type": "a boolean",
    "literal_error": "one of " + ", ".join(AUDIO_FORMATS),
}


def parse_request(raw: Any) -> Request:
    """Validate a job's `input`; raise FishvoiceError naming the first bad field."""
    if not isinstance(raw, dict):
        raise FishvoiceError("invalid_input", "input: must be a JSON object", "input")
    for name, what in PLANNED_FIELDS.items():
        if name in raw:
            raise FishvoiceError("invalid_input", f"{name}: {what} is not supported yet", name)
    try:
        request = Request.model_validate(raw)
    except ValidationError as exc:
        raise _to_fishvoice_error(exc.errors()[0]) from None
    if request.reference_text and not request.system_audio:
        raise FishvoiceError("invalid_input", "reference_text: given without system_audio", "reference_text")
    return request


def _to_fishvoice_error(error: dict[str, Any]) -> FishvoiceError:
    field = ".".join(str(part) for part in error["loc"]) or "input"
    kind = error["type"]
    if kind == "extra_forbidden":
        hint = difflib.get_close_matches(field, Request.model_fields, n=1)
        suggestion = f"; did you mean {hint[0]}?" if hint else ""
        return FishvoiceError("invalid_input", f"{field}: unknown field{suggestion}", field)
    if kind == "missing":
        return FishvoiceError("invalid_input", f"{field}: required", field)
    if kind in _TYPE_NAMES:
        value = error.get("input")
        got = repr(value)[:40] if kind == "literal_error" else type(value).__name__
        return FishvoiceError("invalid_input", f"{field}: must be {_TYPE_NAMES[kind]} (got {got})", field)
    if kind == "value_error":
        return FishvoiceError("invalid_input", f"{field}: {error['ctx']['error']}", field)
    return FishvoiceError("invalid_input", f"{field}: {error['msg']}", field)


# Events, in the order a reply produces them.
EventType = Literal["text", "audio", "done", "error"]


def text_event(delta: str) -> dict[str, Any]:
    return {"type": "text", "text": delta}


def audio_event(seq: int, data: str, audio_format: str, sample_rate: int, text: str) -> dict[str, Any]:
    return {
        "type": "audio",
        "seq": seq,
        "audio": data,
        "audio_format": audio_format,
        "sample_rate": sample_rate,
        "text": text,
    }


def done_event(response: dict[str, Any]) -> dict[str, Any]:
    return {"type": "done", **response}


def error_event(error: FishvoiceError) -> dict[str, Any]:
    return {"type": "error", **error.to_dict()}
