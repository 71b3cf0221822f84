"""Turn taking: the user's speech cut into turns (server VAD, or the client's commits), each heard by the
recogniser and answered. To answer within a breath, a turn is heard, and its reply begun, where the speech
pauses: the reply is held back until the silence confirms the turn ended there (then it goes out), and
dropped if the speech goes on. Speech that starts during a reply cancels it (barge-in)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import soxr

from ... import metrics
from ...asr.base import ASR
from ...audio import Audio
from ...contract import MAX_MESSAGE_CHARS
from ...errors import FishvoiceError, as_api_error
from ...speech_service import WorkLimit
from ...threads import run_in_thread
from ...vad import TAIL_MS, VAD_RATE, SpeechPaused, SpeechStarted, StreamingVAD, TurnDetector, reads_finished
from ...voices import MAX_REFERENCE_S
from .connection import Connection
from .conversation import Conversation
from .input_audio import PER_MS, InputAudio
from .protocol import REALTIME_RATE, SessionConfig, error_event, new_id, user_item
from .reply import Reply
from .responses import Responder

log = logging.getLogger(__name__)

MAX_TURN_MS = int(MAX_REFERENCE_S * 1000)
_TAIL = TAIL_MS * PER_MS
# The user's turn when server VAD's idle_timeout_ms passed in silence: the reply prompts them to go on.
IDLE_TURN = "(silence)"


@dataclass
class PauseHearing:
    """The turn heard where its speech paused (at `at`, in input samples), while the silence that would end
    it is still being waited out."""

    at: int
    transcript: asyncio.Task[str]


class TurnTaking:
    """The session's turns: `detect` feeds the voice activity, `commit` takes the buffer as a turn."""

    def __init__(
        self,
        connection: Connection,
        asr: ASR | None,
        work: WorkLimit,
        conversation: Conversation,
        replies: Responder,
        config: Callable[[], SessionConfig],
    ):
        self.connection = connection
        self.asr = asr
        self.work = work
        self.conversation = conversation
        self.replies = replies
        self.config = config  # the session's settings as they are now
        self.input = InputAudio()
        self.speech_item: str | None = None  # the user item the current speech will become
        self.closed = False
        self._speech_start = 0  # where it began, in samples
        self._vad: StreamingVAD | None = None
        self._detector: TurnDetector | None = None
        self._resampler: Any = None
        self._vad_position = 0
        self._hearing: asyncio.Task[None] | None = None  # transcriptions, one after another
        self._pause: PauseHearing | None = None
        self._heard_at = time.perf_counter()  # the user's last speech, for idle_timeout_ms

    def busy(self) -> bool:
        return self.replies.current is not None or (self._hearing is not None and not self._hearing.done())

    async def hearing_done(self) -> None:
        """Wait for the committed turns to be heard (each is heard before it is answered)."""
        if self._hearing is not None:
            await asyncio.shield(self._hearing)

    async def close(self) -> None:
        self.closed = True
        if self._pause is not None:
            self._pause.transcript.cancel()
        if self._hearing is not None:
            self._hearing.cancel()
            await asyncio.gather(self._hearing, return_exceptions=True)

    def reset(self) -> None:
        """Voice activity from here on as the settings say (none with `turn_detection: null`); a guess in
        flight is dropped."""
        turns = self.config().turns
        self._vad = StreamingVAD() if turns is not None else None
        self._detector = TurnDetector(turns) if turns is not None else None
        self._resampler = soxr.ResampleStream(REALTIME_RATE, VAD_RATE, 1, dtype="float32") if turns else None
        self._vad_position = self.input.end  # stream sample where the detector's clock starts
        if self._pause is not None:
            self._pause.transcript.cancel()
            self._pause = None
        if (guessed := self.replies.undecided) is not None:
            self.replies.discard(guessed)

    async def append(self, samples: npt.NDArray[np.float32]) -> None:
        config = self.config()
        if config.turns is None and self.input.size + samples.size > MAX_TURN_MS * PER_MS:
            raise FishvoiceError(
                "payload_too_large",
                f"audio: the buffer would hold more than {MAX_TURN_MS // 1000} s; commit or clear it",
                "audio",
            )
        self.input.append(samples)
        if self._vad is not None:
            await self._detect(samples)

    async def _detect(self, samples: npt.NDArray[np.float32]) -> None:
        assert self._vad is not None and self._detector is not None
        turns = self.config().turns
        assert turns is not None
        probabilities = self._vad.feed(self._resampler.resample_chunk(samples))
        for change in self._detector.feed(probabilities):
            at = self._vad_position + change.at_ms * PER_MS
            if isinstance(change, SpeechStarted):
                await self.speech_started(at)
            elif isinstance(change, SpeechPaused):
                self.speech_paused(at)
            else:
                await self.speech_stopped(at)
        if self._detector.speaking and self.input.end - self._speech_start > MAX_TURN_MS * PER_MS:
            await self.speech_stopped(self.input.end)  # a turn longer than ASR takes is cut here
            self.reset()
        elif not self._detector.speaking and self.speech_item is None:
            self.input.keep_last((turns.prefix_ms + 200) * PER_MS)
            if turns.idle_ms is not None:
                await self._prompt_if_idle(turns.idle_ms)

    async def _prompt_if_idle(self, idle_ms: int) -> None:
        """Server VAD's idle timeout: silent this long since the user's speech and the last reply's audio, the
        silence is the user's turn (`input_audio_buffer.timeout_triggered`) and the reply prompts them."""
        now = time.perf_counter()
        if self.busy() or now - max(self._heard_at, self.replies.playback_ends) < idle_ms / 1000:
            return
        self._heard_at, item_id, end = now, new_id("item"), self.input.end
        log.info("realtime %s: silent for %d ms: the user is prompted", self.connection.session_id, idle_ms)
        span = {"audio_start_ms": max(0, end // PER_MS - idle_ms), "audio_end_ms": end // PER_MS}
        await self.connection.send({"type": "input_audio_buffer.timeout_triggered", **span, "item_id": item_id})
        silence = self.input.take(end - idle_ms * PER_MS, end)
        await self.commit(silence, item_id, respond=True, transcript=asyncio.create_task(_said(IDLE_TURN)))

    async def speech_started(self, at: int) -> None:
        self._heard_at = time.perf_counter()
        config = self.config()
        assert config.turns is not None
        self.speech_item = new_id("item")
        self._speech_start = max(at - config.turns.prefix_ms * PER_MS, self.input.start)
        log.info("realtime %s: speech started at %d ms", self.connection.session_id, at // PER_MS)
        await self.connection.send(
            {"type": "input_audio_buffer.speech_started", "audio_start_ms": at // PER_MS, "item_id": self.speech_item}
        )
        if config.interrupt_response and self.replies.current is not None:
            await self.replies.cancel("turn_detected")

    def speech_paused(self, at: int) -> None:
        """Start hearing the turn where its speech went quiet, while the silence that would end it is still
        being waited out: if it does end there, its transcript is ready and its reply begun; if the speech
        goes on, both are dropped. One guess at a time: a pause during a guess waits for the stop."""
        if (guessed := self.replies.undecided) is not None and guessed.undecided_at != at:
            self.replies.discard(guessed)  # the speech went on after the pause it answered
        if self._pause is not None and not self._pause.transcript.done():
            return
        samples = self.input.peek(self._speech_start, at + _TAIL)
        self._pause = PauseHearing(at, asyncio.create_task(self._guess_and_answer(at, samples)))

    async def _guess_and_answer(self, at: int, samples: npt.NDArray[np.float32]) -> str:
        text = await self._transcribe(Audio(samples, REALTIME_RATE))
        still_pausing = self._pause is not None and self._pause.at == at and self.speech_item is not None
        if still_pausing and self._detector is not None:
            self._detector.heard(reads_finished(text))  # semantic VAD: what was said sets the silence to wait
        config = self.config()
        if text and still_pausing and config.answers_turns and self.replies.current is None and not self.closed:
            await self.replies.start(config, guessed=(at, text))
        return text

    async def speech_stopped(self, at: int) -> None:
        item_id = self.speech_item or new_id("item")
        self.speech_item, self._heard_at = None, time.perf_counter()
        # The speech ended `at`; the client streams in real time, so that was this long ago.
        self.replies.turn_ended = time.perf_counter() - (self.input.end - at) / (PER_MS * 1000)
        await self.connection.send(
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": at // PER_MS, "item_id": item_id}
        )
        speech = self.input.take(self._speech_start, at + _TAIL)
        pause, self._pause = self._pause, None
        guessed = self.replies.undecided
        if guessed is not None and guessed.undecided_at == at:
            await self._confirm(guessed, item_id)
            return
        if guessed is not None:
            self.replies.discard(guessed)
        transcript = pause.transcript if pause is not None and pause.at == at else None
        if pause is not None and transcript is None:
            pause.transcript.cancel()
        await self.commit(speech, item_id, respond=self.config().answers_turns, transcript=transcript)

    async def commit(
        self,
        samples: npt.NDArray[np.float32],
        item_id: str,
        *,
        respond: bool,
        transcript: asyncio.Task[str] | None = None,
    ) -> None:
        """The samples become the user's turn `item_id`: heard (after the turns before it), then answered
        if `respond`."""
        await self._send_committed(item_id)
        heard = transcript or asyncio.create_task(self._transcribe(Audio(samples, REALTIME_RATE)))
        self._hearing = asyncio.create_task(self._hear(heard, item_id, respond, self._hearing))

    async def _send_committed(self, item_id: str) -> None:
        metrics.REALTIME_TURNS.inc()
        previous, self.conversation.last_item = self.conversation.last_item, item_id
        await self.connection.send(
            {"type": "input_audio_buffer.committed", "previous_item_id": previous, "item_id": item_id}
        )
        item = self.conversation.keep(user_item(item_id))
        await self.connection.send({"type": "conversation.item.added", "previous_item_id": previous, "item": item})

    async def _send_transcript(self, item_id: str, text: str) -> None:
        """The turn's transcript: a delta (all of it, as OpenAI's whisper-1 sends it), then the completed event."""
        if item_id in self.conversation.items:
            self.conversation.keep(user_item(item_id, transcript=text))
        heard = {"item_id": item_id, "content_index": 0}
        await self.connection.send(
            {"type": "conversation.item.input_audio_transcription.delta", **heard, "delta": text}
        )
        await self.connection.send(
            {"type": "conversation.item.input_audio_transcription.completed", **heard, "transcript": text}
        )

    async def _confirm(self, reply: Reply, item_id: str) -> None:
        """The turn did end where the guessed reply assumed: the turn goes out, then the reply's events
        kept so far, then the rest as they come."""
        guess = reply.guess
        assert guess is not None
        reply.turn_ended, self.replies.turn_ended = self.replies.turn_ended, None
        await self.replies.store_exchange()
        self.conversation.unanswered = []
        await self._send_committed(item_id)
        await self._send_transcript(item_id, guess.said)
        reply.previous_item, self.conversation.last_item = item_id, reply.summary.item_id
        while guess.held:
            event = guess.held.pop(0)
            if event["type"] == "conversation.item.added":
                event["previous_item_id"] = item_id
            await self.replies.send(reply, event)
        guess.decided.set_result(True)  # from here its events go out as they come
        log.info("realtime %s: a reply begun at the pause goes out", self.connection.session_id)

    async def _transcribe(self, audio: Audio) -> str:
        """What the audio says; cancelled, the recogniser stops (or never starts, if it was waiting)."""
        if self.asr is None:
            raise FishvoiceError("backend_unavailable", "audio: speech recognition is off on this server", "audio")
        asr, language = self.asr, self.config().language
        started = time.perf_counter()
        async with self.work:
            # Cancelled, the recogniser skips the turn if it has not begun it, and the slot is given back
            # only once it let go of the model.
            stop = threading.Event()
            with metrics.hearing():
                text = await run_in_thread(lambda: asr.hear_turn(audio, language=language, stop=stop), stop=stop)
        elapsed = round((time.perf_counter() - started) * 1000)
        log.info("realtime %s: heard %.1f s of audio in %d ms", self.connection.session_id, audio.duration_s, elapsed)
        return text

    async def _hear(
        self, transcript: asyncio.Task[str], item_id: str, respond: bool, previous: asyncio.Task[None] | None
    ) -> None:
        """A committed turn's transcript (after the turns before it), then its answer if asked."""
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        try:
            text = await _recognised(transcript)
        except FishvoiceError as error:
            failed = {"item_id": item_id, "content_index": 0, "error": error_event(error)["error"]}
            await self.connection.send({"type": "conversation.item.input_audio_transcription.failed", **failed})
            return
        self.conversation.unanswered.append(text)
        await self._send_transcript(item_id, text)
        if respond and self.speech_item is None and not self.closed:
            if self.replies.current is not None:  # not interrupting: answered after the reply before it
                await asyncio.gather(self.replies.current.task or asyncio.sleep(0), return_exceptions=True)
            if self.replies.current is None:
                await self.replies.start(self.config())


async def _said(text: str) -> str:
    return text


async def _recognised(transcript: asyncio.Task[str]) -> str:
    """The turn's text; a failure (none heard included) as the contract's error."""
    try:
        text = (await transcript)[:MAX_MESSAGE_CHARS]
    except FishvoiceError:
        raise
    except Exception as exc:
        log.error("realtime transcription failed", exc_info=exc)
        raise as_api_error(exc) from None
    if not text:
        raise FishvoiceError("invalid_audio", "audio: no speech was recognised in the turn", "audio")
    return text
