"""The assistant: one request in, the reply's events out, and the turn stored once it completed.

It composes the pieces: the reference voice (voices.py), the conversation (memory/), the context
that fits (context.py), the speech pipeline (pipeline.py: the LLM's words and their speech as each is
ready) and the contract's response. Failures are raised, not reported: the edges (worker.py,
server/) map them to the contract, so a failed or cancelled reply stores nothing.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field, replace

import numpy as np

from . import metrics
from .asr.base import ASR, Transcript
from .audio import Audio
from .context import fit_context
from .contract import (
    MAX_MESSAGE_CHARS,
    MAX_REFERENCE_TEXT_CHARS,
    AudioEvent,
    ChatMessage,
    DoneEvent,
    LLMItem,
    Reply,
    ReplyEvent,
    ReplyRequest,
    TextEvent,
    Timings,
    ToolCall,
    ToolCallDelta,
    Tools,
    TranscriptEvent,
    TranscriptInfo,
    Usage,
    VoiceInfo,
    WordsEvent,
    WordTiming,
    encode_chunk,
    encode_reply_audio,
)
from .errors import FishvoiceError
from .llm.base import LLM
from .memory.base import Conversation, ConversationStore
from .pipeline import Speak, Words, speech_pipeline, voice_speaker
from .threads import fail_on_stall, run_in_thread
from .tts.base import TTS, prepare_voice
from .voices import VoiceReference, load_reference, load_speech

log = logging.getLogger(__name__)

_REFERENCE_TEXTS_KEPT = 1024


@dataclass
class _ReplyState:
    """What a reply gathers as its pieces go out (only the assistant's own generator writes it)."""

    started: float
    text: list[str] = field(default_factory=list)
    audio: list[Audio] = field(default_factory=list)
    words: list[WordTiming] = field(default_factory=list)
    calls: dict[int, ToolCall] = field(default_factory=dict)  # the functions it calls, by the LLM's index
    usage: Usage = field(default_factory=lambda: Usage(0, 0))
    first_audio: float | None = None
    asr_s: float | None = None
    transcript: TranscriptInfo | None = None
    llm_s: float = 0.0
    tts_s: float = 0.0

    def ms(self, seconds: float | None) -> int | None:
        return None if seconds is None else round(seconds * 1000)

    def message(self, text: str) -> ChatMessage:
        """The assistant's message: its text, and the functions it called."""
        if not self.calls:
            return {"role": "assistant", "content": text}
        return {"role": "assistant", "content": text, "tool_calls": [self.calls[i] for i in sorted(self.calls)]}


class Assistant:
    """Answers requests with the LLM, speaks with the TTS, remembers in the store."""

    def __init__(
        self,
        llm: LLM,
        tts: TTS,
        store: ConversationStore,
        *,
        default_system_message: str,
        backend_timeout_s: float = 120.0,
        asr: ASR | None = None,
    ):
        self.llm = llm
        self.tts = tts
        self.asr = asr  # speech recognition: user_audio, and references without their text; None: off
        # Transcripts of reference voices, by content hash: each voice is transcribed once per process (a
        # conversation's voice is also stored with its transcript).
        self._reference_texts: OrderedDict[str, str] = OrderedDict()
        self.store = store
        self.default_system_message = default_system_message
        self.backend_timeout_s = backend_timeout_s  # longest silence of the LLM or the voice before the reply fails

    async def respond(
        self,
        request: ReplyRequest,
        namespace: str = "",
        *,
        history: list[ChatMessage] | None = None,
        tools: Tools | None = None,
        calls: list[ChatMessage] | None = None,
    ) -> AsyncGenerator[ReplyEvent, None]:
        """Yield text, function call and audio events as they come, then the done event; raise on failure.

        `history` given (the turns before `request.message`, as OpenAI's chat API sends them), it is the
        conversation: the caller keeps it, so nothing is loaded or stored (`conversation_id` must be None).
        `tools`: the functions the reply may call; `calls`: what followed the message in its exchange (the
        assistant's function calls and their results), which the reply goes on from."""
        if history is not None and request.conversation_id:
            raise ValueError("a reply to a given history has no stored conversation")
        reply = _ReplyState(started=time.perf_counter())
        warnings: list[str] = []
        if request.user_audio is not None:
            request = await self._hear(request, reply)
            assert reply.transcript is not None
            yield TranscriptEvent(reply.transcript.text, reply.transcript.language)
        new_voice = await self._new_voice(request, namespace)
        conversation = (
            Conversation(turns=history) if history is not None else await self._conversation(request, namespace)
        )
        voice = new_voice or await self._stored_voice(conversation)
        if voice is not None and not self.tts.can_clone:
            warnings.append(f"voice cloning needs the fish voice backend; the default {self.tts.name} voice was used")
        if request.speak:
            await prepare_voice(self.tts, voice)  # encoded once, or its stored encoding loaded, before the LLM starts
        system = request.system_message or conversation.system_message or self.default_system_message
        asked: list[ChatMessage] = [{"role": "user", "content": request.message}, *(calls or [])]
        prompt = fit_context(
            system,
            conversation.turns,
            asked,
            request.max_tokens,
            count_tokens=self.llm.count_tokens,
            context_window=self.llm.context_window,
        )
        warnings += [prompt.warning] if prompt.warning else []

        temperature, max_tokens = request.temperature, prompt.max_tokens
        words = self.llm.stream(prompt.messages, temperature=temperature, max_tokens=max_tokens, tools=tools)
        speak = self._speaker(request, voice) if request.speak else None
        async with aclosing(self._reply_events(request, words, speak, reply)) as events:
            async for event in events:
                yield event

        text = "".join(reply.text).strip()
        if not text and not reply.calls:
            warnings.append("the model returned an empty reply")
        exchange = [*asked, reply.message(text)]
        if history is not None:
            history = [*history, *exchange]
        else:
            history = await self._remember(request, namespace, exchange, new_voice, conversation)
        yield DoneEvent(await self._response(request, reply, text, history, voice, warnings))

    def _speaker(self, request: ReplyRequest, voice: VoiceReference | None) -> Speak:
        cloned = voice if self.tts.can_clone else None
        timeout, timed = self.backend_timeout_s, request.word_timestamps
        return voice_speaker(self.tts, cloned, request.sample_rate, timeout, request.speed, word_timings=timed)

    async def _hear(self, request: ReplyRequest, reply: _ReplyState) -> ReplyRequest:
        """The request with its `user_audio` transcribed into its message (in a worker thread)."""
        assert request.user_audio is not None
        if self.asr is None:
            raise FishvoiceError(
                "backend_unavailable",
                "user_audio: speech input needs speech recognition, which is off here (FISHVOICE_ASR=none)",
                "user_audio",
            )
        started = time.perf_counter()
        speech = await run_in_thread(load_speech, request.user_audio, "user_audio")
        with metrics.hearing():
            heard: Transcript = await run_in_thread(self.asr.transcribe, speech)
        reply.asr_s = time.perf_counter() - started
        text = heard.text.strip()
        if not text:
            raise FishvoiceError("invalid_audio", "user_audio: no speech was recognised in the audio", "user_audio")
        reply.transcript = TranscriptInfo(text, heard.language)
        log.info("heard %.1f s of speech (%s) in %d ms", heard.duration_s, heard.language, round(reply.asr_s * 1000))
        return request.model_copy(update={"message": text[:MAX_MESSAGE_CHARS]})

    async def _new_voice(self, request: ReplyRequest, namespace: str) -> VoiceReference | None:
        """The voice this request brings: a saved voice of the caller's (`reference_id`), or `system_audio`;
        without its text, transcribed where speech recognition is on and the voice clones."""
        if request.reference_id is not None:
            saved = await self.store.saved_voice(namespace, request.reference_id)
            if saved is None:
                raise FishvoiceError(
                    "not_found", f"reference_id: no saved voice {request.reference_id!r}", "reference_id"
                )
            return await self._with_reference_text(saved)
        if not request.system_audio:
            return None
        voice = await run_in_thread(load_reference, request.system_audio, request.reference_text)
        return await self._with_reference_text(voice)

    async def _with_reference_text(self, voice: VoiceReference) -> VoiceReference:
        """The voice with what it says: as given, else transcribed once per voice (cached by its hash)."""
        if voice.reference_text or self.asr is None or not self.tts.can_clone:
            return voice
        text = self._reference_texts.get(voice.hash)
        if text is None:
            heard = await run_in_thread(self.asr.transcribe, voice.audio)
            text = heard.text.strip()[:MAX_REFERENCE_TEXT_CHARS]
            self._reference_texts[voice.hash] = text
            while len(self._reference_texts) > _REFERENCE_TEXTS_KEPT:
                self._reference_texts.popitem(last=False)
            log.info("transcribed reference voice %s: %d chars", voice.hash[:12], len(text))
        self._reference_texts.move_to_end(voice.hash)
        return replace(voice, reference_text=text) if text else voice

    async def _conversation(self, request: ReplyRequest, namespace: str) -> Conversation:
        if not request.conversation_id:
            return Conversation()
        return await self.store.load(namespace, request.conversation_id)

    async def _stored_voice(self, conversation: Conversation) -> VoiceReference | None:
        return await self.store.get_voice(conversation.voice_hash) if conversation.voice_hash else None

    async def _reply_events(
        self, request: ReplyRequest, words: AsyncGenerator[LLMItem, None], speak: Speak | None, reply: _ReplyState
    ) -> AsyncGenerator[TextEvent | ToolCallDelta | AudioEvent | WordsEvent, None]:
        """The pipeline's pieces as events, each audio piece encoded as the request asks."""
        watched = fail_on_stall(words, self.backend_timeout_s, f"the LLM ({self.llm.name})")
        llm_started, first_token_s = time.perf_counter(), None
        async with aclosing(speech_pipeline(watched, speak)) as pieces:
            async for piece in pieces:
                if isinstance(piece, Usage):  # the LLM's last item
                    reply.usage, reply.llm_s = piece, time.perf_counter() - llm_started
                    metrics.llm_wrote(self.llm.name, first_token_s, piece.completion_tokens, reply.llm_s)
                elif isinstance(piece, str):
                    first_token_s = first_token_s or time.perf_counter() - llm_started
                    reply.text.append(piece)
                    yield TextEvent(piece)
                elif isinstance(piece, ToolCallDelta):
                    piece.add_to(reply.calls)
                    yield piece
                elif isinstance(piece, Words):
                    reply.words += piece.words
                    yield WordsEvent(piece.words)
                else:
                    event = await run_in_thread(encode_chunk, len(reply.audio), piece.audio, piece.text, request)
                    reply.audio.append(piece.audio)
                    reply.tts_s += piece.seconds
                    reply.first_audio = reply.first_audio or time.perf_counter()
                    yield event

    async def _remember(
        self,
        request: ReplyRequest,
        namespace: str,
        exchange: list[ChatMessage],
        new_voice: VoiceReference | None,
        conversation: Conversation,
    ) -> list[ChatMessage]:
        """Store the exchange (with a new voice); the whole history, or just this exchange without a conversation.
        An exchange that ends in a function call is not stored: it is, whole, once the reply to its results is."""
        if not request.conversation_id:
            return exchange
        if exchange[-1].get("tool_calls"):
            return [*conversation.turns, *exchange]
        if new_voice is not None:
            await self.store.put_voice(new_voice)
        return await self.store.append_exchange(
            namespace,
            request.conversation_id,
            exchange,
            system_message=request.system_message,
            voice_hash=new_voice.hash if new_voice else None,
        )

    async def _response(
        self,
        request: ReplyRequest,
        reply: _ReplyState,
        text: str,
        history: list[ChatMessage],
        voice: VoiceReference | None,
        warnings: list[str],
    ) -> Reply:
        samples = np.concatenate([a.samples for a in reply.audio]) if reply.audio else np.zeros(0, np.float32)
        audio = Audio(samples, request.sample_rate)
        data, sample_rate = None, request.sample_rate
        if request.speak:
            data, sample_rate = await run_in_thread(encode_reply_audio, audio, request.audio_format)
            if sample_rate != request.sample_rate:
                asked = request.sample_rate
                warnings.append(f"opus audio always decodes at {sample_rate} Hz; sample_rate {asked} was asked for")
        total = time.perf_counter() - reply.started
        first_audio = reply.ms(reply.first_audio - reply.started if reply.first_audio else None)
        log.info(
            "reply: %d chars, %.2f s audio, %d+%d tokens, first audio %s ms, total %d ms",
            len(text),
            audio.duration_s,
            reply.usage.prompt_tokens,
            reply.usage.completion_tokens,
            first_audio,
            round(total * 1000),
        )
        return Reply(
            text=text,
            audio=data,
            audio_format=request.audio_format,
            sample_rate=sample_rate,
            duration_s=round(audio.duration_s, 3),
            history=history,
            conversation_id=request.conversation_id,
            voice=VoiceInfo(self.tts.name, voice is not None and self.tts.can_clone),
            usage=reply.usage,
            timings_ms=Timings(
                first_audio,
                round(reply.llm_s * 1000),
                round(reply.tts_s * 1000),
                round(total * 1000),
                reply.ms(reply.asr_s),
            ),
            warnings=warnings,
            transcript=reply.transcript,
            words=reply.words if request.word_timestamps and request.speak else None,
        )
