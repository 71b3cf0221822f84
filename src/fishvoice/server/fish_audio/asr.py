"""Fish Audio's speech recognition, `POST /v1/asr`: an audio file in, what was said out, as Fish's API and
its SDK (`client.asr.transcribe`) speak it.

The body is MessagePack (what the SDK sends: `audio` as bytes), a multipart form (`audio` a file), or
JSON (`audio` as base64); with `language` (ISO 639-1; else detected) and `ignore_timestamps` (true: no
segments). The answer is `{text, duration, segments: [{text, start, end}], language}`: `duration` in
milliseconds as the SDK reads it, segments' times in seconds. The limits are `/v1/audio/transcriptions`':
the body's size, 60 s of audio, the server's limit on work at once; errors are OpenAI's shape, as on every
/v1/* route.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ... import metrics
from ...asr.base import ASR, Transcript
from ...errors import FishvoiceError
from ...speech_service import SpeechService, no_asr
from ...threads import run_in_thread
from ...validation import first_error
from ...voices import speech_from_bytes
from ..http.auth import Auth
from ..http.body import FORM_TYPES, form_items, media_type, read_body
from ..http.fields import LanguageCode
from ..http.openapi import answers, json_body
from .body import MSGPACK_TYPES, decode_body


class FishASRRequest(BaseModel):
    """The body of `POST /v1/asr`."""

    model_config = ConfigDict(extra="forbid")
    audio: bytes = Field(description="the audio file (bytes; base64 in JSON)")
    language: LanguageCode | None = Field(None, description="ISO 639-1 code; else detected")
    ignore_timestamps: bool = Field(False, description="true: no segments")


class FishASRSegment(BaseModel):
    text: str
    start: float = Field(description="seconds from the audio's start")
    end: float


class FishASRAnswer(BaseModel):
    text: str
    duration: float = Field(description="the audio's length, in milliseconds")
    segments: list[FishASRSegment]
    language: str = Field(description="the language heard (ISO 639-1), or the one asked for")


async def read_asr_request(request: Request, max_bytes: int) -> FishASRRequest:
    body = await read_body(request, max_bytes, "audio")
    media = media_type(request)
    if media in FORM_TYPES:
        fields: Any = {name: value for name, value in await form_items(request, body, max_files=1) if value != ""}
    else:
        fields = decode_body(body, media)
        if not isinstance(fields, dict):
            raise FishvoiceError("invalid_input", "body: must be an object of fields", "body")
        if media not in MSGPACK_TYPES and isinstance(fields.get("audio"), str):
            fields["audio"] = _base64_audio(fields["audio"])
    if "audio" not in fields:
        raise FishvoiceError("invalid_audio", "audio: required (the audio file)", "audio")
    if not isinstance(fields["audio"], bytes):
        raise FishvoiceError("invalid_audio", "audio: must be the audio file's bytes", "audio")
    try:
        return FishASRRequest.model_validate(fields)
    except ValidationError as exc:
        raise first_error(exc, FishASRRequest, whole="body", unknown="unknown parameter", depth=1) from None


def _base64_audio(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FishvoiceError("invalid_audio", "audio: must be the audio file in base64", "audio") from None


def asr_answer(transcript: Transcript, with_segments: bool) -> FishASRAnswer:
    segments = [
        FishASRSegment(text=segment.text.strip(), start=round(segment.start, 3), end=round(segment.end, 3))
        for segment in transcript.segments
        if with_segments and segment.text.strip()
    ]
    return FishASRAnswer(
        text=transcript.text.strip(),
        duration=round(transcript.duration_s * 1000, 1),
        segments=segments,
        language=transcript.language,
    )


def build_asr_router(speech: SpeechService, asr: ASR | None, auth: Auth, max_body_bytes: int) -> APIRouter:
    router = APIRouter()

    @router.post(
        "/v1/asr",
        openapi_extra=json_body(FishASRRequest, *MSGPACK_TYPES, "multipart/form-data"),
        responses=answers("what was said", model=FishASRAnswer),
    )
    async def transcribe(request: Request, namespace: str = Depends(auth)) -> JSONResponse:
        fields = await read_asr_request(request, max_body_bytes)
        if asr is None:
            raise no_asr("audio")
        audio = await run_in_thread(speech_from_bytes, fields.audio, "audio", 0)
        async with speech.work:
            with metrics.hearing():
                transcript = await run_in_thread(asr.transcribe, audio, language=fields.language, prompt=None)
        return JSONResponse(asr_answer(transcript, not fields.ignore_timestamps).model_dump())

    return router
