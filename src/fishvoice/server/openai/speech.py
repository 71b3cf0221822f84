"""OpenAI's speech API over the voice: `POST /v1/audio/speech`, `GET /v1/models`, `GET /v1/audio/voices`.

OpenAI's clients work by changing only their base URL to `<server>/v1`. The request is validated the
way OpenAI does it (an unknown parameter is refused, not ignored) and every error names its parameter
in OpenAI's shape (server/errors.py). The audio streams as it is spoken, sentence by sentence, through
one encoder kept open across the sentences (audio.StreamEncoder): the parts joined are one file.

Choices where fishvoice differs from OpenAI:
- `voice` is `default` (the backend's own voice) or the id of a saved voice of the caller's key (also
  as `{"id": ...}`); OpenAI's preset names (alloy, nova, ...) are refused with the list of voices there
  are, unless the key saved a voice under that name.
- `model` is any id `/v1/models` lists: `fishvoice` and OpenAI's speech model names, all one voice.
- `instructions` are accepted but the voice cannot follow them: the `X-Fishvoice-Warning` header says so.
- The SSE stream's `speech.audio.done` carries `usage` with zero tokens (the voice counts none).

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import math
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from ...audio import MAX_SPEED, MIN_SPEED, StreamEncoder, StreamFormat
from ...contract import WordTiming
from ...errors import FishvoiceError, as_api_error
from ...pipeline import Words
from ...speech_service import DEFAULT_VOICE, OPENAI_VOICES, SpeechService
from ...validation import first_error
from ...voices import VoiceReference
from ..http.auth import Auth
from ..http.body import read_json
from ..http.errors import openai_body, status_of
from ..http.openapi import answers, json_body
from ..http.responses import (
    WARNING_HEADER,
    Encoded,
    OwnedStreamingResponse,
    audio_bytes,
    encoded_speech,
    first_piece,
    sse_event,
)

log = logging.getLogger(__name__)

SPEECH_RATE = 24000  # OpenAI's speech is 24 kHz: what `pcm` promises, and the rate of every other format (opus: 48)
MAX_INPUT_CHARS = 4096
MAX_INSTRUCTIONS_CHARS = 4096
# `fishvoice` first; the rest are OpenAI's speech models, accepted so clients that name one work unchanged.
MODELS: tuple[str, ...] = ("fishvoice", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")
# What /v1/models lists: the speech models, and OpenAI's transcription model (openai_chat.py's routes take any).
LISTED_MODELS: tuple[str, ...] = (*MODELS, "whisper-1")

ResponseFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
RESPONSE_FORMATS: tuple[str, ...] = ("mp3", "opus", "aac", "flac", "wav", "pcm")
ENCODINGS: dict[str, StreamFormat] = {
    "mp3": "mp3",
    "opus": "opus",
    "aac": "aac",
    "flac": "flac",
    "wav": "wav",
    "pcm": "pcm16",
}
MEDIA_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


class SpeechRequest(BaseModel):
    """The body of `POST /v1/audio/speech`, validated; `null` for an optional parameter means its default."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    model: str
    input: str
    voice: str
    instructions: str | None = None
    response_format: ResponseFormat | None = None
    speed: float | None = None
    stream_format: Literal["audio", "sse"] | None = None
    word_timestamps: bool | None = None  # fishvoice's: each speech.audio.delta of an sse stream carries `words`

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        if value not in MODELS:
            raise ValueError(f"unknown model {value[:60]!r}; use one of {', '.join(MODELS)}")
        return value

    @field_validator("input")
    @classmethod
    def _input(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        if len(value) > MAX_INPUT_CHARS:
            raise ValueError(f"must be at most {MAX_INPUT_CHARS} characters (got {len(value)})")
        return value.strip()

    @field_validator("voice", mode="before")
    @classmethod
    def _voice(cls, value: Any) -> Any:
        # OpenAI's custom-voice object, `{"id": "..."}`, names the voice as the plain string does.
        if isinstance(value, dict):
            if set(value) != {"id"} or not isinstance(value["id"], str):
                raise ValueError('must be a voice id or {"id": "<voice id>"}')
            value = value["id"]
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("instructions")
    @classmethod
    def _instructions(cls, value: str | None) -> str | None:
        if value is not None and len(value) > MAX_INSTRUCTIONS_CHARS:
            raise ValueError(f"must be at most {MAX_INSTRUCTIONS_CHARS} characters (got {len(value)})")
        return value.strip() or None if value is not None else None

    @field_validator("speed")
    @classmethod
    def _speed(cls, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and MIN_SPEED <= value <= MAX_SPEED):
            raise ValueError(f"must be between {MIN_SPEED} and {MAX_SPEED} (got {value})")
        return value

    @field_validator("word_timestamps")
    @classmethod
    def _word_timestamps(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        if value and info.data.get("stream_format") != "sse":
            raise ValueError('needs stream_format "sse" (the words go on its events), or /dev/captioned_speech')
        return value


def parse_speech_request(raw: Any) -> SpeechRequest:
    """Validate the body; raise invalid_input naming the first bad parameter."""
    if not isinstance(raw, dict):
        raise FishvoiceError("invalid_input", "body: must be a JSON object", "body")
    try:
        return SpeechRequest.model_validate(raw)
    except ValidationError as exc:
        raise first_error(exc, SpeechRequest, whole="body", unknown="unknown parameter", depth=1) from None


async def voice_ids(speech: SpeechService, namespace: str) -> list[str]:
    """The voices a key can name: `default`, then its saved voices."""
    saved = await speech.store.list_saved_voices(namespace)
    return [DEFAULT_VOICE, *(voice.id for voice in saved if voice.id != DEFAULT_VOICE)]


async def resolve_voice(speech: SpeechService, namespace: str, name: str) -> VoiceReference | None:
    """The voice `name` asks for: None for `default`, else the key's saved voice by that id; anything else
    is invalid_input listing the voices there are."""
    if name == DEFAULT_VOICE:
        return None
    try:
        return await speech.saved_voice(namespace, name, "voice")
    except FishvoiceError as exc:
        if exc.code != "not_found":
            raise
    there = ", ".join(await voice_ids(speech, namespace))
    if name.lower() in OPENAI_VOICES:
        message = f"voice: {name!r} is one of OpenAI's voices, which this server does not have; use one of: {there}"
    else:
        message = f"voice: no voice {name[:60]!r}; use one of: {there}"
    raise FishvoiceError("invalid_input", message, "voice")


def build_openai_router(speech: SpeechService, auth: Auth, *, max_body_bytes: int) -> APIRouter:
    router = APIRouter()
    caller = Depends(auth)
    created = int(time.time())

    def model_object(model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": created, "owned_by": "fishvoice"}

    @router.get("/v1/models")
    async def list_models(namespace: str = caller) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [model_object(model_id) for model_id in LISTED_MODELS]})

    @router.get("/v1/models/{model_id}")
    async def get_model(model_id: str, namespace: str = caller) -> JSONResponse:
        if model_id not in LISTED_MODELS:
            raise FishvoiceError("not_found", f"model: no model {model_id[:60]!r}", "model")
        return JSONResponse(model_object(model_id))

    @router.get("/v1/audio/voices")
    async def list_voices(namespace: str = caller) -> JSONResponse:
        return JSONResponse({"voices": [{"id": name, "name": name} for name in await voice_ids(speech, namespace)]})

    @router.post(
        "/v1/audio/speech",
        openapi_extra=json_body(SpeechRequest),
        responses=answers("the speech, streamed", *MEDIA_TYPES.values(), "text/event-stream"),
    )
    async def create_speech(request: Request, namespace: str = caller) -> Response:
        params = parse_speech_request(await read_json(request, max_body_bytes))
        voice = await resolve_voice(speech, namespace, params.voice)
        timed = bool(params.word_timestamps)
        warnings: list[str] = []
        if params.instructions:
            warnings.append(f"instructions: the {speech.tts.name} voice cannot follow instructions; they were ignored")
        if voice is not None and not speech.tts.can_clone:
            warnings.append(f"voice: the {speech.tts.name} voice cannot clone; its own voice was used")
        response_format = params.response_format or "mp3"
        encoder = StreamEncoder(ENCODINGS[response_format], SPEECH_RATE)
        pieces = speech.spoken(params.input, voice, SPEECH_RATE, params.speed or 1.0, word_timings=timed)
        # The first sentence is spoken before the answer starts, so a failing voice is still an error status.
        first = await first_piece(pieces)
        if first is None:
            warnings.append("input: nothing in it could be spoken")
        headers = {WARNING_HEADER: "; ".join(warnings)} if warnings else {}
        encoded = encoded_speech(first, pieces, encoder)
        if params.stream_format == "sse":
            events = _sse(encoded, timed)
            return OwnedStreamingResponse(
                events, owns=[encoded, pieces], media_type="text/event-stream", headers=headers
            )
        media_type = MEDIA_TYPES[response_format]
        return OwnedStreamingResponse(
            audio_bytes(encoded), owns=[encoded, pieces], media_type=media_type, headers=headers
        )

    return router


async def _sse(encoded: AsyncGenerator[Encoded | Words, None], timed: bool) -> AsyncGenerator[bytes, None]:
    """The audio as OpenAI's server-sent events: `speech.audio.delta` (base64 audio) for each part, then
    `speech.audio.done`; where `timed`, each carries `words`, those timed since the event before. A failure
    midway is an `error` event in OpenAI's error shape, and the end."""
    words: list[WordTiming] = []
    async with aclosing(encoded):
        try:
            async for item in encoded:
                if isinstance(item, Words):
                    words += item.words
                elif item.data:
                    delta = {"type": "speech.audio.delta", "audio": base64.b64encode(item.data).decode("ascii")}
                    yield sse_event(_with_words(delta, words) if timed else delta)
                    words = []
        except Exception as exc:
            error = as_api_error(exc)
            yield sse_event({"type": "error", **openai_body(error, status_of(error))})
            return
    done = {"type": "speech.audio.done", "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}}
    yield sse_event(_with_words(done, words) if timed else done)


def _with_words(event: dict[str, Any], words: list[WordTiming]) -> dict[str, Any]:
    return {**event, "words": [dataclasses.asdict(word) for word in words]}
