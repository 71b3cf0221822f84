"""Fish's `POST /v1/tts/stream/with-timestamp`: the speech streamed as server-sent events, each with a part
of the encoded audio (`audio_base64`) and, for the chunk of text it speaks (`content`, `chunk_seq`, starting
at `chunk_audio_offset_sec` in the whole audio), that chunk's word timings as Fish's API sends them:
`alignment: {audio_duration, segments: [{text, start, end}]}`, seconds from the chunk's start, or null
until they are known. Audio never waits for its words: they follow in an event of their own (empty audio,
the chunk's alignment), which a client keeps by `chunk_seq` as Fish's documentation says to.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ...errors import as_api_error
from ...pipeline import Words
from ...speech_service import SpeechService
from ..http.auth import Auth
from ..http.errors import openai_body, status_of
from ..http.openapi import answers, json_body
from ..http.responses import Encoded, OwnedStreamingResponse, encoded_speech, first_piece, sse_event
from .body import MSGPACK_TYPES
from .tts import FishTTSRequest, read_tts_request, stream_encoder, with_warnings


def build_timestamps_router(speech: SpeechService, auth: Auth, max_body_bytes: int) -> APIRouter:
    router = APIRouter()

    @router.post(
        "/v1/tts/stream/with-timestamp",
        response_model=None,
        openapi_extra=json_body(FishTTSRequest, *MSGPACK_TYPES),
        responses=answers("the speech and its words' timings, as server-sent events", "text/event-stream"),
    )
    async def tts_with_timestamps(request: Request, namespace: str = Depends(auth)) -> Response:
        asked = await read_tts_request(request, speech, namespace, max_body_bytes)
        fields = asked.fields
        pieces = speech.spoken(
            fields.text,
            asked.voice,
            fields.rate,
            asked.speed,
            tts=asked.tts,
            normalize=fields.normalize,
            word_timings=True,
        )
        first = await first_piece(pieces)  # a voice that fails to start still answers with an error status
        encoded = encoded_speech(first, pieces, stream_encoder(fields), asked.adjust)
        events = _events(encoded)
        response = OwnedStreamingResponse(events, owns=[encoded, pieces], media_type="text/event-stream")
        return with_warnings(response, asked.warnings)

    return router


async def _events(encoded: AsyncGenerator[Encoded | Words, None]) -> AsyncGenerator[bytes, None]:
    """Each encoded part and each chunk's words as Fish's events; a failure midway is an `error` event in
    the routes' error shape, and the end."""
    chunk, content, offset, heard = 0, "", 0.0, 0.0
    async with aclosing(encoded):
        try:
            async for item in encoded:
                if isinstance(item, Words):
                    yield _event(b"", item.text, alignment(item), item.chunk, item.start)
                    continue
                if item.piece is not None and (item.piece.chunk != chunk or not content):
                    chunk, content, offset = item.piece.chunk, item.piece.text, heard
                if item.piece is not None:
                    heard += item.piece.audio.duration_s
                if item.data:
                    yield _event(item.data, content, None, chunk, offset)
        except Exception as exc:
            error = as_api_error(exc)
            yield sse_event({"type": "error", **openai_body(error, status_of(error))})


def alignment(words: Words) -> dict[str, Any]:
    """A chunk's words as Fish's alignment: its audio's length, and each word's times in it."""
    at = words.start
    segments = [{"text": w.word, "start": round(w.start - at, 3), "end": round(w.end - at, 3)} for w in words.words]
    return {"audio_duration": round(words.duration, 3), "segments": segments}


def _event(data: bytes, content: str, alignment: dict[str, Any] | None, chunk: int, offset: float) -> bytes:
    return sse_event(
        {
            "audio_base64": base64.b64encode(data).decode("ascii"),
            "content": content,
            "alignment": alignment,
            "chunk_seq": chunk,
            "chunk_audio_offset_sec": round(offset, 3),
        }
    )
