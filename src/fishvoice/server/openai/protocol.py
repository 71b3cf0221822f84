"""The shapes of OpenAI's chat completions request as this server takes it: what `/openapi.json` shows
of the body (the route checks it by hand, naming each bad parameter as OpenAI does)."""

from __future__ import annotations

from ...audio import AudioFormat
from ..http.openapi import schema_body

MAX_MESSAGES = 256
INPUT_AUDIO_FORMATS = ("wav", "mp3")
CHAT_AUDIO_FORMATS: dict[str, AudioFormat] = {
    "wav": "wav",
    "mp3": "mp3",
    "flac": "flac",
    "opus": "opus",
    "pcm16": "pcm16",
}

_PART = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["text", "input_audio"]},
        "text": {"type": "string"},
        "input_audio": {
            "type": "object",
            "required": ["data", "format"],
            "properties": {"data": {"type": "string"}, "format": {"type": "string", "enum": list(INPUT_AUDIO_FORMATS)}},
        },
    },
}
_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant"]},
        "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": _PART, "minItems": 1}]},
        "name": {"type": "string"},
    },
}
CHAT_BODY = schema_body(
    {
        "type": "object",
        "required": ["model", "messages"],
        "additionalProperties": False,
        "properties": {
            "model": {"type": "string", "description": "an id /v1/models lists"},
            "messages": {"type": "array", "items": _MESSAGE, "minItems": 1, "maxItems": MAX_MESSAGES},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "max_tokens": {"type": "integer", "minimum": 1},
            "max_completion_tokens": {"type": "integer", "minimum": 1},
            "stream": {"type": "boolean"},
            "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
            "modalities": {"type": "array", "items": {"type": "string", "enum": ["text", "audio"]}},
            "audio": {
                "type": "object",
                "properties": {
                    "voice": {"type": "string", "description": "default, or a saved voice's id"},
                    "format": {"type": "string", "enum": list(CHAT_AUDIO_FORMATS)},
                },
            },
            "conversation_id": {"type": "string", "description": "answer within this stored conversation"},
            "n": {"type": "integer", "enum": [1]},
            "user": {"type": "string"},
        },
    }
)
