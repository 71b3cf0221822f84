"""Fish Speech's TTS route, `POST /v1/tts`: the request fish-speech's server and Fish Audio's API take
(MessagePack or JSON), answered with the audio itself, whole or streamed as it is spoken.

Fields and defaults are theirs. What each does here:
- applied: `text`, `format`, `sample_rate`, `mp3_bitrate`, `opus_bitrate`, `references` (inline voices;
  several are joined into one), `reference_id` (a voice saved with /v1/references/add), `streaming`,
  `prosody.volume` and `prosody.speed` (pitch kept); and with the fish voice `temperature`, `top_p` and
  `seed` (unset: the server's FISHVOICE_FISH_* settings).
- ignored, with an `X-Fishvoice-Warning` header: sampling fields the voice has no use for (all of them
  with Piper; `repetition_penalty` with fish, whose engine avoids repeats its own way), and inline voices
  where the voice cannot clone (the default voice speaks, as the job API does).
- `normalize`: numbers said in words (fishvoice/numbers.py), true by default; false gives the voice digits.
- accepted and checked, with no effect: how fish-speech batches and chunks its work (`chunk_length`,
  `min_chunk_length`, `latency` here (/v1/tts/live's cuts by it), `use_memory_cache`, `max_new_tokens`,
  `stream_tokens`, `stream_chunk_size`, `condition_on_previous_chunks`, `early_stop_threshold`,
  `prosody.normalize_loudness`, `features`): speech here is split by sentence.

Errors are OpenAI's shape, as on every /v1/* route (server/errors.py).

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import logging
import math
from contextlib import aclosing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ...audio import OPUS_RATE, SAMPLE_RATES, Audio, StreamEncoder, encode_bytes
from ...contract import MAX_REFERENCE_TEXT_CHARS, text_field
from ...errors import FishvoiceError
from ...speech_service import SpeechService
from ...threads import run_in_thread
from ...tts.base import TTS
from ...validation import best_error, field_error
from ...voices import VoiceReference, as_speakers, join_references, load_reference, reference_from_bytes
from ..http.auth import Auth
from ..http.body import media_type as body_media_type
from ..http.body import read_body
from ..http.openapi import answers, json_body
from ..http.responses import WARNING_HEADER, OwnedStreamingResponse, encoded_audio, first_piece
from .body import MSGPACK_TYPES, decode_body

log = logging.getLogger(__name__)

FishFormat = Literal["wav", "pcm", "mp3", "opus"]
MEDIA_TYPES: dict[str, str] = {"wav": "audio/wav", "pcm": "audio/pcm", "mp3": "audio/mpeg", "opus": "audio/ogg"}
FISH_SAMPLE_RATES = tuple(sorted({*SAMPLE_RATES, 32000}))
MAX_REFERENCES = 8
VoiceId = Annotated[str, Field(min_length=1, max_length=255)]
GREEDY_TOP_P = 1e-6  # keeps the likeliest token alone; the engine's temperature must stay above 0
GREEDY_TEMPERATURE = 0.1


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class FishReference(_Strict):
    """An inline voice: the audio file (bytes in MessagePack, base64 in JSON) and what it says."""

    audio: bytes | str
    text: str = Field(max_length=MAX_REFERENCE_TEXT_CHARS)


class FishProsody(_Strict):
    speed: float = Field(1.0, ge=0.5, le=2.0)
    volume: float = Field(0.0, ge=-20.0, le=20.0)  # dB
    normalize_loudness: bool = False


class FishTTSRequest(_Strict):
    """The body of `POST /v1/tts`: fish-speech's ServeTTSRequest and Fish Audio's TTS request, as one."""

    text: str
    format: FishFormat = "wav"
    sample_rate: int | None = None  # None: 44100 Hz, 48000 Hz for opus
    mp3_bitrate: Literal[64, 128, 192] = 128  # kbps
    # kbps as fish-speech and Fish's SDK send it, or bps as Fish's API now documents it (LiveKit's plugin
    # sends 64000); -1000: the encoder chooses
    opus_bitrate: Literal[-1000, 24, 32, 48, 64, 24000, 32000, 48000, 64000] = 32
    references: list[FishReference | Annotated[list[FishReference], Field(min_length=1)]] = Field(
        default_factory=list,
        max_length=MAX_REFERENCES,
        description="inline voices, joined into one; or one list per speaker of a <|speaker:N|> dialogue",
    )
    reference_id: VoiceId | Annotated[list[VoiceId], Field(min_length=1, max_length=MAX_REFERENCES)] | None = Field(
        None, description="a saved voice; or one per speaker of a <|speaker:N|> dialogue"
    )
    streaming: bool = False
    temperature: float | None = Field(None, ge=0.1, le=1.0)
    top_p: float | None = Field(None, ge=0.1, le=1.0)
    seed: int | None = Field(None, ge=0, lt=2**63)
    repetition_penalty: float = Field(1.1, ge=0.9, le=2.0)
    prosody: FishProsody | None = None
    chunk_length: int = Field(200, ge=100, le=1000)
    min_chunk_length: int = Field(50, ge=0, le=100)
    latency: Literal["normal", "balanced", "low"] = "normal"
    normalize: bool = True
    use_memory_cache: Literal["on", "off"] = "off"
    max_new_tokens: int = Field(1024, ge=0, le=100_000)
    stream_tokens: bool = False
    stream_chunk_size: int = Field(20, ge=1, le=200)
    condition_on_previous_chunks: bool = True
    early_stop_threshold: float = Field(1.0, ge=0.0, le=1.0)
    # Fish Audio's server-side options (LiveKit's plugin always sends `quality-guard`, a retry on bad output)
    features: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=16)

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        return text_field(value)

    @field_validator("sample_rate")
    @classmethod
    def _sample_rate(cls, value: int | None) -> int | None:
        if value is not None and value not in FISH_SAMPLE_RATES:
            raise ValueError(f"must be one of {', '.join(map(str, FISH_SAMPLE_RATES))} (got {value})")
        return value

    @field_validator("temperature", "top_p", "repetition_penalty", "early_stop_threshold")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @property
    def rate(self) -> int:
        return self.sample_rate or (OPUS_RATE if self.format == "opus" else 44100)

    @property
    def opus_bps(self) -> int | None:
        """The Opus bitrate in bits per second; None where the encoder chooses."""
        if self.opus_bitrate == -1000:
            return None
        return self.opus_bitrate if self.opus_bitrate >= 1000 else self.opus_bitrate * 1000


_AUDIO_FIELD = "must be the audio file (bytes, or a base64 string)"


FishRequest = TypeVar("FishRequest", bound=FishTTSRequest)  # /v1/tts's request, or /v1/tts/live's start


def parse_fish_request(raw: Any, model: type[FishRequest]) -> FishRequest:
    """Validate the fields as `model`; FishvoiceError naming the first bad one (`references.0.audio`)."""
    if not isinstance(raw, dict):
        raise FishvoiceError("invalid_input", "body: must be an object of fields", "body")
    try:
        request = model.model_validate(raw)
    except ValidationError as exc:
        first = best_error(exc.errors())
        error = field_error(first, model, whole="body")
        if str(error.field).endswith(".audio") and first["type"] not in ("extra_forbidden", "missing"):
            error = FishvoiceError("invalid_input", f"{error.field}: {_AUDIO_FIELD}", error.field)
        raise error from None
    if request.references and request.reference_id is not None:
        raise FishvoiceError(
            "invalid_input", "references, reference_id: give an inline voice or a saved one, not both", "reference_id"
        )
    if request.format == "opus" and request.rate != OPUS_RATE:
        raise FishvoiceError(
            "invalid_input", f"sample_rate: opus is always {OPUS_RATE} Hz (got {request.rate})", "sample_rate"
        )
    return request


def _reference(reference: FishReference, field: str) -> VoiceReference:
    text = reference.text.strip() or None
    if isinstance(reference.audio, str):
        return load_reference(reference.audio, text, field)
    return reference_from_bytes(reference.audio, text, field)


async def request_voice(
    speech: SpeechService, namespace: str, request: FishTTSRequest, warnings: list[str]
) -> VoiceReference | None:
    """The request's voice: its inline references joined, or the caller's saved voice; for a dialogue, one
    voice per speaker (as_speakers); None for the server's own. A warning where the voice cannot clone."""
    speakers = await _speakers(speech, namespace, request)
    if speakers and not speech.tts.can_clone:
        warnings.append(f"voice cloning needs the fish voice backend; the default {speech.tts.name} voice was used")
    return as_speakers(speakers) if speakers else None


async def _speakers(speech: SpeechService, namespace: str, request: FishTTSRequest) -> list[VoiceReference]:
    """Each speaker's voice: one for a plain request, one per list of references or saved id in a dialogue."""
    if any(isinstance(item, list) for item in request.references):  # one list per speaker
        return [
            join_references(await _inline(item if isinstance(item, list) else [item], f"references.{n}"))
            for n, item in enumerate(request.references)
        ]
    if request.references:
        flat = [item for item in request.references if not isinstance(item, list)]
        return [join_references(await _inline(flat, "references"))]
    if isinstance(request.reference_id, list):
        return [await speech.saved_voice(namespace, i, f"reference_id.{n}") for n, i in enumerate(request.reference_id)]
    if request.reference_id is not None:
        return [await speech.saved_voice(namespace, request.reference_id, "reference_id")]
    return []


async def _inline(references: list[FishReference], field: str) -> list[VoiceReference]:
    return [await run_in_thread(_reference, ref, f"{field}.{n}.audio") for n, ref in enumerate(references)]


def model_warning(tts: TTS, model: str | None) -> str | None:
    """A warning where a client's `model` header (s1, s2-pro, ...) names a voice other than the server's."""
    from ...tts.fish import FishTTS  # needs no torch

    if not model:
        return None
    name = model.lower()
    family = "s1-mini" if name.startswith(("s1", "openaudio-s1")) else "s2-pro" if name.startswith("s2") else None
    if isinstance(tts, FishTTS) and family == tts.family:
        return None
    return f"model {model[:40]!r}: answered by the server's {tts.name} voice"


def tune(request: FishTTSRequest, tts: TTS, warnings: list[str]) -> TTS:
    """The voice with the request's sampling where it takes them; a warning for each field it ignores."""
    sent = request.model_fields_set
    sampling: dict[str, Any] = {
        name: getattr(request, name) for name in ("temperature", "top_p", "seed") if name in sent
    }
    if sampling.get("temperature") == 0 or sampling.get("top_p") == 0:  # Fish's clients mean greedy by 0
        sampling.update(temperature=sampling.get("temperature") or GREEDY_TEMPERATURE, top_p=GREEDY_TOP_P)
    from ...tts.fish import FishTTS  # needs no torch

    ignored: list[str] = list(sampling)
    if isinstance(tts, FishTTS):
        ignored = []
        if sampling:
            tts = tts.tuned(**sampling)
    if "repetition_penalty" in sent:
        ignored.append("repetition_penalty")
    if ignored:
        warnings.append(f"{', '.join(ignored)}: the {tts.name} voice does not use this; ignored")
    return tts


def gain(request: FishTTSRequest) -> float:
    return 10 ** (request.prosody.volume / 20) if request.prosody is not None else 1.0


def louder(audio: Audio, gain: float) -> Audio:
    if gain == 1.0:
        return audio
    return Audio(np.clip(audio.samples * np.float32(gain), -1.0, 1.0).astype(np.float32), audio.sample_rate)


def stream_encoder(request: FishTTSRequest) -> StreamEncoder:
    if request.format == "mp3":
        return StreamEncoder("mp3", request.rate, request.mp3_bitrate * 1000)
    if request.format == "opus":
        return StreamEncoder("opus", request.rate, request.opus_bps)
    return StreamEncoder("pcm16" if request.format == "pcm" else "wav", request.rate)


@dataclass(frozen=True)
class TTSAsked:
    """A TTS request read and resolved: its fields, voice, tuned voice backend, speed, the volume change
    (`adjust`) and what it did not get as asked."""

    fields: FishTTSRequest
    voice: VoiceReference | None
    tts: TTS
    speed: float
    volume: float
    warnings: list[str]

    def adjust(self, audio: Audio) -> Audio:
        return louder(audio, self.volume)


async def read_tts_request(request: Request, speech: SpeechService, namespace: str, max_body_bytes: int) -> TTSAsked:
    """The body of a TTS route (MessagePack or JSON) read, checked and resolved for `namespace`."""
    body = await read_body(request, max_body_bytes, "body")
    fields = parse_fish_request(decode_body(body, body_media_type(request)), FishTTSRequest)
    warnings: list[str] = []
    voice = await request_voice(speech, namespace, fields, warnings)
    voice_tts = tune(fields, speech.tts, warnings)
    if warning := model_warning(voice_tts, request.headers.get("model")):
        warnings.append(warning)
    speed = fields.prosody.speed if fields.prosody is not None else 1.0
    return TTSAsked(fields, voice, voice_tts, speed, gain(fields), warnings)


def with_warnings(response: Response, warnings: list[str]) -> Response:
    for warning in warnings:
        response.headers.append(WARNING_HEADER, warning)  # one header per warning
    return response


def build_fish_router(speech: SpeechService, auth: Auth, max_body_bytes: int) -> APIRouter:
    router = APIRouter()

    @router.post(
        "/v1/tts",
        response_model=None,
        openapi_extra=json_body(FishTTSRequest, *MSGPACK_TYPES),
        responses=answers("the speech, streamed where asked", *MEDIA_TYPES.values()),
    )
    async def tts(request: Request, namespace: str = Depends(auth)) -> Response:
        asked = await read_tts_request(request, speech, namespace, max_body_bytes)
        fields = asked.fields
        headers = {"Content-Disposition": f"attachment; filename=audio.{fields.format}"}
        media_type = MEDIA_TYPES[fields.format]
        pieces = speech.stream(
            fields.text, asked.voice, fields.rate, asked.speed, tts=asked.tts, normalize=fields.normalize
        )
        if fields.streaming:
            encoder = stream_encoder(fields)
            # The first piece is awaited here, so a failure to start still answers with an error status.
            first = await first_piece(pieces)
            chunks = encoded_audio(first, pieces, encoder, asked.adjust)
            response: Response = OwnedStreamingResponse(chunks, owns=[pieces], media_type=media_type, headers=headers)
        else:
            async with aclosing(pieces):
                audio = [asked.adjust(piece) async for piece in pieces]
            response = Response(
                await run_in_thread(_encode_whole, fields, audio), media_type=media_type, headers=headers
            )
        return with_warnings(response, asked.warnings)

    return router


def _encode_whole(request: FishTTSRequest, pieces: list[Audio]) -> bytes:
    samples = np.concatenate([piece.samples for piece in pieces]) if pieces else np.zeros(0, np.float32)
    audio = Audio(samples, request.rate)
    if request.format == "wav":  # a file with its length in the header
        return encode_bytes(audio, "wav")[0]
    encoder = stream_encoder(request)
    return encoder.encode(audio) + encoder.finish()
