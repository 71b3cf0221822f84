"""A live voice conversation over a WebSocket: `GET /v1/realtime`, speaking OpenAI's Realtime API.

The caller streams pcm16 at 24 kHz. With server VAD (vad.py) each turn is cut where the speech stops,
heard by the ASR and answered by the assistant, whose reply streams back as text and pcm16 deltas as
soon as its first piece is spoken; with `turn_detection: null` the client commits and asks. To answer
within a breath, a turn is heard, and its reply begun, where the speech pauses: the reply's events are
kept back until the silence confirms the turn ended there, and dropped if the speech goes on. Speech that
starts during a reply cancels it at once (barge-in): no audio is sent after the cancel, and the
conversation keeps only what was heard (the client's `conversation.item.truncate`, else what was sent).

A session has a conversation id (`?conversation_id=`, else a new one) in the assistant's store, so a
conversation moves between sessions and jobs. The last exchange is stored when the next reply starts or
the session ends, so a truncation after the reply still counts. Keys: `Authorization: Bearer`, or for
browsers `?api_key=` or the subprotocol `openai-insecure-api-key.<key>`. Every error is an `error`
event and the session goes on; only auth, the session limit, the idle time-out and a lost connection
end it.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing, suppress
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import soxr
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketState

from ...asr.base import ASR
from ...assistant import Assistant
from ...audio import Audio, from_pcm16
from ...contract import CONVERSATION_ID, MAX_MESSAGE_CHARS, AudioEvent, ChatMessage, DoneEvent, ReplyRequest, TextEvent
from ...errors import FishvoiceError, as_api_error
from ...process import release_free_memory
from ...speech_service import SpeechService
from ...threads import run_in_thread
from ...vad import TAIL_MS, VAD_RATE, SpeechPaused, SpeechStarted, StreamingVAD, TurnDetector
from ...voices import MAX_REFERENCE_S
from ..http.auth import Auth
from ..http.fields import invalid
from .protocol import (
    DEFAULT_VOICE,
    REALTIME_RATE,
    ResponseSummary,
    SessionConfig,
    assistant_item,
    error_event,
    new_id,
    response_overrides,
    update_config,
    user_item,
)

log = logging.getLogger(__name__)

_PER_MS = REALTIME_RATE // 1000
MIN_COMMIT_MS = 100
MAX_TURN_MS = int(MAX_REFERENCE_S * 1000)
_TAIL = TAIL_MS * _PER_MS
_KEY_PROTOCOL = "openai-insecure-api-key."


@dataclass(frozen=True)
class RealtimeLimits:
    sessions: int  # open at once
    idle_s: float  # longest time with nothing from the client and nothing under way before the session closes
    max_message_bytes: int


class _InputAudio:
    """The input buffer: 24 kHz samples from stream position `start` (samples since the session began)."""

    def __init__(self) -> None:
        self._chunks: list[npt.NDArray[np.float32]] = []
        self.start = 0
        self.size = 0

    @property
    def end(self) -> int:
        return self.start + self.size

    def append(self, samples: npt.NDArray[np.float32]) -> None:
        self._chunks.append(samples)
        self.size += samples.size

    def peek(self, begin: int, end: int) -> npt.NDArray[np.float32]:
        """Samples [begin, end), clipped to what is held."""
        held = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        self._chunks = [held]
        begin, end = max(begin, self.start), min(max(end, self.start), self.end)
        return held[begin - self.start : max(begin, end) - self.start].copy()

    def take(self, begin: int, end: int) -> npt.NDArray[np.float32]:
        """Samples [begin, end) (clipped to what is held), dropping everything before `end`."""
        taken = self.peek(begin, end)
        end = min(max(end, self.start), self.end)
        rest = self._chunks[0][end - self.start :]
        self._chunks, self.start, self.size = [rest], end, rest.size
        return taken

    def keep_last(self, samples: int) -> None:
        if self.size > 2 * samples:  # trimmed in steps, not on every append
            self.take(self.end - samples, self.end - samples)

    def clear(self) -> None:
        self._chunks, self.start, self.size = [], self.end, 0


@dataclass
class _Guess:
    """What a reply begun on a pause's transcript waits on: the silence confirming the turn ended there
    (`decided` True: its events held so far go out) or the speech going on (False: they are dropped)."""

    at: int  # where the speech paused, in input samples
    said: str  # the turn's transcript
    decided: asyncio.Future[bool]
    held: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Reply:
    """A reply in progress: what was sent, piece by piece, so a cut can keep only what was heard."""

    summary: ResponseSummary
    message: str
    config: SessionConfig
    text: list[str] = field(default_factory=list)
    pieces: list[tuple[int, int, str]] = field(default_factory=list)  # (start ms, end ms, text) of each audio piece
    sent_ms: int = 0
    heard_ms: int | None = None  # how much of its audio the client played, once it said (a truncation)
    cancelled: str | None = None  # the reason, once cancelled: nothing more is sent
    task: asyncio.Task[None] | None = None
    previous_item: str | None = None  # the conversation item before the reply's
    guess: _Guess | None = None  # set for a reply begun at a pause

    @property
    def undecided_at(self) -> int | None:
        """Where the speech paused, for a guess not yet confirmed or dropped; else None."""
        return self.guess.at if self.guess is not None and not self.guess.decided.done() else None

    @property
    def undecided(self) -> bool:
        return self.undecided_at is not None

    @property
    def held_back(self) -> bool:
        """Whether its events are kept from the client: a guess not (or never to be) confirmed."""
        return self.guess is not None and not (self.guess.decided.done() and self.guess.decided.result())

    def heard(self) -> str:
        """The reply's text up to `heard_ms` of its audio (all of it sent, if the client did not say); a
        text reply is heard as sent."""
        if not self.config.audio:
            return "".join(self.text).strip()
        end = self.sent_ms if self.heard_ms is None else min(self.heard_ms, self.sent_ms)
        spoken: list[str] = []
        for start, stop, text in _chunks(self.pieces):
            if stop <= end:
                spoken.append(text)
            elif start < end:
                words = text.split()
                spoken.append(" ".join(words[: max(1, round(len(words) * (end - start) / (stop - start)))]))
                break
            else:
                break
        return " ".join(spoken).strip()


def _chunks(pieces: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Audio pieces joined into the chunks of text they speak (a chunk may arrive in several pieces)."""
    joined: list[tuple[int, int, str]] = []
    for start, stop, text in pieces:
        if joined and joined[-1][2] == text and joined[-1][1] == start:
            joined[-1] = (joined[-1][0], stop, text)
        else:
            joined.append((start, stop, text))
    return joined


@dataclass
class _Exchange:
    """The last answered turn, not yet stored: a truncation can still cut it."""

    item_id: str
    user: str
    reply: _Reply
    assistant: str


class RealtimeSession:
    """One WebSocket's conversation: events in, turns heard, replies streamed, barge-in."""

    def __init__(
        self,
        socket: WebSocket,
        assistant: Assistant,
        asr: ASR | None,
        speech: SpeechService,
        namespace: str,
        conversation_id: str,
        limits: RealtimeLimits,
    ) -> None:
        self.socket = socket
        self.assistant = assistant
        self.asr = asr
        self.speech = speech
        self.namespace = namespace
        self.conversation_id = conversation_id
        self.limits = limits
        self.session_id = new_id("sess")
        self.config = SessionConfig()
        self.turns: list[ChatMessage] = []
        self._send_lock = asyncio.Lock()
        self._input = _InputAudio()
        self._vad: StreamingVAD | None = None
        self._detector: TurnDetector | None = None
        self._resampler: Any = None
        self._speech_item: str | None = None  # the user item the current speech will become
        self._speech_start = 0  # where it began, in samples
        self._last_item: str | None = None
        self._unanswered: list[str] = []  # user turns heard but not yet answered
        self._hearing: asyncio.Task[None] | None = None  # transcriptions, one after another
        self._guess: tuple[int, asyncio.Task[str]] | None = None  # a pause's transcript, being heard
        self._vad_position = 0
        self._reply: _Reply | None = None
        self._exchange: _Exchange | None = None
        self._closed = False

    # The connection

    async def run(self) -> None:
        await self._load_conversation()
        self._reset_vad()
        await self.send({"type": "session.created", "session": self.config.to_dict(self.session_id)})
        await self.send(
            {
                "type": "conversation.created",
                "conversation": {"id": self.conversation_id, "object": "realtime.conversation"},
            }
        )
        try:
            while (text := await self._receive()) is not None:
                await self._handle(text)
        finally:
            self._closed = True
            await self._cancel_reply("client_disconnected", wait=True)
            if self._guess is not None:
                self._guess[1].cancel()
            if self._hearing is not None:
                self._hearing.cancel()
                await asyncio.gather(self._hearing, return_exceptions=True)
            await self._store_exchange()

    async def _receive(self) -> str | None:
        """The next text message; None once the client left or stayed silent too long."""
        while True:
            try:
                message = await asyncio.wait_for(self.socket.receive(), self.limits.idle_s)
            except TimeoutError:
                if self._busy():
                    continue  # a reply or a transcription is under way: the session is not idle
                error = FishvoiceError("timeout", f"the session was idle for {self.limits.idle_s:g} s and is closed")
                await self.send(error_event(error))
                await self._close(1000, "idle")
                return None
            if message["type"] == "websocket.disconnect":
                return None
            text = message.get("text")
            if text is None:
                await self.send_error(invalid("message", "send JSON events as text messages, not binary"))
                continue
            if len(text.encode()) > self.limits.max_message_bytes:
                limit = self.limits.max_message_bytes / 2**20
                await self.send_error(
                    FishvoiceError("payload_too_large", f"message: larger than {limit:g} MB", "message")
                )
                continue
            return str(text)

    def _busy(self) -> bool:
        return self._reply is not None or (self._hearing is not None and not self._hearing.done())

    async def send(self, event: dict[str, Any]) -> None:
        """Send one event (in order: one sender at a time); a gone client is not an error here."""
        event = {"event_id": new_id("event"), **event}
        async with self._send_lock:
            if self.socket.application_state != WebSocketState.CONNECTED:
                return
            with suppress(Exception):
                await self.socket.send_text(json.dumps(event, separators=(",", ":")))

    async def send_error(self, error: FishvoiceError, client_event_id: str | None = None) -> None:
        log.info("realtime %s: %s (%s)", self.session_id, error.message, error.code)
        await self.send(error_event(error, client_event_id))

    async def _close(self, code: int, reason: str) -> None:
        if self.socket.application_state == WebSocketState.CONNECTED:
            with suppress(Exception):
                await self.socket.close(code, reason)

    # Client events

    async def _handle(self, text: str) -> None:
        event_id: str | None = None
        try:
            try:
                event = json.loads(text)
            except json.JSONDecodeError as exc:
                raise invalid("message", f"not valid JSON ({exc.msg})") from None
            if not isinstance(event, dict):
                raise invalid("message", "an event must be a JSON object")
            event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
            kind = event.get("type")
            handler = self._handlers().get(kind) if isinstance(kind, str) else None
            if handler is None:
                raise invalid("type", f"unknown or unsupported event type {str(kind)[:60]!r}")
            await handler(event)
        except FishvoiceError as error:
            await self.send_error(error, event_id)
        except Exception as exc:  # a fault of ours: said as `internal`, and the session goes on
            log.error("realtime %s: an event failed", self.session_id, exc_info=exc)
            await self.send_error(as_api_error(exc), event_id)

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[None]]]:
        return {
            "session.update": self._update_session,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit_buffer,
            "input_audio_buffer.clear": self._clear_buffer,
            "conversation.item.create": self._create_item,
            "response.create": self._create_response,
            "response.cancel": self._cancel_response,
            "conversation.item.truncate": self._truncate,
        }

    async def _update_session(self, event: dict[str, Any]) -> None:
        config = update_config(self.config, event.get("session"))
        if config.voice != self.config.voice:
            await self._check_voice(config.voice, "session.audio.output.voice")
        vad_changed = config.turns != self.config.turns
        self.config = config
        if vad_changed:
            self._reset_vad()
        await self.send({"type": "session.updated", "session": self.config.to_dict(self.session_id)})

    async def _check_voice(self, voice: str, path: str) -> None:
        if voice != DEFAULT_VOICE and await self.assistant.store.saved_voice(self.namespace, voice) is None:
            raise FishvoiceError("not_found", f"{path}: no saved voice {voice[:60]!r}", path)

    async def _append(self, event: dict[str, Any]) -> None:
        samples = _pcm16(event.get("audio"), "audio")
        if self.config.turns is None and self._input.size + samples.size > MAX_TURN_MS * _PER_MS:
            raise FishvoiceError(
                "payload_too_large",
                f"audio: the buffer would hold more than {MAX_TURN_MS // 1000} s; commit or clear it",
                "audio",
            )
        self._input.append(samples)
        if self._vad is not None:
            await self._detect_turns(samples)

    async def _commit_buffer(self, event: dict[str, Any]) -> None:
        if self._input.size < MIN_COMMIT_MS * _PER_MS:
            held = self._input.size // _PER_MS
            raise FishvoiceError(
                "invalid_audio",
                f"input_audio_buffer: holds {held} ms of audio; commit at least {MIN_COMMIT_MS} ms",
                "input_audio_buffer",
            )
        item_id = self._speech_item or new_id("item")
        self._speech_item = None
        self._reset_vad()
        await self._commit(self._input.take(self._input.start, self._input.end), item_id, respond=False)

    async def _clear_buffer(self, event: dict[str, Any]) -> None:
        self._input.clear()
        self._speech_item = None
        self._reset_vad()
        await self.send({"type": "input_audio_buffer.cleared"})

    async def _create_item(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, dict) or item.get("type", "message") != "message":
            raise invalid("item", "must be a message item")
        if item.get("role") != "user":
            raise invalid("item.role", "only user messages can be added")
        content = item.get("content")
        if not isinstance(content, list) or not content:
            raise invalid("item.content", "must be a non-empty list of input_text parts")
        texts = []
        for number, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in ("input_text", "text"):
                raise invalid(f"item.content[{number}].type", "only input_text parts are supported here")
            if not isinstance(part.get("text"), str):
                raise invalid(f"item.content[{number}].text", "required, a string")
            texts.append(part["text"])
        text = " ".join(texts).strip()
        if not text:
            raise invalid("item.content", "the message is empty")
        if len(text) > MAX_MESSAGE_CHARS:
            raise invalid("item.content", f"must be at most {MAX_MESSAGE_CHARS} characters (got {len(text)})")
        item_id = (
            item["id"] if isinstance(item.get("id"), str) and CONVERSATION_ID.match(item["id"]) else new_id("item")
        )
        self._unanswered.append(text)
        added = {"previous_item_id": self._last_item, "item": user_item(item_id, text=text)}
        self._last_item = item_id
        await self.send({"type": "conversation.item.added", **added})
        await self.send({"type": "conversation.item.done", **added})

    async def _create_response(self, event: dict[str, Any]) -> None:
        if self._reply is not None and self._reply.undecided:
            self._discard(self._reply)
        if self._reply is not None:
            raise FishvoiceError("conflict", "response.create: a response is already in progress", "response")
        config = response_overrides(self.config, event.get("response"))
        if config.voice != self.config.voice:
            await self._check_voice(config.voice, "response.audio.output.voice")
        if self._hearing is not None:
            await asyncio.shield(self._hearing)  # the committed turn is heard before it is answered
        if not self._unanswered:
            raise invalid("response.create", "there is nothing to answer: commit speech or add a user message first")
        await self._start_reply(config)

    async def _cancel_response(self, event: dict[str, Any]) -> None:
        if self._reply is None or self._reply.undecided:  # a guessed reply is not the client's to cancel
            raise invalid("response.cancel", "no response is in progress")
        await self._cancel_reply("client_cancelled")

    async def _truncate(self, event: dict[str, Any]) -> None:
        item_id, audio_end_ms = event.get("item_id"), event.get("audio_end_ms")
        if isinstance(audio_end_ms, bool) or not isinstance(audio_end_ms, int) or audio_end_ms < 0:
            raise invalid("audio_end_ms", "required, a whole number of milliseconds >= 0")
        if self._reply is not None and self._reply.summary.item_id == item_id:
            self._reply.heard_ms = audio_end_ms
            await self._cancel_reply("client_cancelled")
        elif self._exchange is not None and self._exchange.item_id == item_id:
            self._cut_exchange(self._exchange, audio_end_ms)
        else:
            raise FishvoiceError(
                "not_found", f"item_id: no assistant reply {str(item_id)[:60]!r} to truncate", "item_id"
            )
        await self.send(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": audio_end_ms,
            }
        )

    # Turns

    def _reset_vad(self) -> None:
        turns = self.config.turns
        self._vad = StreamingVAD() if turns is not None else None
        self._detector = TurnDetector(turns) if turns is not None else None
        self._resampler = soxr.ResampleStream(REALTIME_RATE, VAD_RATE, 1, dtype="float32") if turns else None
        self._vad_position = self._input.end  # stream sample where the detector's clock starts
        if self._guess is not None:
            self._guess[1].cancel()
            self._guess = None
        if self._reply is not None and self._reply.undecided:
            self._discard(self._reply)

    async def _detect_turns(self, samples: npt.NDArray[np.float32]) -> None:
        assert self._vad is not None and self._detector is not None and self.config.turns is not None
        turns = self.config.turns
        probabilities = self._vad.feed(self._resampler.resample_chunk(samples))
        for change in self._detector.feed(probabilities):
            at = self._vad_position + change.at_ms * _PER_MS
            if isinstance(change, SpeechStarted):
                await self._speech_started(at)
            elif isinstance(change, SpeechPaused):
                self._guess_transcript(at)
            else:
                await self._speech_stopped(at)
        if self._detector.speaking and self._input.end - self._speech_start > MAX_TURN_MS * _PER_MS:
            await self._speech_stopped(self._input.end)  # a turn longer than ASR takes is cut here
            self._reset_vad()
        elif not self._detector.speaking and self._speech_item is None:
            self._input.keep_last((turns.prefix_ms + 200) * _PER_MS)

    async def _speech_started(self, at: int) -> None:
        assert self.config.turns is not None
        self._speech_item = new_id("item")
        self._speech_start = max(at - self.config.turns.prefix_ms * _PER_MS, self._input.start)
        log.info("realtime %s: speech started at %d ms", self.session_id, at // _PER_MS)
        await self.send(
            {"type": "input_audio_buffer.speech_started", "audio_start_ms": at // _PER_MS, "item_id": self._speech_item}
        )
        if self.config.interrupt_response and self._reply is not None:
            await self._cancel_reply("turn_detected")

    def _guess_transcript(self, at: int) -> None:
        """Start hearing the turn where its speech went quiet, while the silence that would end it is still
        being waited out: if it does end there, its transcript is ready and its reply begun; if the speech
        goes on, both are dropped. One guess at a time: a pause during a guess waits for the stop."""
        if self._reply is not None and self._reply.undecided_at not in (None, at):
            self._discard(self._reply)  # the speech went on after the pause it answered
        if self._guess is not None and not self._guess[1].done():
            return
        samples = self._input.peek(self._speech_start, at + _TAIL)
        self._guess = (at, asyncio.create_task(self._guess_and_answer(at, samples)))

    async def _guess_and_answer(self, at: int, samples: npt.NDArray[np.float32]) -> str:
        text = await self._transcribe(Audio(samples, REALTIME_RATE))
        still_pausing = self._guess is not None and self._guess[0] == at and self._speech_item is not None
        if text and still_pausing and self.config.create_response and self._reply is None and not self._closed:
            await self._start_reply(self.config, guessed=(at, text))
        return text

    async def _speech_stopped(self, at: int) -> None:
        item_id = self._speech_item or new_id("item")
        self._speech_item = None
        await self.send(
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": at // _PER_MS, "item_id": item_id}
        )
        speech = self._input.take(self._speech_start, at + _TAIL)
        guess, self._guess = self._guess, None
        guessed = self._reply if self._reply is not None and self._reply.undecided else None
        if guessed is not None and guessed.undecided_at == at:
            await self._confirm(guessed, item_id)
            return
        if guessed is not None:
            self._discard(guessed)
        transcription = guess[1] if guess is not None and guess[0] == at else None
        if guess is not None and transcription is None:
            guess[1].cancel()
        await self._commit(speech, item_id, respond=self.config.create_response, transcription=transcription)

    async def _commit(
        self,
        samples: npt.NDArray[np.float32],
        item_id: str,
        *,
        respond: bool,
        transcription: asyncio.Task[str] | None = None,
    ) -> None:
        await self._committed(item_id)
        heard = transcription or self._transcription(samples)
        self._hearing = asyncio.create_task(self._hear(heard, item_id, respond, self._hearing))

    async def _committed(self, item_id: str) -> None:
        added = {"previous_item_id": self._last_item, "item_id": item_id}
        self._last_item = item_id
        await self.send({"type": "input_audio_buffer.committed", **added})
        await self.send(
            {
                "type": "conversation.item.added",
                "previous_item_id": added["previous_item_id"],
                "item": user_item(item_id),
            }
        )

    async def _heard(self, item_id: str, text: str) -> None:
        event = {"item_id": item_id, "content_index": 0, "transcript": text}
        await self.send({"type": "conversation.item.input_audio_transcription.completed", **event})

    async def _confirm(self, reply: _Reply, item_id: str) -> None:
        """The turn did end where the guessed reply assumed: the turn goes out, then the reply's events
        kept so far, then the rest as they come."""
        guess = reply.guess
        assert guess is not None
        await self._store_exchange()
        self._unanswered = []
        await self._committed(item_id)
        await self._heard(item_id, guess.said)
        reply.previous_item, self._last_item = item_id, reply.summary.item_id
        while guess.held:
            event = guess.held.pop(0)
            if event["type"] == "conversation.item.added":
                event["previous_item_id"] = item_id
            await self.send(event)
        guess.decided.set_result(True)  # from here its events go out as they come
        log.info("realtime %s: a reply begun at the pause goes out", self.session_id)

    def _discard(self, reply: _Reply) -> None:
        """Drop a guessed reply: the speech went on. None of it was sent."""
        assert reply.guess is not None
        reply.cancelled = "discarded"
        reply.guess.decided.set_result(False)
        log.info("realtime %s: a reply begun at a pause is dropped: the speech went on", self.session_id)
        if reply.task is not None:
            reply.task.cancel()
        if self._reply is reply:
            self._reply = None

    def _transcription(self, samples: npt.NDArray[np.float32]) -> asyncio.Task[str]:
        return asyncio.create_task(self._transcribe(Audio(samples, REALTIME_RATE)))

    async def _transcribe(self, audio: Audio) -> str:
        """What the audio says; cancelled, the recogniser stops (or never starts, if it was waiting)."""
        if self.asr is None:
            raise FishvoiceError("backend_unavailable", "audio: speech recognition is off on this server", "audio")
        asr, language = self.asr, self.config.language
        started = time.perf_counter()
        async with self.speech.work:
            # Cancelled, the recogniser skips the turn if it has not begun it, and the slot is given back
            # only once it let go of the model.
            stop = threading.Event()
            text = await run_in_thread(lambda: asr.hear_turn(audio, language=language, stop=stop), stop=stop)
        elapsed = round((time.perf_counter() - started) * 1000)
        log.info("realtime %s: heard %.1f s of audio in %d ms", self.session_id, audio.duration_s, elapsed)
        return text

    async def _hear(
        self, transcription: asyncio.Task[str], item_id: str, respond: bool, previous: asyncio.Task[None] | None
    ) -> None:
        """A committed turn's transcript (after the turns before it), then its answer if asked."""
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        try:
            try:
                text = (await transcription)[:MAX_MESSAGE_CHARS]
            except FishvoiceError:
                raise
            except Exception as exc:
                log.error("realtime transcription failed", exc_info=exc)
                raise as_api_error(exc) from None
            if not text:
                raise FishvoiceError("invalid_audio", "audio: no speech was recognised in the turn", "audio")
        except FishvoiceError as error:
            await self.send(
                {
                    "type": "conversation.item.input_audio_transcription.failed",
                    "item_id": item_id,
                    "content_index": 0,
                    "error": error_event(error)["error"],
                }
            )
            return
        self._unanswered.append(text)
        await self._heard(item_id, text)
        if respond and self._speech_item is None and not self._closed:
            if self._reply is not None:  # not interrupting: this turn is answered after the reply before it
                await asyncio.gather(self._reply.task or asyncio.sleep(0), return_exceptions=True)
            if self._reply is None:
                await self._start_reply(self.config)

    # Replies

    async def _start_reply(self, config: SessionConfig, guessed: tuple[int, str] | None = None) -> None:
        """Answer what the user said since the last reply; `guessed` (where the speech paused, what it said
        so far): a reply kept back until the turn is confirmed to have ended there."""
        summary = ResponseSummary(new_id("resp"), new_id("item"), config.audio, voice=config.voice)
        if guessed is None:
            reply = _Reply(summary, " ".join(self._unanswered)[:MAX_MESSAGE_CHARS], config)
            self._reply, self._unanswered = reply, []
            reply.previous_item, self._last_item = self._last_item, summary.item_id
        else:
            at, said = guessed
            message = " ".join([*self._unanswered, said])[:MAX_MESSAGE_CHARS]
            guess = _Guess(at, said, asyncio.get_running_loop().create_future())
            reply = self._reply = _Reply(summary, message, config, guess=guess)
        await self._emit(reply, {"type": "response.created", "response": summary.to_dict()})
        reply.task = asyncio.create_task(self._run_reply(reply))
        if guessed is None:  # the turn before, stored while this reply starts (a guess stores it when confirmed)
            await self._store_exchange()

    async def _emit(self, reply: _Reply, event: dict[str, Any]) -> None:
        """One of a reply's events: sent, or kept back while the reply is a guess."""
        if reply.held_back:
            assert reply.guess is not None
            reply.guess.held.append(event)
        else:
            await self.send(event)

    def _request(self, reply: _Reply) -> ReplyRequest:
        config = reply.config
        return ReplyRequest(
            message=reply.message,
            system_message=config.instructions,
            reference_id=None if config.voice == DEFAULT_VOICE else config.voice,
            temperature=min(max(config.temperature, 0.1), 1.0),
            max_tokens=config.max_output_tokens,
            audio_format="pcm16",
            sample_rate=REALTIME_RATE,
            speak=config.audio,
        )

    async def _run_reply(self, reply: _Reply) -> None:
        summary = reply.summary
        ids = {"response_id": summary.response_id, "item_id": summary.item_id, "output_index": 0, "content_index": 0}
        item = assistant_item(summary.item_id, "", reply.config.audio, "in_progress")
        await self._emit(
            reply,
            {"type": "response.output_item.added", "response_id": summary.response_id, "output_index": 0, "item": item},
        )
        added = {"type": "conversation.item.added", "previous_item_id": reply.previous_item, "item": item}
        await self._emit(reply, added)
        text_kind = "response.output_audio_transcript.delta" if reply.config.audio else "response.output_text.delta"
        try:
            async with self.speech.work:
                events = self.assistant.respond(self._request(reply), self.namespace, history=list(self.turns))
                async with aclosing(events) as replies:
                    async for event in replies:
                        if reply.cancelled:
                            break
                        if isinstance(event, TextEvent):
                            reply.text.append(event.text)
                            await self._emit(reply, {"type": text_kind, **ids, "delta": event.text})
                        elif isinstance(event, AudioEvent):
                            await self._send_audio(reply, event, ids)
                        elif isinstance(event, DoneEvent):
                            usage = event.response.usage
                            summary = replace(summary, usage=(usage.prompt_tokens, usage.completion_tokens))
        except asyncio.CancelledError:
            pass  # cancelled by barge-in, response.cancel or a closed session: finished below as such
        except Exception as exc:
            error = as_api_error(exc)
            if not isinstance(exc, FishvoiceError):
                log.error("realtime reply failed", exc_info=exc)
            log.info("realtime %s: reply failed: %s (%s)", self.session_id, error.message, error.code)
            await self._emit(reply, error_event(error))
            summary = replace(summary, status="failed", error=error_event(error)["error"])
        reply.summary = summary
        await self._finish_reply(reply, ids)

    async def _send_audio(self, reply: _Reply, event: AudioEvent, ids: dict[str, Any]) -> None:
        duration_ms = len(event.audio) * 3 // 4 // 2 // _PER_MS  # base64 of pcm16 at 24 kHz
        reply.pieces.append((reply.sent_ms, reply.sent_ms + duration_ms, event.text))
        reply.sent_ms += duration_ms
        await self._emit(reply, {"type": "response.output_audio.delta", **ids, "delta": event.audio})

    async def _finish_reply(self, reply: _Reply, ids: dict[str, Any]) -> None:
        if reply.guess is not None and not await reply.guess.decided:
            return  # a guess the speech went past: nothing of it was sent, nothing is kept
        summary = reply.summary
        if reply.cancelled:
            summary = replace(summary, status="cancelled", reason=reply.cancelled)
        elif summary.status == "in_progress":
            summary = replace(summary, status="completed")
        heard = reply.heard() if summary.status != "failed" else ""
        summary = replace(summary, text=heard)
        reply.summary = summary
        if summary.status == "completed":
            spoken = "".join(reply.text).strip()
            if reply.config.audio:
                await self._emit(reply, {"type": "response.output_audio.done", **ids})
                await self._emit(reply, {"type": "response.output_audio_transcript.done", **ids, "transcript": spoken})
            else:
                await self._emit(reply, {"type": "response.output_text.done", **ids, "text": spoken})
        item = assistant_item(summary.item_id, heard, reply.config.audio, "completed")
        await self._emit(
            reply,
            {"type": "response.output_item.done", "response_id": summary.response_id, "output_index": 0, "item": item},
        )
        await self._emit(reply, {"type": "response.done", "response": summary.to_dict()})
        self._remember(reply, heard)
        if self._reply is reply:
            self._reply = None

    def _remember(self, reply: _Reply, heard: str) -> None:
        """The exchange joins the conversation; a reply nobody heard leaves its question to the next turn."""
        if not heard:
            self._unanswered.insert(0, reply.message)
            return
        self.turns += [{"role": "user", "content": reply.message}, {"role": "assistant", "content": heard}]
        self._exchange = _Exchange(reply.summary.item_id, reply.message, reply, heard)

    def _cut_exchange(self, exchange: _Exchange, heard_ms: int) -> None:
        """The last exchange as far as its reply was heard; heard not at all, its question is unanswered again."""
        exchange.reply.heard_ms = heard_ms
        exchange.assistant = exchange.reply.heard()
        if exchange.assistant:
            self.turns[-1] = {"role": "assistant", "content": exchange.assistant}
            return
        del self.turns[-2:]
        self._exchange = None
        self._unanswered.insert(0, exchange.user)

    async def _cancel_reply(self, reason: str, *, wait: bool = False) -> None:
        """Stop the reply now: nothing more is sent from here; its generation and speech are cancelled."""
        reply = self._reply
        if reply is None or reply.cancelled:
            return
        if reply.undecided:
            self._discard(reply)
            return
        reply.cancelled = reason
        log.info(
            "realtime %s: reply %s cancelled (%s) after %d ms of audio",
            self.session_id,
            reply.summary.response_id,
            reason,
            reply.sent_ms,
        )
        if reply.task is not None:
            reply.task.cancel()
            if wait:
                await asyncio.gather(reply.task, return_exceptions=True)

    # The conversation

    async def _load_conversation(self) -> None:
        conversation = await self.assistant.store.load(self.namespace, self.conversation_id)
        self.turns = list(conversation.turns)
        if conversation.system_message:
            self.config = replace(self.config, instructions=conversation.system_message)

    async def _store_exchange(self) -> None:
        exchange, self._exchange = self._exchange, None
        if exchange is None:
            return
        try:
            await self.assistant.store.append_exchange(
                self.namespace,
                self.conversation_id,
                exchange.user,
                exchange.assistant,
                system_message=exchange.reply.config.instructions,
                voice_hash=None,
            )
        except FishvoiceError as error:
            await self.send_error(error)


def _pcm16(value: Any, field: str) -> npt.NDArray[np.float32]:
    """Base64 pcm16 (little-endian, mono) as float samples."""
    if not isinstance(value, str):
        raise invalid(field, "required, base64 of pcm16 audio")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise FishvoiceError("invalid_audio", f"{field}: not valid base64", field) from None
    if len(data) % 2:
        raise FishvoiceError("invalid_audio", f"{field}: pcm16 needs an even number of bytes", field)
    return from_pcm16(data)


def _offered_key(socket: WebSocket) -> str | None:
    """The key a client gave: a bearer header, `?api_key=`, or a browser's key subprotocol."""
    scheme, _, given = socket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and given.strip():
        return given.strip()
    if key := socket.query_params.get("api_key"):
        return key
    for protocol in socket.scope.get("subprotocols", []):
        if protocol.startswith(_KEY_PROTOCOL):
            return str(protocol[len(_KEY_PROTOCOL) :])
    return None


@dataclass
class OpenSessions:
    """Realtime sessions open now: what the limit counts, and /health shows."""

    count: int = 0


def build_realtime_router(
    assistant: Assistant,
    asr: ASR | None,
    speech: SpeechService,
    auth: Auth,
    limits: RealtimeLimits,
    open_sessions: OpenSessions,
) -> APIRouter:
    router = APIRouter()

    @router.websocket("/v1/realtime")
    async def realtime(socket: WebSocket) -> None:
        offered = socket.scope.get("subprotocols", [])
        await socket.accept(subprotocol="realtime" if "realtime" in offered else None)
        refusal, code = None, 1008
        conversation_id = socket.query_params.get("conversation_id") or new_id("conv")
        try:
            namespace = auth.namespace(_offered_key(socket))
        except FishvoiceError as error:
            refusal = error
        if refusal is None and not CONVERSATION_ID.match(conversation_id):
            refusal = invalid("conversation_id", "must be 1 to 128 characters of A-Z a-z 0-9 . _ : -")
        if refusal is None and open_sessions.count >= limits.sessions:
            refusal, code = (
                FishvoiceError(
                    "backend_unavailable", f"all {limits.sessions} realtime sessions are in use; try again later"
                ),
                1013,
            )
        if refusal is not None:
            await socket.send_text(json.dumps({"event_id": new_id("event"), **error_event(refusal)}))
            await socket.close(code, refusal.code)
            return
        open_sessions.count += 1
        session = RealtimeSession(socket, assistant, asr, speech, namespace, conversation_id, limits)
        log.info("realtime %s: open (conversation %s)", session.session_id, conversation_id)
        try:
            await session.run()
        except FishvoiceError as error:  # the store failed as the session began
            await session.send_error(error)
        finally:
            open_sessions.count -= 1
            await session._close(1000, "done")
            log.info("realtime %s: closed", session.session_id)
            await run_in_thread(release_free_memory)  # what the session's replies freed, back to the system

    return router
