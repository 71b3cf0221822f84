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
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import ValidationError

from ... import metrics
from ...asr.base import ASR, Segment, Transcript
from ...audio import Audio
from ...errors import FishvoiceError, as_api_error
from ...speech_service import SpeechService, WorkLimit, no_asr
from ...threads import iterate_in_thread, run_in_thread
from ...validation import first_error
from ...voices import speech_from_bytes
from ..http.auth import Auth
from ..http.body import FormFields, form_fields, form_text, media_type, read_body
from ..http.errors import openai_body, status_of
from ..http.fields import invalid
from ..http.openapi import form_model
from ..http.responses import OwnedStreamingResponse, sse_event
from .protocol import TranscriptionForm

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
_LISTS = ("timestamp_granularities[]",)  # the form's one field given once per value


def _error_event(exc: BaseException) -> dict[str, Any]:
    error = as_api_error(exc)
    return openai_body(error, status_of(error))


async def read_form(request: Request, max_bytes: int) -> FormFields:
    """A multipart form's fields, each with every value it was given (`timestamp_granularities[]` repeats)."""
    body = await read_body(request, max_bytes, "file")
    if media_type(request) != "multipart/form-data":
        raise invalid("body", "send a multipart form (multipart/form-data) with the audio as `file`")
    return await form_fields(request, body, max_files=2)


def _audio_file(fields: FormFields) -> bytes:
    files = fields.get("file")
    if not files:
        raise FishvoiceError("invalid_audio", "file: required (the audio file, in a multipart form)", "file")
    if len(files) > 1 or not isinstance(files[0], bytes):
        raise FishvoiceError("invalid_audio", "file: must be one audio file, not text", "file")
    return files[0]


def parse_transcription(fields: FormFields, models: tuple[str, ...]) -> TranscriptionForm:
    """The form validated; raise the first bad parameter's error, named as OpenAI names it."""
    texts = {name: form_text(fields, name) for name in fields if name not in ("file", *_LISTS)}
    given: dict[str, Any] = {name: value for name, value in texts.items() if value is not None}
    given.update({name: fields[name] for name in _LISTS if name in fields}, file=_audio_file(fields))
    try:
        form = TranscriptionForm.model_validate(given)
    except ValidationError as exc:
        raise first_error(exc, TranscriptionForm, whole="body", unknown="unknown parameter", depth=1) from None
    if form.model not in models:
        raise invalid("model", f"unknown model {form.model[:60]!r}; use one of {', '.join(models)}")
    if form.timestamp_granularities and form.response_format != "verbose_json":
        raise invalid("timestamp_granularities[]", "needs response_format verbose_json")
    if form.stream and form.response_format not in ("json", "text"):
        raise invalid("stream", f"streaming is not supported with response_format {form.response_format}")
    return form


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
    asr: ASR, audio: Audio, params: TranscriptionForm, work: WorkLimit
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
                with metrics.hearing():
                    async for segment in segments:
                        if text := segment.text.strip():
                            delta = f" {text}" if pieces else text
                            yield sse_event({"type": "transcript.text.delta", "delta": delta})
                            pieces.append(text)
    except Exception as exc:
        yield sse_event({"type": "error", **_error_event(exc)})
        return
    yield sse_event({"type": "transcript.text.done", "text": " ".join(pieces)})


def build_transcriptions_router(
    speech: SpeechService, asr: ASR | None, auth: Auth, *, models: tuple[str, ...], max_body_bytes: int
) -> APIRouter:
    router = APIRouter()
    caller = Depends(auth)

    @router.post("/v1/audio/transcriptions", openapi_extra=form_model(TranscriptionForm))
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
            with metrics.hearing():
                transcript = await run_in_thread(asr.transcribe, audio, language=params.language, prompt=params.prompt)
        return transcription_response(transcript, params.response_format)

    return router
