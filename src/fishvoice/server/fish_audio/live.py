"""Fish's streaming TTS, the WebSocket `/v1/tts/live`: text in as it is written, audio out as it is spoken,
as Fish Audio's SDK (`tts.stream_websocket`) and the agent frameworks' Fish voices speak it.

Every frame is binary MessagePack with an `event`. The client sends `start` (`request`: /v1/tts's fields,
its `text` empty by design), any number of `text` events, `flush` (speak what is buffered now) and `stop`;
the server answers `audio` events (`audio`: bytes of one file in the request's format, in order) and a
last `finish` (`reason`: `stop`, or `error` with a `message` naming the field). A new `start` may follow a
`finish`; unknown events are ignored, as Fish's clients ignore them. On `/v1/tts/live/with-timestamp` each
`audio` event also says its chunk (`content`, `chunk_seq`, `chunk_audio_offset_sec` in the utterance's
audio), and each chunk's words follow its audio in an `audio` event of their own (empty `audio`, the
chunk's `alignment`), as /v1/tts/stream/with-timestamp's events.

Text is cut where speech can begin (text.SpeechChunker: a clause first, then sentences) and each piece is
spoken while more text comes; `latency` sets how early the first piece is cut (`low`: after a few words,
`balanced`: at a clause, `normal`: at a sentence). One task per utterance speaks, and is cancelled (its
voice stream closed) when the client leaves, on a bad event, or when the socket sits idle too long.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from typing import Any

import msgpack
from fastapi import APIRouter, WebSocket
from pydantic import Field, field_validator
from starlette.websockets import WebSocketState

from ... import tracing
from ...errors import FishvoiceError, as_api_error
from ...pipeline import Spoken, Words
from ...speech_service import SpeechService
from ...text import SpeechChunker
from ...threads import run_in_thread
from ...tts.base import TTS
from ...voices import VoiceReference
from ..http.auth import Auth, socket_key
from ..http.fields import invalid
from .body import unpack
from .timestamps import alignment
from .tts import (
    FishTTSRequest,
    gain,
    louder,
    model_warning,
    parse_fish_request,
    request_voice,
    stream_encoder,
    tune,
)

log = logging.getLogger(__name__)

MAX_WAITING_CHARS = 100_000  # text sent and not yet spoken; a client past it is sending faster than speech
_LATENCY_FIRST_CUT: dict[str, dict[str, int]] = {
    "low": {},  # the assistant's own: a few words, a clause or a sentence, whichever comes first
    "balanced": {"first_min_words": 3, "first_words": 12, "first_max_words": 24},
    "normal": {"first_min_words": 10**6, "first_words": 10**6, "first_max_words": 10**6},  # a sentence
}


class LiveStart(FishTTSRequest):
    """`start`'s request: /v1/tts's fields; its text may be empty (the text comes in `text` events), and
    `temperature` and `top_p` go down to 0 (greedy), as Fish's SDK may send them."""

    text: str = Field("", max_length=MAX_WAITING_CHARS)
    temperature: float | None = Field(None, ge=0.0, le=1.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:  # replaces /v1/tts's, which refuses an empty text
        return value


@dataclass(frozen=True)
class LiveLimits:
    idle_s: float  # longest wait for the client's next event while nothing is being spoken
    max_message_bytes: int


@dataclass
class Utterance:
    """One `start` to its `finish`: the text cut into pieces, spoken in order by one task."""

    chunker: SpeechChunker
    pieces: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)  # None: the text has ended
    waiting_chars: int = 0
    speaking: bool = False  # a piece is being spoken (the socket is not idle)
    task: asyncio.Task[None] | None = None


class _Chunks:
    """Where each chunk of an utterance is, across its texts (each spoken apart, each numbering its chunks
    from 0): the fields a timed audio event carries, as /v1/tts/stream/with-timestamp's events do."""

    def __init__(self) -> None:
        self.first = 0  # the utterance's number of the current text's chunk 0
        self.seen = 0  # chunks of the current text so far
        self.heard = 0.0  # seconds of the utterance's audio so far
        self.text_at = 0.0  # where the current text's audio began
        self.seq, self.content, self.at = -1, "", 0.0  # the chunk being heard: its number, text and start

    def audio(self, piece: Spoken) -> dict[str, Any]:
        if self.first + piece.chunk != self.seq:
            self.seq, self.content, self.at = self.first + piece.chunk, piece.text, self.heard
            self.seen = max(self.seen, piece.chunk + 1)
        self.heard += piece.audio.duration_s
        return self.last()

    def last(self) -> dict[str, Any]:
        seq, at = max(self.seq, 0), round(self.at, 3)
        return {"content": self.content, "alignment": None, "chunk_seq": seq, "chunk_audio_offset_sec": at}

    def words(self, words: Words) -> dict[str, Any]:
        at = round(self.text_at + words.start, 3)
        seq = self.first + words.chunk
        return {"content": words.text, "alignment": alignment(words), "chunk_seq": seq, "chunk_audio_offset_sec": at}

    def next_text(self) -> None:
        self.first, self.text_at, self.seen = self.first + self.seen, self.heard, 0


class LiveSession:
    """One socket's utterances, one after another."""

    def __init__(
        self, socket: WebSocket, speech: SpeechService, namespace: str, limits: LiveLimits, *, timed: bool = False
    ) -> None:
        self.socket = socket
        self.timed = timed  # /v1/tts/live/with-timestamp: each audio event says its chunk, and its words follow
        self.speech = speech
        self.namespace = namespace
        self.limits = limits
        self.utterance: Utterance | None = None
        self._send_lock = asyncio.Lock()

    async def run(self) -> None:
        try:
            while (event := await self._receive()) is not None:
                try:
                    await self._handle(event)
                except FishvoiceError as error:
                    await self._fail(error)
        finally:
            await self._stop_speaking()

    async def _receive(self) -> dict[str, Any] | None:
        """The client's next event; None once it left or sat idle past the limit (the socket closed)."""
        while True:
            try:
                message = await asyncio.wait_for(self.socket.receive(), self.limits.idle_s)
            except TimeoutError:
                if self.utterance is not None and self.utterance.speaking:
                    continue  # still speaking what it sent
                log.info("tts live: idle for %g s; closed", self.limits.idle_s)
                await self.close(1000, "idle")
                return None
            if message["type"] == "websocket.disconnect":
                return None
            try:
                return self._event(message)
            except FishvoiceError as error:
                await self._fail(error)

    def _event(self, message: Mapping[str, Any]) -> dict[str, Any]:
        data = message.get("bytes")
        if data is None:
            raise invalid("message", "send binary MessagePack frames, not text")
        if len(data) > self.limits.max_message_bytes:
            limit = self.limits.max_message_bytes / 2**20
            raise FishvoiceError("payload_too_large", f"message: larger than {limit:g} MB", "message")
        event = unpack(data, "message")
        if not isinstance(event, dict):
            raise invalid("message", "an event must be a map with an `event` field")
        return event

    async def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "start":
            await self._start(event.get("request"))
        elif kind in ("text", "flush", "stop"):
            utterance = self.utterance
            if utterance is None:
                raise invalid("event", f"{kind} before start: send a start event first")
            if kind == "text":
                text = event.get("text")
                if not isinstance(text, str):
                    raise invalid("text", "must be a string")
                self._queue(utterance, utterance.chunker.feed(text))
            else:
                self._queue(utterance, utterance.chunker.flush())
            if kind == "stop":
                utterance.pieces.put_nowait(None)
        # any other event is ignored, as Fish's clients ignore theirs

    async def _start(self, raw: Any) -> None:
        if self.utterance is not None:
            raise invalid("event", "start during an utterance: send stop and wait for its finish first")
        request = parse_start(raw)
        warnings: list[str] = []
        voice = await request_voice(self.speech, self.namespace, request, warnings)
        voice_tts = tune(request, self.speech.tts, warnings)
        if warning := model_warning(voice_tts, self.socket.headers.get("model")):
            warnings.append(warning)
        for warning in warnings:
            log.warning("tts live: %s", warning)
        utterance = Utterance(SpeechChunker(**_LATENCY_FIRST_CUT[request.latency]))
        self.utterance = utterance
        self._queue(utterance, utterance.chunker.feed(request.text))
        utterance.task = asyncio.create_task(self._speak(utterance, request, voice, voice_tts))

    def _queue(self, utterance: Utterance, pieces: list[str]) -> None:
        for piece in pieces:
            utterance.waiting_chars += len(piece)
            if utterance.waiting_chars > MAX_WAITING_CHARS:
                raise invalid("text", f"more than {MAX_WAITING_CHARS} characters wait to be spoken; send slower")
            utterance.pieces.put_nowait(piece)

    async def _speak(self, utterance: Utterance, request: LiveStart, voice: VoiceReference | None, tts: TTS) -> None:
        """Speak each piece as it comes, as one file in the request's format; then `finish`."""
        encoder = stream_encoder(request)
        volume = gain(request)
        speed = request.prosody.speed if request.prosody is not None else 1.0
        chunks = _Chunks()
        try:
            while (text := await utterance.pieces.get()) is not None:
                utterance.waiting_chars -= len(text)
                utterance.speaking = True
                tracing.restart_clock()  # this piece's first audio is timed from when it is taken up
                pieces = self.speech.spoken(
                    text, voice, request.rate, speed, tts=tts, normalize=request.normalize, word_timings=self.timed
                )
                async with aclosing(pieces):
                    async for piece in pieces:
                        if isinstance(piece, Words):
                            await self._send({"event": "audio", "audio": b"", **chunks.words(piece)})
                            continue
                        data = await run_in_thread(encoder.encode, louder(piece.audio, volume))
                        await self._send_audio(data, chunks.audio(piece) if self.timed else {})
                chunks.next_text()
                utterance.speaking = not utterance.pieces.empty()
            await self._send_audio(await run_in_thread(encoder.finish), chunks.last() if self.timed else {})
            self.utterance = None
            await self._send({"event": "finish", "reason": "stop"})
        except Exception as exc:
            if self.utterance is utterance:
                self.utterance = None
            await self.send_error(as_api_error(exc))
        finally:
            encoder.close()

    async def _fail(self, error: FishvoiceError) -> None:
        """A bad event: the utterance under way stops, and the client is told why."""
        log.info("tts live: %s (%s)", error.message, error.code)
        await self._stop_speaking()
        await self.send_error(error)

    async def _stop_speaking(self) -> None:
        utterance, self.utterance = self.utterance, None
        if utterance is not None and utterance.task is not None:
            utterance.task.cancel()
            with suppress(asyncio.CancelledError):
                await utterance.task

    async def _send_audio(self, data: bytes, chunk: dict[str, Any]) -> None:
        if data:
            await self._send({"event": "audio", "audio": data, **chunk})

    async def send_error(self, error: FishvoiceError) -> None:
        """`finish` with reason `error`: the message names the field, as /v1/tts's errors do."""
        await self._send(
            {"event": "finish", "reason": "error", "message": error.message, "code": error.code, "field": error.field}
        )

    async def _send(self, event: dict[str, Any]) -> None:
        async with self._send_lock:
            if self.socket.application_state == WebSocketState.CONNECTED:
                with suppress(Exception):  # a client already gone is not an error here
                    await self.socket.send_bytes(msgpack.packb(event))

    async def close(self, code: int, reason: str) -> None:
        if self.socket.application_state == WebSocketState.CONNECTED:
            with suppress(Exception):
                await self.socket.close(code, reason)


def parse_start(raw: Any) -> LiveStart:
    """A `start` event's request; FishvoiceError naming the first bad field (`request.format`)."""
    if not isinstance(raw, dict):
        raise invalid("request", "must be a map of /v1/tts's fields")
    try:
        return parse_fish_request(raw, LiveStart)
    except FishvoiceError as error:
        inner = error.field if error.field not in (None, "body") else None
        field_name = f"request.{inner}" if inner else "request"
        message = error.message.removeprefix(f"{error.field}: ")
        raise FishvoiceError(error.code, f"{field_name}: {message}", field_name) from None


@dataclass
class OpenLive:
    """Live sockets open now, against the limit (the realtime sessions'): what /health shows."""

    limit: int
    count: int = 0


def build_live_router(speech: SpeechService, auth: Auth, limits: LiveLimits, open_now: OpenLive) -> APIRouter:
    router = APIRouter()

    async def live(socket: WebSocket, timed: bool) -> None:
        await socket.accept()
        session = LiveSession(socket, speech, "", limits, timed=timed)
        try:
            session.namespace = auth.namespace(socket_key(socket))
            if open_now.count >= open_now.limit:
                raise FishvoiceError("backend_unavailable", f"all {open_now.limit} live sockets are in use; try later")
        except FishvoiceError as error:
            await session.send_error(error)
            await session.close(1008 if error.code == "unauthorized" else 1013, error.code)
            return
        open_now.count += 1
        try:
            await session.run()
        finally:
            open_now.count -= 1
            await session.close(1000, "done")

    @router.websocket("/v1/tts/live")
    async def live_tts(socket: WebSocket) -> None:
        await live(socket, timed=False)

    @router.websocket("/v1/tts/live/with-timestamp")
    async def live_tts_with_timestamps(socket: WebSocket) -> None:
        await live(socket, timed=True)

    return router
