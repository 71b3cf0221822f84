"""OpenAI's `POST /v1/audio/transcriptions`: speech to text with the ASR, whole or as server-sent events.

Conventions are the other OpenAI routes': the same keys, body limits and error shape, every error naming its
parameter, an unknown parameter refused by name. Recognition runs in a worker thread under the limit on
work at once; without an ASR backend, audio input is a 503 naming the audio's parameter. verbose_json's
`language` is the language's English name in lower case, as OpenAI's (`english`; the ASR's code where the
table below lacks it); word timestamps are not supported.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from ...asr.base import ASR, Segment, Transcript
from ...audio import Audio
from ...errors import FishvoiceError, as_api_error
from ...speech_service import SpeechService, WorkLimit
from ...threads import iterate_in_thread, run_in_thread
from ...voices import speech_from_bytes
from ..http.auth import Auth
from ..http.body import form_items, media_type, read_body
from ..http.errors import openai_body, status_of
from ..http.fields import as_language, as_number, invalid
from ..http.openapi import form_body
from ..http.responses import OwnedStreamingResponse, sse_event

MAX_PROMPT_CHARS = 4096
TRANSCRIPTION_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
# The languages Whisper tells apart, by the code the ASR reports, named as OpenAI's verbose_json names them.
# No installed package carries this table (faster-whisper has the codes alone), so it is kept here.
LANGUAGE_NAMES: dict[str, str] = {
    "af": "afrikaans",
    "am": "amharic",
    "ar": "arabic",
    "as": "assamese",
    "az": "azerbaijani",
    "ba": "bashkir",
    "be": "belarusian",
    "bg": "bulgarian",
    "bn": "bengali",
    "bo": "tibetan",
    "br": "breton",
    "bs": "bosnian",
    "ca": "catalan",
    "cs": "czech",
    "cy": "welsh",
    "da": "danish",
    "de": "german",
    "el": "greek",
    "en": "english",
    "es": "spanish",
    "et": "estonian",
    "eu": "basque",
    "fa": "persian",
    "fi": "finnish",
    "fo": "faroese",
    "fr": "french",
    "gl": "galician",
    "gu": "gujarati",
    "ha": "hausa",
    "haw": "hawaiian",
    "he": "hebrew",
    "hi": "hindi",
    "hr": "croatian",
    "ht": "haitian creole",
    "hu": "hungarian",
    "hy": "armenian",
    "id": "indonesian",
    "is": "icelandic",
    "it": "italian",
    "ja": "japanese",
    "jw": "javanese",
    "ka": "georgian",
    "kk": "kazakh",
    "km": "khmer",
    "kn": "kannada",
    "ko": "korean",
    "la": "latin",
    "lb": "luxembourgish",
    "ln": "lingala",
    "lo": "lao",
    "lt": "lithuanian",
    "lv": "latvian",
    "mg": "malagasy",
    "mi": "maori",
    "mk": "macedonian",
    "ml": "malayalam",
    "mn": "mongolian",
    "mr": "marathi",
    "ms": "malay",
    "mt": "maltese",
    "my": "myanmar",
    "ne": "nepali",
    "nl": "dutch",
    "nn": "nynorsk",
    "no": "norwegian",
    "oc": "occitan",
    "pa": "punjabi",
    "pl": "polish",
    "ps": "pashto",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sa": "sanskrit",
    "sd": "sindhi",
    "si": "sinhala",
    "sk": "slovak",
    "sl": "slovenian",
    "sn": "shona",
    "so": "somali",
    "sq": "albanian",
    "sr": "serbian",
    "su": "sundanese",
    "sv": "swedish",
    "sw": "swahili",
    "ta": "tamil",
    "te": "telugu",
    "tg": "tajik",
    "th": "thai",
    "tk": "turkmen",
    "tl": "tagalog",
    "tr": "turkish",
    "tt": "tatar",
    "uk": "ukrainian",
    "ur": "urdu",
    "uz": "uzbek",
    "vi": "vietnamese",
    "yi": "yiddish",
    "yo": "yoruba",
    "yue": "cantonese",
    "zh": "chinese",
}
_TRANSCRIPTION_FIELDS = frozenset(
    {"file", "model", "language", "prompt", "response_format", "temperature", "timestamp_granularities[]", "stream"}
)


def no_asr(field: str) -> FishvoiceError:
    return FishvoiceError(
        "backend_unavailable", f"{field}: speech recognition is not available on this server (no ASR backend)", field
    )


def _error_event(exc: BaseException) -> dict[str, Any]:
    error = as_api_error(exc)
    return openai_body(error, status_of(error))


FormFields = dict[str, list[str | bytes]]


async def read_form(request: Request, max_bytes: int) -> FormFields:
    """A multipart form's fields, each with every value it was given (`timestamp_granularities[]` repeats)."""
    body = await read_body(request, max_bytes, "file")
    if media_type(request) != "multipart/form-data":
        raise invalid("body", "send a multipart form (multipart/form-data) with the audio as `file`")
    fields: FormFields = {}
    for name, value in await form_items(request, body, max_files=2):
        fields.setdefault(name, []).append(value)
    return fields


@dataclass(frozen=True)
class TranscriptionParams:
    file: bytes
    model: str
    language: str | None
    prompt: str | None
    response_format: str
    stream: bool


def _form_text(fields: FormFields, name: str) -> str | None:
    values = fields.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise invalid(name, "given more than once")
    if not isinstance(values[0], str):
        raise invalid(name, "must be text, not a file")
    return values[0]


def parse_transcription(fields: FormFields, models: tuple[str, ...]) -> TranscriptionParams:
    """Validate the form; raise invalid_input naming the first bad parameter."""
    for name in fields:
        if name not in _TRANSCRIPTION_FIELDS:
            raise invalid(name[:60], "unknown parameter")
    files = fields.get("file")
    if not files:
        raise FishvoiceError("invalid_audio", "file: required (the audio file, in a multipart form)", "file")
    if len(files) > 1 or not isinstance(files[0], bytes):
        raise FishvoiceError("invalid_audio", "file: must be one audio file, not text", "file")
    model = _form_text(fields, "model")
    if model is None:
        raise invalid("model", "required")
    if model not in models:
        raise invalid("model", f"unknown model {model[:60]!r}; use one of {', '.join(models)}")
    language = _form_text(fields, "language") or None
    if language is not None:
        as_language(language, "language")
    prompt = _form_text(fields, "prompt")
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        raise invalid("prompt", f"must be at most {MAX_PROMPT_CHARS} characters (got {len(prompt)})")
    response_format = _form_text(fields, "response_format") or "json"
    if response_format not in TRANSCRIPTION_FORMATS:
        raise invalid(
            "response_format", f"must be one of {', '.join(TRANSCRIPTION_FORMATS)} (got {response_format[:40]!r})"
        )
    temperature = _form_text(fields, "temperature")
    if temperature is not None:
        try:
            value = float(temperature)
        except ValueError:
            raise invalid("temperature", f"must be a number (got {temperature[:20]!r})") from None
        as_number(value, "temperature", 0.0, 1.0)
    for granularity in fields.get("timestamp_granularities[]", []):
        if granularity == "word":
            raise invalid("timestamp_granularities[]", "word timestamps are not supported; use segment")
        if granularity != "segment":
            raise invalid("timestamp_granularities[]", f"must be segment (got {str(granularity)[:20]!r})")
    if "timestamp_granularities[]" in fields and response_format != "verbose_json":
        raise invalid("timestamp_granularities[]", "needs response_format verbose_json")
    stream_text = (_form_text(fields, "stream") or "false").lower()
    if stream_text not in ("true", "false"):
        raise invalid("stream", f"must be true or false (got {stream_text[:20]!r})")
    stream = stream_text == "true"
    if stream and response_format not in ("json", "text"):
        raise invalid("stream", f"streaming is not supported with response_format {response_format}")
    return TranscriptionParams(files[0], model, language, prompt or None, response_format, stream)


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def subtitles(segments: list[Segment], kind: Literal["srt", "vtt"]) -> str:
    """The segments as an SRT or WebVTT file."""
    separator = "," if kind == "srt" else "."
    cues = []
    for number, segment in enumerate(segments, 1):
        span = f"{_timestamp(segment.start, separator)} --> {_timestamp(segment.end, separator)}"
        cue = f"{span}\n{segment.text.strip()}\n"
        cues.append(f"{number}\n{cue}" if kind == "srt" else cue)
    body = "\n".join(cues)
    return f"WEBVTT\n\n{body}" if kind == "vtt" else body


def transcription_response(transcript: Transcript, response_format: str) -> Response:
    text = transcript.text.strip()
    if response_format == "text":
        return PlainTextResponse(text + "\n" if text else "")
    if response_format in ("srt", "vtt"):
        media = "text/vtt" if response_format == "vtt" else "application/x-subrip"
        kind: Literal["srt", "vtt"] = "vtt" if response_format == "vtt" else "srt"
        return PlainTextResponse(subtitles(transcript.segments, kind), media_type=media)
    if response_format == "verbose_json":
        segments = [
            {
                "id": number,
                "seek": 0,
                "start": round(segment.start, 3),
                "end": round(segment.end, 3),
                "text": segment.text.strip(),
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
            }
            for number, segment in enumerate(transcript.segments)
        ]
        body = {
            "language": LANGUAGE_NAMES.get(transcript.language, transcript.language),
            "duration": round(transcript.duration_s, 3),
            "text": text,
            "segments": segments,
        }
        return JSONResponse(body)
    return JSONResponse({"text": text})


async def _transcript_events(
    asr: ASR, audio: Audio, params: TranscriptionParams, work: WorkLimit
) -> AsyncGenerator[bytes, None]:
    """`transcript.text.delta` as each segment is recognised, then `transcript.text.done`; a failure is
    an `error` event and the end."""
    pieces: list[str] = []
    try:
        async with work:
            segments = iterate_in_thread(
                lambda stop: asr.segments(audio, language=params.language, prompt=params.prompt, stop=stop)
            )
            async with aclosing(segments):
                async for segment in segments:
                    if text := segment.text.strip():
                        yield sse_event({"type": "transcript.text.delta", "delta": f" {text}" if pieces else text})
                        pieces.append(text)
    except Exception as exc:
        yield sse_event({"type": "error", **_error_event(exc)})
        return
    yield sse_event({"type": "transcript.text.done", "text": " ".join(pieces)})


_FORM = form_body(
    {
        "file": {"type": "string", "format": "binary", "description": "the audio"},
        "model": {"type": "string", "description": "an id /v1/models lists"},
        "language": {"type": "string", "description": "ISO 639-1 code (2 or 3 letters)"},
        "prompt": {"type": "string", "maxLength": MAX_PROMPT_CHARS},
        "response_format": {"type": "string", "enum": list(TRANSCRIPTION_FORMATS), "default": "json"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
        "timestamp_granularities[]": {"type": "array", "items": {"type": "string", "enum": ["segment"]}},
        "stream": {"type": "boolean", "default": False},
    },
    required=["file", "model"],
)


def build_transcriptions_router(
    speech: SpeechService, asr: ASR | None, auth: Auth, *, models: tuple[str, ...], max_body_bytes: int
) -> APIRouter:
    router = APIRouter()
    caller = Depends(auth)

    @router.post("/v1/audio/transcriptions", openapi_extra=_FORM)
    async def create_transcription(request: Request, namespace: str = caller) -> Response:
        params = parse_transcription(await read_form(request, max_body_bytes), models)
        if asr is None:
            raise no_asr("file")
        audio = await run_in_thread(speech_from_bytes, params.file, "file", 0)
        if params.stream:
            return OwnedStreamingResponse(
                _transcript_events(asr, audio, params, speech.work), media_type="text/event-stream"
            )
        async with speech.work:
            transcript = await run_in_thread(asr.transcribe, audio, language=params.language, prompt=params.prompt)
        return transcription_response(transcript, params.response_format)

    return router
