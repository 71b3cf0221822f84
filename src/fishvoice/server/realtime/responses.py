"""The session's replies: begun, streamed as text and audio, held back while a guess, then confirmed or
dropped, cancelled (barge-in, `response.cancel`, a closed session) and truncated to what was heard."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from ... import metrics, tracing
from ...assistant import Assistant
from ...audio import G711_RATE, from_pcm16, to_g711
from ...contract import (
    MAX_MESSAGE_CHARS,
    AudioEvent,
    DoneEvent,
    ReplyRequest,
    TextEvent,
    ToolCallDelta,
    WordsEvent,
)
from ...errors import FishvoiceError, as_api_error
from ...speech_service import WorkLimit, saved_voice_id
from .calls import call_events, calls_done
from .connection import Connection
from .conversation import Conversation
from .input_audio import PER_MS
from .protocol import (
    REALTIME_RATE,
    WORDS_EVENT,
    AudioFormatName,
    OutOfBand,
    ResponseSummary,
    SessionConfig,
    assistant_item,
    error_event,
    new_id,
)
from .reply import Guess, Reply

log = logging.getLogger(__name__)


class Responder:
    """At most one reply at a time (`current`); the conversation learns what each reply's listener heard."""

    def __init__(self, connection: Connection, assistant: Assistant, work: WorkLimit, conversation: Conversation):
        self.connection = connection
        self.assistant = assistant
        self.work = work
        self.conversation = conversation
        self.current: Reply | None = None
        self.turn_ended: float | None = None  # when the user's last turn ended (perf_counter), for the next reply
        self.playback_ends = 0.0  # when the last reply's audio is done playing, about (perf_counter)

    @property
    def undecided(self) -> Reply | None:
        """The current reply, if it is a guess not yet confirmed or dropped."""
        return self.current if self.current is not None and self.current.undecided else None

    async def start(
        self, config: SessionConfig, guessed: tuple[int, str] | None = None, out_of_band: OutOfBand | None = None
    ) -> None:
        """Answer what the user said since the last reply; `guessed` (where the speech paused, what it said
        so far): a reply kept back until the turn is confirmed to have ended there; `out_of_band`: a reply
        outside the conversation (`conversation: "none"`)."""
        conversation = self.conversation
        summary = ResponseSummary(
            new_id("resp"), new_id("item"), config.audio, voice=config.voice, audio_format=config.output_format
        )
        if out_of_band is not None:
            summary = replace(summary, metadata=out_of_band.metadata)
        if out_of_band is not None and out_of_band.alone:
            message = out_of_band.message or " ".join(conversation.unanswered)
            reply = self.current = Reply(summary, message[:MAX_MESSAGE_CHARS], config, out_of_band=True)
        elif guessed is None and not conversation.unanswered and (opened := conversation.open_exchange()):
            history, message, after = opened  # going on from a function's result: a forced call is made once
            relaxed = replace(config.tools, choice="auto") if config.tools.choice != "none" else config.tools
            reply = Reply(summary, message, replace(config, tools=relaxed), history=history, after=after)
            self.current = reply
            reply.previous_item, conversation.last_item = conversation.last_item, summary.item_id
        elif guessed is None:
            reply = Reply(summary, " ".join(conversation.unanswered)[:MAX_MESSAGE_CHARS], config)
            self.current, conversation.unanswered = reply, []
            reply.previous_item, conversation.last_item = conversation.last_item, summary.item_id
        else:
            at, said = guessed
            message = " ".join([*conversation.unanswered, said])[:MAX_MESSAGE_CHARS]
            guess = Guess(at, said, asyncio.get_running_loop().create_future())
            reply = self.current = Reply(summary, message, config, guess=guess)
        if not reply.after:
            reply.history = list(conversation.turns)
        if guessed is None:  # a guess learns when the turn ended once it is confirmed
            reply.turn_ended, self.turn_ended = self.turn_ended, None
        await self.emit(reply, {"type": "response.created", "response": summary.to_dict()})
        reply.task = asyncio.create_task(self._run(reply))
        if guessed is None and not reply.out_of_band:  # the turn before, stored while this reply starts (a guess
            await self.store_exchange()  # stores it when confirmed)

    async def emit(self, reply: Reply, event: dict[str, Any]) -> None:
        """One of a reply's events: sent, or kept back while the reply is a guess."""
        if reply.held_back:
            assert reply.guess is not None
            reply.guess.held.append(event)
        else:
            await self.send(reply, event)

    async def send(self, reply: Reply, event: dict[str, Any]) -> None:
        """One of a reply's events out to the client; its first audio ends the voice-to-voice time."""
        await self.connection.send(event)
        if event["type"] == "response.output_item.added" and not reply.out_of_band:  # the client knows it now
            self.conversation.keep(event["item"])
        if event["type"] == "response.output_audio.delta" and not reply.audio_out:
            reply.audio_out = True
            if reply.turn_ended is not None:
                metrics.VOICE_TO_VOICE_SECONDS.observe(time.perf_counter() - reply.turn_ended)

    async def cancel(self, reason: str, *, wait: bool = False) -> None:
        """Stop the reply now: nothing more is sent from here; its generation and speech are cancelled."""
        reply = self.current
        if reply is None or reply.cancelled:
            return
        if reply.undecided:
            self.discard(reply)
            return
        reply.cancelled = reason
        if reason == "turn_detected":
            metrics.REALTIME_BARGE_INS.inc()
        log.info(
            "realtime %s: reply %s cancelled (%s) after %d ms of audio",
            self.connection.session_id,
            reply.summary.response_id,
            reason,
            reply.sent_ms,
        )
        if reply.task is not None:
            reply.task.cancel()
            if wait:
                await asyncio.gather(reply.task, return_exceptions=True)

    def discard(self, reply: Reply) -> None:
        """Drop a guessed reply: the speech went on. None of it was sent."""
        assert reply.guess is not None
        reply.cancelled = "discarded"
        reply.guess.decided.set_result(False)
        log.info("realtime %s: a reply begun at a pause is dropped: the speech went on", self.connection.session_id)
        if reply.task is not None:
            reply.task.cancel()
        if self.current is reply:
            self.current = None

    async def truncate(self, item_id: Any, audio_end_ms: int) -> None:
        """The client played `audio_end_ms` of the reply `item_id`: the conversation keeps what that says."""
        exchange = self.conversation.exchange
        if self.current is not None and self.current.summary.item_id == item_id:
            self.current.heard_ms = audio_end_ms
            await self.cancel("client_cancelled")
        elif exchange is not None and exchange.item_id == item_id:
            self.conversation.cut(audio_end_ms)
        else:
            raise FishvoiceError(
                "not_found", f"item_id: no assistant reply {str(item_id)[:60]!r} to truncate", "item_id"
            )

    async def store_exchange(self) -> None:
        try:
            await self.conversation.store_exchange()
        except FishvoiceError as error:
            await self.connection.send_error(error)

    async def _run(self, reply: Reply) -> None:
        tracing.restart_clock()  # the reply's first audio is timed from its start
        summary = reply.summary
        ids = {"response_id": summary.response_id, "item_id": summary.item_id, "output_index": 0, "content_index": 0}
        try:
            await self._stream(reply, ids)
        except asyncio.CancelledError:
            pass  # cancelled by barge-in, response.cancel or a closed session: finished below as such
        except Exception as exc:
            error = as_api_error(exc)
            if not isinstance(exc, FishvoiceError):
                log.error("realtime reply failed", exc_info=exc)
            log.info("realtime %s: reply failed: %s (%s)", self.connection.session_id, error.message, error.code)
            await self.emit(reply, error_event(error))
            reply.summary = replace(reply.summary, status="failed", error=error_event(error)["error"])
        await self._finish(reply, ids)

    async def _stream(self, reply: Reply, ids: dict[str, Any]) -> None:
        """The assistant's events as the reply's deltas, until it is done or cancelled."""
        text_kind = "response.output_audio_transcript.delta" if reply.config.audio else "response.output_text.delta"
        tools = reply.config.tools if reply.config.tools.offered else None
        async with self.work:
            namespace = self.conversation.namespace
            events = self.assistant.respond(
                reply_request(reply), namespace, history=reply.history, tools=tools, calls=reply.after
            )
            async with aclosing(events) as replies:
                async for event in replies:
                    if reply.cancelled:
                        break
                    if isinstance(event, TextEvent | AudioEvent | WordsEvent):
                        await self._open_message(reply, ids)
                    if isinstance(event, TextEvent):
                        reply.text.append(event.text)
                        await self.emit(reply, {"type": text_kind, **ids, "delta": event.text})
                    elif isinstance(event, AudioEvent):
                        delta, duration_ms = _delta(event.audio, reply.config.output_format)
                        reply.sent_audio(duration_ms, event.text)
                        await self.emit(reply, {"type": "response.output_audio.delta", **ids, "delta": delta})
                    elif isinstance(event, ToolCallDelta):
                        for call_event in call_events(reply, event):
                            await self.emit(reply, call_event)
                    elif isinstance(event, WordsEvent):
                        reply.words += event.words
                        if reply.config.word_timestamps:
                            await self.emit(reply, {"type": WORDS_EVENT, **ids, "words": event.to_dict()["words"]})
                    elif isinstance(event, DoneEvent):
                        usage = event.response.usage
                        reply.summary = replace(reply.summary, usage=(usage.prompt_tokens, usage.completion_tokens))

    async def _open_message(self, reply: Reply, ids: dict[str, Any]) -> None:
        """The reply's message item, announced before its first words (a reply that only calls has none)."""
        item_id = reply.summary.item_id
        if item_id in reply.outputs:
            return
        ids["output_index"] = len(reply.outputs)
        reply.outputs.append(item_id)
        item = assistant_item(item_id, "", reply.config.audio, "in_progress")
        added = {"response_id": reply.summary.response_id, "output_index": ids["output_index"], "item": item}
        await self.emit(reply, {"type": "response.output_item.added", **added})
        if not reply.out_of_band:
            await self.emit(
                reply, {"type": "conversation.item.added", "previous_item_id": reply.previous_item, "item": item}
            )

    async def _finish(self, reply: Reply, ids: dict[str, Any]) -> None:
        if reply.guess is not None and not await reply.guess.decided:
            return  # a guess the speech went past: nothing of it was sent, nothing is kept
        summary = reply.summary
        if reply.cancelled:
            summary = replace(summary, status="cancelled", reason=reply.cancelled)
        elif summary.status == "in_progress":
            summary = replace(summary, status="completed")
        heard = reply.heard() if summary.status != "failed" else ""
        if summary.status != "completed":
            reply.calls.clear()  # a call cut short is not made
        if not reply.calls:  # an empty reply is an empty message
            await self._open_message(reply, ids)
        summary = reply.summary = replace(summary, text=heard, message=summary.item_id in reply.outputs)
        if summary.message:
            await self._message_done(reply, ids, heard)
        if reply.calls:
            items, done = calls_done(reply)
            for event in done:
                await self.emit(reply, event)
            self.conversation.keep_all([] if reply.out_of_band else items)
            summary = reply.summary = replace(summary, calls=tuple(items))
        await self.emit(reply, {"type": "response.done", "response": summary.to_dict()})
        if not reply.out_of_band:
            self.conversation.remember(reply, heard)
        self.playback_ends = time.perf_counter() + reply.sent_ms / 1000  # sent faster than it plays: a bound
        if self.current is reply:
            self.current = None

    async def _message_done(self, reply: Reply, ids: dict[str, Any], heard: str) -> None:
        """The message's last events: its text and audio done (a completed reply), and the item as heard."""
        summary = reply.summary
        if summary.status == "completed":
            spoken = "".join(reply.text).strip()
            if reply.config.audio:
                await self.emit(reply, {"type": "response.output_audio.done", **ids})
                await self.emit(reply, {"type": "response.output_audio_transcript.done", **ids, "transcript": spoken})
            else:
                await self.emit(reply, {"type": "response.output_text.done", **ids, "text": spoken})
        item = assistant_item(summary.item_id, heard, reply.config.audio, "completed")
        if not reply.out_of_band:
            self.conversation.keep(item)
        done = {"response_id": summary.response_id, "output_index": ids["output_index"], "item": item}
        await self.emit(reply, {"type": "response.output_item.done", **done})


def _delta(pcm16_b64: str, audio_format: AudioFormatName) -> tuple[str, int]:
    """A piece of the reply's audio (base64 pcm16 at the format's rate) in the session's output format, and
    its length in ms."""
    if audio_format == "pcm":
        return pcm16_b64, len(pcm16_b64) * 3 // 4 // 2 // PER_MS
    samples = from_pcm16(base64.b64decode(pcm16_b64))
    return base64.b64encode(to_g711(samples, audio_format)).decode("ascii"), samples.size * 1000 // G711_RATE


def reply_request(reply: Reply) -> ReplyRequest:
    """What the assistant is asked for a reply: its text, spoken in the session's voice, rate and speed."""
    config = reply.config
    return ReplyRequest(
        message=reply.message,
        system_message=config.instructions,
        reference_id=saved_voice_id(config.voice),
        temperature=min(max(config.temperature, 0.1), 1.0),
        max_tokens=config.max_output_tokens,
        audio_format="pcm16",
        sample_rate=REALTIME_RATE if config.output_format == "pcm" else G711_RATE,
        speak=config.audio,
        speed=config.speed,
        word_timestamps=config.audio,  # found beside the speech: a cut keeps the words heard by them
    )
