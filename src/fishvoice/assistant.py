"""The assistant: one request in, a stream of events out.

The LLM's words stream into a chunker; each speakable chunk (a sentence or clause) is spoken as
soon as it is complete, in a task beside the LLM, so the first sentence is heard while the LLM
still writes. The last event carries the whole response; a turn is stored only then.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .audio import OPUS_RATE, Audio, encode_audio, resample
from .contract import Request, audio_event, done_event, error_event, text_event
from .errors import FishvoiceError, is_out_of_memory
from .llm.base import LLM, ChatMessage, Usage
from .memory.base import Conversation, ConversationStore
from .text import SpeechChunker, is_speakable, normalize_for_speech
from .threads import fail_on_stall, iterate_in_thread
from .tts.base import TTS
from .voices import VoiceReference, load_reference

log = logging.getLogger(__name__)

_END = object()
CONTEXT_MARGIN = 8  # tokens kept free for the template's closing marks


@dataclass
class _Reply:
    """What one reply gathers while it streams."""

    started: float
    text: list[str] = field(default_factory=list)
    audio: list[np.ndarray] = field(default_factory=list)
    usage: Usage = field(default_factory=lambda: Usage(0, 0))
    first_audio: float | None = None
    llm_s: float = 0.0
    tts_s: float = 0.0

    def ms_since_start(self, moment: float | None) -> int | None:
        return None if moment is None else round((moment - self.started) * 1000)


class Assistant:
    """Answers requests with the LLM, speaks with the TTS, remembers in the store."""

    def __init__(
        self,
        llm: LLM,
        tts: TTS,
        store: ConversationStore,
        *,
        default_system_message: str,
        debug: bool = False,
        backend_timeout_s: float = 120.0,
    ):
        self.llm = llm
        self.backend_timeout_s = backend_timeout_s  # longest silence of the LLM or the voice before the job fails
        self.tts = tts
        self.store = store
        self.default_system_message = default_system_message
        self.debug = debug  # unexpected errors carry their stack trace to the caller

    async def respond(self, request: Request, namespace: str = "") -> AsyncIterator[dict[str, Any]]:
        """Yield text, audio and finally a done event; or an error event, and nothing is stored."""
        try:
            async for event in self._respond(request, namespace):
                yield event
        except FishvoiceError as exc:
            log.warning("request failed: %s (%s)", exc.message, exc.code)
            yield error_event(exc)
        except Exception as exc:
            log.exception("request failed unexpectedly")
            if is_out_of_memory(exc):
                # Memory may stay fragmented or leaked: ask RunPod for a fresh worker after this job.
                event = error_event(
                    FishvoiceError("backend_unavailable", "out of GPU memory; the worker will be replaced")
                )
                event["refresh_worker"] = True
                yield event
                return
            event = error_event(FishvoiceError("internal", f"internal error: {type(exc).__name__}"))
            if self.debug:
                event["trace"] = "".join(traceback.format_exception(exc))
            yield event

    async def _respond(self, request: Request, namespace: str) -> AsyncIterator[dict[str, Any]]:
        reply = _Reply(started=time.perf_counter())
        warnings: list[str] = []
        new_voice = (
            await asyncio.to_thread(load_reference, request.system_audio, request.reference_text)
            if request.system_audio
            else None
        )
        conversation = (
            await self.store.load(namespace, request.conversation_id) if request.conversation_id else Conversation()
        )
        voice = new_voice or await self._conversation_voice(conversation)
        if voice is not None and not self.tts.can_clone:
            warnings.append(f"voice cloning needs the fish voice backend; the default {self.tts.name} voice was used")
        system = request.system_message or conversation.system_message or self.default_system_message
        messages, max_tokens = self._fit_context(
            system, conversation.turns, request.message, request.max_tokens, warnings
        )

        async for event in self._pipeline(request, messages, max_tokens, voice if self.tts.can_clone else None, reply):
            yield event

        text = "".join(reply.text).strip()
        if not text:
            warnings.append("the model returned an empty reply")
        history = await self._remember(request, namespace, text, new_voice)
        yield done_event(self._response(request, reply, text, history, voice, warnings))

    async def _conversation_voice(self, conversation: Conversation) -> VoiceReference | None:
        return await self.store.get_voice(conversation.voice_hash) if conversation.voice_hash else None

    def _fit_context(
        self, system: str, turns: list[ChatMessage], message: str, max_tokens: int, warnings: list[str]
    ) -> tuple[list[ChatMessage], int]:
        """The system message and as many recent turns as fit the context after `max_tokens`."""
        head: list[ChatMessage] = [{"role": "system", "content": system}]
        tail: list[ChatMessage] = [{"role": "user", "content": message}]
        window = self.llm.context_window - CONTEXT_MARGIN
        needed = self.llm.count_tokens(head + tail)
        if needed >= window:
            raise FishvoiceError(
                "invalid_input",
                f"message: system message and message take {needed} tokens; the model's context holds {window}",
                "message",
            )
        if needed + max_tokens > window:
            max_tokens = window - needed
            warnings.append(f"max_tokens lowered to {max_tokens} to fit the model's context")

        # Drop whole exchanges from the oldest; fewer turns never take more tokens, so bisect.
        def fits(start: int) -> bool:
            return self.llm.count_tokens(head + turns[start:] + tail) + max_tokens <= window

        if fits(0):
            return head + turns + tail, max_tokens
        starts = range(0, len(turns) + 1, 2)  # the last start (no turns) always fits, checked above
        first = starts[bisect.bisect_left(starts, True, key=fits)]
        log.info("context trimmed: %d of %d earlier turns kept", len(turns) - first, len(turns))
        return head + turns[first:] + tail, max_tokens

    async def _pipeline(
        self,
        request: Request,
        messages: list[ChatMessage],
        max_tokens: int,
        voice: VoiceReference | None,
        reply: _Reply,
    ) -> AsyncIterator[dict[str, Any]]:
        """Run the LLM and the voice side by side; yield their events as they come."""
        events: asyncio.Queue[Any] = asyncio.Queue()
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        jobs = [self._write(request, messages, max_tokens, reply, events, sentences if request.speak else None)]
        if request.speak:
            jobs.append(self._speak(request, voice, reply, events, sentences))
        tasks = [asyncio.create_task(self._report(job, events)) for job in jobs]
        try:
            running = len(tasks)
            while running:
                item = await events.get()
                if item is _END:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    async def _report(job: Awaitable[None], events: asyncio.Queue[Any]) -> None:
        try:
            await job
        except Exception as exc:
            events.put_nowait(exc)
        finally:
            events.put_nowait(_END)

    async def _write(
        self,
        request: Request,
        messages: list[ChatMessage],
        max_tokens: int,
        reply: _Reply,
        events: asyncio.Queue[Any],
        sentences: asyncio.Queue[str | None] | None,
    ) -> None:
        chunker = SpeechChunker()
        started = time.perf_counter()
        try:
            tokens = self.llm.stream(messages, temperature=request.temperature, max_tokens=max_tokens)
            async for item in fail_on_stall(tokens, self.backend_timeout_s, f"the LLM ({self.llm.name})"):
                if isinstance(item, Usage):
                    reply.usage = item
                    continue
                reply.text.append(item)
                events.put_nowait(text_event(item))
                if sentences is not None:
                    for chunk in chunker.feed(item):
                        sentences.put_nowait(chunk)
            reply.llm_s = time.perf_counter() - started
            if sentences is not None:
                for chunk in chunker.flush():
                    sentences.put_nowait(chunk)
        finally:
            if sentences is not None:
                sentences.put_nowait(None)

    async def _speak(
        self,
        request: Request,
        voice: VoiceReference | None,
        reply: _Reply,
        events: asyncio.Queue[Any],
        sentences: asyncio.Queue[str | None],
    ) -> None:
        chunk_format = "pcm16" if request.audio_format == "array" else request.audio_format
        seq = 0
        while (chunk := await sentences.get()) is not None:
            spoken = normalize_for_speech(chunk)
            if not is_speakable(spoken):
                continue
            started = time.perf_counter()
            # A backend may yield a sentence in pieces (Fish decodes as frames arrive): each is sent as it comes.
            pieces = iterate_in_thread(lambda stop: self.tts.stream(spoken, voice, stop))
            async for piece in fail_on_stall(pieces, self.backend_timeout_s, f"the voice ({self.tts.name})"):
                audio = await asyncio.to_thread(resample, piece, request.sample_rate)
                reply.audio.append(audio.samples)
                encoded = await asyncio.to_thread(encode_audio, audio, chunk_format)
                reply.first_audio = reply.first_audio or time.perf_counter()
                events.put_nowait(audio_event(seq, encoded.data, chunk_format, encoded.sample_rate, chunk))  # type: ignore[arg-type]
                seq += 1
            reply.tts_s += time.perf_counter() - started

    async def _remember(
        self, request: Request, namespace: str, text: str, new_voice: VoiceReference | None
    ) -> list[ChatMessage]:
        exchange: list[ChatMessage] = [
            {"role": "user", "content": request.message},
            {"role": "assistant", "content": text},
        ]
        if not request.conversation_id:
            return exchange
        if new_voice is not None:
            await self.store.put_voice(new_voice)
        return await self.store.append_exchange(
            namespace,
            request.conversation_id,
            request.message,
            text,
            system_message=request.system_message,
            voice_hash=new_voice.hash if new_voice else None,
        )

    def _response(
        self,
        request: Request,
        reply: _Reply,
        text: str,
        history: list[ChatMessage],
        voice: VoiceReference | None,
        warnings: list[str],
    ) -> dict[str, Any]:
        audio = Audio(np.concatenate(reply.audio) if reply.audio else np.zeros(0, np.float32), request.sample_rate)
        encoded = encode_audio(audio, request.audio_format) if request.speak else None
        if encoded is not None and encoded.sample_rate != request.sample_rate:
            warnings.append(f"opus audio always decodes at {OPUS_RATE} Hz; sample_rate is {OPUS_RATE}")
        total = time.perf_counter() - reply.started
        log.info(
            "reply: %d chars, %.2f s audio, %d+%d tokens, first audio %s ms, total %d ms",
            len(text),
            audio.duration_s,
            reply.usage.prompt_tokens,
            reply.usage.completion_tokens,
            reply.ms_since_start(reply.first_audio),
            round(total * 1000),
        )
        return {
            "text": text,
            "audio": encoded.data if encoded else None,
            "audio_format": request.audio_format,
            "sample_rate": encoded.sample_rate if encoded else request.sample_rate,
            "duration_s": round(audio.duration_s, 3),
            "history": history,
            "conversation_id": request.conversation_id,
            "voice": {"backend": self.tts.name, "cloned": voice is not None and self.tts.can_clone},
            "usage": {"prompt_tokens": reply.usage.prompt_tokens, "completion_tokens": reply.usage.completion_tokens},
            "timings_ms": {
                "first_audio": reply.ms_since_start(reply.first_audio),
                "llm": round(reply.llm_s * 1000),
                "tts": round(reply.tts_s * 1000),
                "total": round(total * 1000),
            },
            "warnings": warnings,
        }
