"""The subset of OpenAI's Realtime API that `/v1/realtime` speaks: the session's settings and the events
the server sends, in OpenAI's shapes. What clients send is in client_events.py.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from ...contract import ToolCall, Tools
from ...errors import FishvoiceError
from ...speech_service import DEFAULT_VOICE
from ...vad import TurnOptions
from ..http.errors import openai_body, status_of

REALTIME_RATE = 24000  # pcm16 in and out, as OpenAI's `audio/pcm`
AudioFormatName = Literal["pcm", "pcmu", "pcma"]  # audio/pcm (pcm16 at 24 kHz), G.711 mu-law and A-law at 8 kHz


def format_object(name: AudioFormatName) -> dict[str, Any]:
    """A format as the session object shows it."""
    return {"type": "audio/pcm", "rate": REALTIME_RATE} if name == "pcm" else {"type": f"audio/{name}"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


# fishvoice's own event, for a session with `word_timestamps`: a spoken chunk's words, seconds of the reply's
# audio, after its audio deltas (OpenAI's clients ignore an event they do not know).
WORDS_EVENT = "response.output_audio.words"


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
    word_timestamps: bool = False  # fishvoice's: send each spoken chunk's words' timings
    input_format: AudioFormatName = "pcm"
    output_format: AudioFormatName = "pcm"
    speed: float = 1.0  # of the spoken replies, pitch kept
    kind: Literal["realtime", "transcription"] = "realtime"  # a transcription session hears turns, answers none
    tools: Tools = field(default_factory=lambda: Tools(()))  # the functions replies may call

    @property
    def answers_turns(self) -> bool:
        return self.create_response and self.kind == "realtime"

    def to_dict(self, session_id: str) -> dict[str, Any]:
        """The session object of `session.created` / `session.updated`."""
        heard = {
            "format": format_object(self.input_format),
            "turn_detection": self._turn_detection(),
            "transcription": {"model": "whisper-1", "language": self.language},
        }
        if self.kind == "transcription":
            audio = {"input": heard}
            return {
                "type": "transcription",
                "object": "realtime.transcription_session",
                "id": session_id,
                "audio": audio,
            }
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": "fishvoice",
            "instructions": self.instructions or "",
            "output_modalities": ["audio"] if self.audio else ["text"],
            "max_output_tokens": self.max_output_tokens,
            "tools": [{"type": "function", **f["function"]} for f in self.tools.functions],
            "tool_choice": self._tool_choice(),
            "audio": {
                "input": heard,
                "output": {"format": format_object(self.output_format), "voice": self.voice, "speed": self.speed},
            },
            **({"word_timestamps": True} if self.word_timestamps else {}),
        }

    def _tool_choice(self) -> str | dict[str, str]:
        choice = self.tools.choice
        return choice if choice in ("auto", "none", "required") else {"type": "function", "name": choice}

    def _turn_detection(self) -> dict[str, Any] | None:
        turns: dict[str, Any] | None = None
        replies = {"create_response": self.create_response, "interrupt_response": self.interrupt_response}
        if self.turns is not None and self.turns.eagerness is not None:
            turns = {"type": "semantic_vad", "eagerness": self.turns.eagerness, **replies}
        elif self.turns is not None:
            turns = {
                "type": "server_vad",
                "threshold": self.turns.threshold,
                "prefix_padding_ms": self.turns.prefix_ms,
                "silence_duration_ms": self.turns.silence_ms,
                "idle_timeout_ms": self.turns.idle_ms,
                **replies,
            }
        return turns


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


def function_call_item(item_id: str, call: ToolCall, status: str) -> dict[str, Any]:
    """A function the reply calls, as a conversation item."""
    function = call["function"]
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call",
        "status": status,
        "name": function["name"],
        "call_id": call["id"],
        "arguments": function["arguments"],
    }


def function_output_item(item_id: str, call_id: str, output: str) -> dict[str, Any]:
    """A called function's result, as the client added it."""
    kind = {"type": "function_call_output", "call_id": call_id, "output": output}
    return {"id": item_id, "object": "realtime.item", "status": "completed", **kind}


@dataclass(frozen=True)
class OutOfBand:
    """What a `response.create` says beyond settings: its metadata, and whether it stands outside the
    conversation (`alone`), answering `message` (its `input`), else what the user said since the last reply."""

    metadata: dict[str, str] | None = None
    alone: bool = False
    message: str | None = None


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
    audio_format: AudioFormatName = "pcm"
    metadata: dict[str, str] | None = None  # the client's, returned as given
    calls: tuple[dict[str, Any], ...] = ()  # the function_call items it made
    message: bool = True  # whether it has a message (a reply that only calls has none)

    def to_dict(self) -> dict[str, Any]:
        details: dict[str, Any] | None = None
        if self.status == "cancelled":
            details = {"type": "cancelled", "reason": self.reason}
        elif self.status == "failed":
            details = {"type": "failed", "error": self.error}
        said = [assistant_item(self.item_id, self.text, self.audio, "completed")] if self.message else []
        output = [] if self.status == "in_progress" else [*said, *self.calls]
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
            "audio": {"output": {"format": format_object(self.audio_format), "voice": self.voice}},
            "conversation_id": None,
            "metadata": self.metadata,
            "usage": usage,
        }
