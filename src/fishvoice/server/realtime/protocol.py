"""The subset of OpenAI's Realtime API that `/v1/realtime` speaks: the session's settings as clients
send them (`session.update`, in the GA shape or the beta's flat one), and the server's events.

Every bad field is an `invalid_input` naming its path (`session.audio.input.turn_detection.threshold`);
fields OpenAI defines that have no meaning here (tools, tracing, noise reduction...) are accepted and
ignored, anything else is refused by name.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from ...contract import MAX_MESSAGE_CHARS
from ...errors import FishvoiceError
from ...speech_service import DEFAULT_VOICE
from ...vad import TurnOptions
from ..http.errors import openai_body, status_of
from ..http.fields import as_boolean, as_integer, as_language, as_number, invalid

REALTIME_RATE = 24000  # pcm16 in and out, as OpenAI's `audio/pcm`
MAX_OUTPUT_TOKENS = 4096
_IGNORED = frozenset(
    {"type", "model", "tools", "tool_choice", "tracing", "include", "prompt", "truncation", "object", "id", "reasoning"}
)
_IGNORED_INPUT = frozenset({"noise_reduction"})


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


@dataclass(frozen=True)
class SessionConfig:
    """What a session's replies follow. `turns` None: push-to-talk (the client commits and asks)."""

    instructions: str | None = None
    voice: str = DEFAULT_VOICE
    turns: TurnOptions | None = field(default_factory=TurnOptions)
    create_response: bool = True
    interrupt_response: bool = True
    temperature: float = 0.7
    max_output_tokens: int = 512
    audio: bool = True  # spoken replies; False: text only
    language: str | None = None  # of the user's speech (ISO 639-1); None: detected each turn

    def to_dict(self, session_id: str) -> dict[str, Any]:
        """The session object of `session.created` / `session.updated`."""
        pcm = {"type": "audio/pcm", "rate": REALTIME_RATE}
        turns = None
        if self.turns is not None:
            turns = {
                "type": "server_vad",
                "threshold": self.turns.threshold,
                "prefix_padding_ms": self.turns.prefix_ms,
                "silence_duration_ms": self.turns.silence_ms,
                "create_response": self.create_response,
                "interrupt_response": self.interrupt_response,
            }
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": "fishvoice",
            "instructions": self.instructions or "",
            "output_modalities": ["audio"] if self.audio else ["text"],
            "max_output_tokens": self.max_output_tokens,
            "audio": {
                "input": {
                    "format": pcm,
                    "turn_detection": turns,
                    "transcription": {"model": "whisper-1", "language": self.language},
                },
                "output": {"format": pcm, "voice": self.voice},
            },
        }


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(path, "must be an object")
    return value


def _check_keys(value: dict[str, Any], path: str, known: set[str] | frozenset[str]) -> None:
    for key in value:
        if key not in known and key not in _IGNORED:
            raise invalid(f"{path}.{str(key)[:60]}", "unknown parameter")


def _pcm_format(value: Any, path: str) -> None:
    """Only pcm16 at 24 kHz: `{"type": "audio/pcm", "rate": 24000}`, or the beta's `"pcm16"`."""
    if value == "pcm16":
        return
    audio_format = _object(value, path)
    _check_keys(audio_format, path, {"type", "rate"})
    if audio_format.get("type") != "audio/pcm" or audio_format.get("rate", REALTIME_RATE) != REALTIME_RATE:
        raise invalid(path, 'only {"type": "audio/pcm", "rate": 24000} (pcm16 at 24 kHz) is supported')


def _turn_detection(value: Any, path: str, config: SessionConfig) -> SessionConfig:
    if value is None:
        return replace(config, turns=None)
    detection = _object(value, path)
    known = {"type", "threshold", "prefix_padding_ms", "silence_duration_ms", "create_response", "interrupt_response"}
    _check_keys(detection, path, known | {"idle_timeout_ms"})
    if detection.get("type", "server_vad") != "server_vad":
        raise invalid(f"{path}.type", f"only server_vad is supported (got {str(detection.get('type'))[:40]!r})")
    turns = config.turns or TurnOptions()
    if "threshold" in detection:
        turns = replace(turns, threshold=as_number(detection["threshold"], f"{path}.threshold", 0.0, 1.0))
    if "prefix_padding_ms" in detection:
        prefix = as_integer(detection["prefix_padding_ms"], f"{path}.prefix_padding_ms", 0, 5000)
        turns = replace(turns, prefix_ms=prefix)
    if "silence_duration_ms" in detection:
        silence = as_integer(detection["silence_duration_ms"], f"{path}.silence_duration_ms", 100, 10000)
        turns = replace(turns, silence_ms=silence)
    config = replace(config, turns=turns)
    if "create_response" in detection:
        config = replace(config, create_response=as_boolean(detection["create_response"], f"{path}.create_response"))
    if "interrupt_response" in detection:
        interrupt = as_boolean(detection["interrupt_response"], f"{path}.interrupt_response")
        config = replace(config, interrupt_response=interrupt)
    return config


def _transcription(value: Any, path: str, config: SessionConfig) -> SessionConfig:
    """`{"model": ..., "language": "en"}`: the language of the user's speech (its detection skipped)."""
    if value is None:
        return config
    given = _object(value, path)
    _check_keys(given, path, {"model", "language", "prompt"})
    language = given.get("language")
    return replace(config, language=None if language is None else as_language(language, f"{path}.language"))


def _modalities(value: Any, path: str) -> bool:
    """True for spoken replies (`["audio"]`, or the beta's `["text", "audio"]`), False for text only."""
    if not isinstance(value, list) or not value or not all(m in ("text", "audio") for m in value):
        raise invalid(path, 'must be ["audio"] or ["text"]')
    return "audio" in value


def _max_tokens(value: Any, path: str) -> int:
    return MAX_OUTPUT_TOKENS if value == "inf" else as_integer(value, path, 1, MAX_OUTPUT_TOKENS)


def _instructions(value: Any, path: str) -> str | None:
    if not isinstance(value, str):
        raise invalid(path, "must be a string")
    if len(value) > MAX_MESSAGE_CHARS:
        raise invalid(path, f"must be at most {MAX_MESSAGE_CHARS} characters (got {len(value)})")
    return value.strip() or None


def _voice(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise invalid(path, "must be a voice's name (default, or a saved voice's id)")
    return value


def update_config(config: SessionConfig, raw: Any) -> SessionConfig:
    """`config` with a `session.update`'s `session` applied (GA fields, or the beta's flat ones)."""
    session = _object(raw, "session")
    flat = {"voice", "input_audio_format", "output_audio_format", "turn_detection", "modalities"}
    known = {"instructions", "audio", "output_modalities", "max_output_tokens", "temperature"}
    _check_keys(session, "session", known | flat | {"max_response_output_tokens", "input_audio_transcription"})
    if "instructions" in session:
        config = replace(config, instructions=_instructions(session["instructions"], "session.instructions"))
    if "temperature" in session:
        config = replace(config, temperature=as_number(session["temperature"], "session.temperature", 0.0, 2.0))
    for name in ("max_output_tokens", "max_response_output_tokens"):
        if name in session:
            config = replace(config, max_output_tokens=_max_tokens(session[name], f"session.{name}"))
    for name in ("output_modalities", "modalities"):
        if name in session:
            config = replace(config, audio=_modalities(session[name], f"session.{name}"))
    for name in ("input_audio_format", "output_audio_format"):
        if name in session:
            _pcm_format(session[name], f"session.{name}")
    if "voice" in session:
        config = replace(config, voice=_voice(session["voice"], "session.voice"))
    if "turn_detection" in session:
        config = _turn_detection(session["turn_detection"], "session.turn_detection", config)
    if "input_audio_transcription" in session:
        config = _transcription(session["input_audio_transcription"], "session.input_audio_transcription", config)
    if "audio" in session:
        config = _audio(session["audio"], config)
    return config


def _audio(raw: Any, config: SessionConfig) -> SessionConfig:
    audio = _object(raw, "session.audio")
    _check_keys(audio, "session.audio", {"input", "output"})
    if "input" in audio:
        given = _object(audio["input"], "session.audio.input")
        _check_keys(given, "session.audio.input", {"format", "turn_detection", "transcription"} | _IGNORED_INPUT)
        if "format" in given:
            _pcm_format(given["format"], "session.audio.input.format")
        if "turn_detection" in given:
            config = _turn_detection(given["turn_detection"], "session.audio.input.turn_detection", config)
        if "transcription" in given:
            config = _transcription(given["transcription"], "session.audio.input.transcription", config)
    if "output" in audio:
        given = _object(audio["output"], "session.audio.output")
        _check_keys(given, "session.audio.output", {"format", "voice", "speed"})
        if "format" in given:
            _pcm_format(given["format"], "session.audio.output.format")
        if "voice" in given:
            config = replace(config, voice=_voice(given["voice"], "session.audio.output.voice"))
        if given.get("speed", 1.0) != 1.0:
            raise invalid("session.audio.output.speed", "only 1.0 is supported in a realtime session")
    return config


def response_overrides(config: SessionConfig, raw: Any) -> SessionConfig:
    """A `response.create`'s `response` settings, for that reply only."""
    if raw is None:
        return config
    response = _object(raw, "response")
    known = {"instructions", "output_modalities", "modalities", "max_output_tokens", "metadata", "conversation"}
    _check_keys(response, "response", known | {"audio", "input", "temperature"})
    if "instructions" in response:
        config = replace(config, instructions=_instructions(response["instructions"], "response.instructions"))
    for name in ("output_modalities", "modalities"):
        if name in response:
            config = replace(config, audio=_modalities(response[name], f"response.{name}"))
    if "max_output_tokens" in response:
        config = replace(
            config, max_output_tokens=_max_tokens(response["max_output_tokens"], "response.max_output_tokens")
        )
    if "temperature" in response:
        config = replace(config, temperature=as_number(response["temperature"], "response.temperature", 0.0, 2.0))
    if response.get("conversation", "auto") not in ("auto",):
        raise invalid("response.conversation", "only auto (the session's conversation) is supported")
    if "input" in response:
        raise invalid("response.input", "replies answer the session's conversation; send conversation.item.create")
    if "audio" in response:
        output = _object(_object(response["audio"], "response.audio").get("output", {}), "response.audio.output")
        if "voice" in output:
            config = replace(config, voice=_voice(output["voice"], "response.audio.output.voice"))
    return config


def error_event(error: FishvoiceError, client_event_id: str | None = None) -> dict[str, Any]:
    """OpenAI's `error` event, with the job API's code and the field at fault."""
    body = openai_body(error, status_of(error))["error"]
    body["event_id"] = client_event_id
    return {"type": "error", "error": body}


def user_item(item_id: str, *, text: str | None = None, transcript: str | None = None) -> dict[str, Any]:
    """A user message item: typed text, or audio with its transcript (None until heard)."""
    content = (
        {"type": "input_text", "text": text}
        if text is not None
        else {"type": "input_audio", "transcript": transcript, "audio": None}
    )
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [content],
    }


def assistant_item(item_id: str, text: str, audio: bool, status: str) -> dict[str, Any]:
    content = {"type": "output_audio", "transcript": text} if audio else {"type": "output_text", "text": text}
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [content],
    }


@dataclass(frozen=True)
class ResponseSummary:
    """A reply as `response.created` / `response.done` describe it."""

    response_id: str
    item_id: str
    audio: bool
    status: str = "in_progress"
    text: str = ""
    reason: str | None = None  # why it was cancelled, or the error it failed with
    usage: tuple[int, int] | None = None
    voice: str = DEFAULT_VOICE
    error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        details: dict[str, Any] | None = None
        if self.status == "cancelled":
            details = {"type": "cancelled", "reason": self.reason}
        elif self.status == "failed":
            details = {"type": "failed", "error": self.error}
        output = (
            [] if self.status == "in_progress" else [assistant_item(self.item_id, self.text, self.audio, "completed")]
        )
        usage = None
        if self.usage is not None:
            prompt, completion = self.usage
            usage = {"total_tokens": prompt + completion, "input_tokens": prompt, "output_tokens": completion}
        return {
            "object": "realtime.response",
            "id": self.response_id,
            "status": self.status,
            "status_details": details,
            "output": output,
            "output_modalities": ["audio"] if self.audio else ["text"],
            "audio": {"output": {"format": {"type": "audio/pcm", "rate": REALTIME_RATE}, "voice": self.voice}},
            "conversation_id": None,
            "usage": usage,
        }
