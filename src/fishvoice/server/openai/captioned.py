"""Kokoro-FastAPI's captioned speech, `POST /dev/captioned_speech`, for its clients: the speech with when each
word is heard. The body is OpenAI's speech request plus Kokoro's `stream` (true by default) and
`return_timestamps` (true by default); `model` and `voice` may be left out (fishvoice's own). Streamed, the
answer is one JSON object a line, `{"audio": base64, "audio_format", "timestamps": [{"word", "start_time",
"end_time"}]}`, each part of the audio with the words timed since the line before (the last line carries
the rest); whole, one such object. Times are seconds of the whole audio, after `speed`.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError, field_validator

from ...audio import StreamEncoder
from ...contract import WordTiming
from ...errors import FishvoiceError
from ...pipeline import Words
from ...speech_service import DEFAULT_VOICE, SpeechService
from ...validation import first_error
from ..http.auth import Auth
from ..http.body import read_json
from ..http.openapi import answers, json_body
from ..http.responses import WARNING_HEADER, Encoded, OwnedStreamingResponse, encoded_speech, first_piece
from .speech import ENCODINGS, MEDIA_TYPES, MODELS, SPEECH_RATE, SpeechRequest, resolve_voice

KOKORO_MODELS = ("kokoro", *MODELS)


class CaptionedSpeechRequest(SpeechRequest):
    """The body of `POST /dev/captioned_speech`: Kokoro's captioned speech request."""

    model: str = "fishvoice"
    voice: str = DEFAULT_VOICE
    stream: bool = True
    return_timestamps: bool = True

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        if value not in KOKORO_MODELS:
            raise ValueError(f"unknown model {value[:60]!r}; use one of {', '.join(KOKORO_MODELS)}")
        return value


def parse_captioned_request(raw: Any) -> CaptionedSpeechRequest:
    if not isinstance(raw, dict):
        raise FishvoiceError("invalid_input", "body: must be a JSON object", "body")
    try:
        return CaptionedSpeechRequest.model_validate(raw)
    except ValidationError as exc:
        raise first_error(exc, CaptionedSpeechRequest, whole="body", unknown="unknown parameter", depth=1) from None


def build_captioned_router(speech: SpeechService, auth: Auth, *, max_body_bytes: int) -> APIRouter:
    router = APIRouter()

    @router.post(
        "/dev/captioned_speech",
        response_model=None,
        openapi_extra=json_body(CaptionedSpeechRequest),
        responses=answers("the speech and its words' timings, one JSON object a line where streamed"),
    )
    async def captioned_speech(request: Request, namespace: str = Depends(auth)) -> Response:
        params = parse_captioned_request(await read_json(request, max_body_bytes))
        voice = await resolve_voice(speech, namespace, params.voice)
        response_format = params.response_format or "mp3"
        encoder = StreamEncoder(ENCODINGS[response_format], SPEECH_RATE)
        timed = params.return_timestamps
        pieces = speech.spoken(params.input, voice, SPEECH_RATE, params.speed or 1.0, word_timings=timed)
        first = await first_piece(pieces)  # a voice that fails to start still answers with an error status
        encoded = encoded_speech(first, pieces, encoder)
        headers = {}
        if voice is not None and not speech.tts.can_clone:
            headers[WARNING_HEADER] = f"voice: the {speech.tts.name} voice cannot clone; its own voice was used"
        lines = _lines(encoded, MEDIA_TYPES[response_format], timed)
        if params.stream:
            return OwnedStreamingResponse(lines, owns=[encoded, pieces], media_type="application/json", headers=headers)
        async with aclosing(lines):
            parts = [json.loads(line) async for line in lines]
        audio = b"".join(base64.b64decode(part["audio"]) for part in parts)
        words = [word for part in parts for word in part["timestamps"] or ()] if timed else None
        body = {"audio": base64.b64encode(audio).decode("ascii"), "audio_format": parts[-1]["audio_format"]}
        return JSONResponse({**body, "timestamps": words}, headers=headers)

    return router


async def _lines(
    encoded: AsyncGenerator[Encoded | Words, None], audio_format: str, timed: bool
) -> AsyncGenerator[bytes, None]:
    """A line for each part of the audio, with the words timed since the line before; the last line (the
    encoder's last bytes) with the rest."""
    words: list[WordTiming] = []
    async with aclosing(encoded):
        async for item in encoded:
            if isinstance(item, Words):
                words += item.words
            elif item.data or item.piece is None:
                timestamps = [{"word": w.word, "start_time": w.start, "end_time": w.end} for w in words]
                line = {"audio": base64.b64encode(item.data).decode("ascii"), "audio_format": audio_format}
                yield (json.dumps({**line, "timestamps": timestamps if timed else None}) + "\n").encode()
                words = []
