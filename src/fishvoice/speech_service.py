"""The voice as the HTTP APIs use it apart from a reply (Fish's /v1/tts, OpenAI's /v1/audio/speech, the
realtime session's spoken text): the saved voices of a caller's key, and the limit on speech, recognition
and chat work at once beside the job runner's own jobs (the job API's concurrency).

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass

from .audio import Audio
from .errors import FishvoiceError
from .memory.base import ConversationStore
from .pipeline import Spoken, Words, speak_text, voice_speaker
from .tts.base import TTS, prepare_voice
from .voices import VoiceReference

DEFAULT_VOICE = "default"  # the voice's own, as the OpenAI routes and realtime sessions name it
# OpenAI's preset voices: /v1/audio/speech refuses them with the voices there; a realtime session (whose clients,
# OpenAI's Agents SDK among them, name one by default) speaks them in the default voice.
OPENAI_VOICES = frozenset(
    {
        "alloy",
        "ash",
        "ballad",
        "cedar",
        "coral",
        "echo",
        "fable",
        "marin",
        "nova",
        "onyx",
        "sage",
        "shimmer",
        "verse",
    }
)


def saved_voice_id(name: str) -> str | None:
    """The saved voice a realtime session's voice names; None for the default voice or an OpenAI preset."""
    return None if name == DEFAULT_VOICE or name.lower() in OPENAI_VOICES else name


def no_asr(field: str) -> FishvoiceError:
    """The error of a route given audio to hear on a server without a recogniser."""
    return FishvoiceError(
        "backend_unavailable", f"{field}: speech recognition is not available on this server (no ASR backend)", field
    )


class WorkLimit:
    """At most `size` requests working at once (an async with-block each); `in_use` counts them (/health)."""

    def __init__(self, size: int):
        self.size = size
        self.in_use = 0
        self._free = asyncio.Semaphore(size)

    async def __aenter__(self) -> None:
        await self._free.acquire()
        self.in_use += 1

    async def __aexit__(self, *exc: object) -> None:
        self.in_use -= 1
        self._free.release()


@dataclass
class SpeechService:
    tts: TTS
    store: ConversationStore
    work: WorkLimit  # speech, recognition and chat at once, beside the job runner's own jobs
    stall_s: float  # longest silence of the voice before the request fails

    async def saved_voice(self, namespace: str, voice_id: str, field: str) -> VoiceReference:
        """The caller's saved voice `voice_id`; not_found (naming `field`) when this key has none by that id."""
        voice = await self.store.saved_voice(namespace, voice_id)
        if voice is None:
            raise FishvoiceError("not_found", f"{field}: no saved voice {voice_id!r}", field)
        return voice

    async def stream(
        self,
        text: str,
        voice: VoiceReference | None,
        sample_rate: int,
        speed: float = 1.0,
        *,
        tts: TTS | None = None,
        normalize: bool = True,
    ) -> AsyncGenerator[Audio, None]:
        """The speech of `text` at `sample_rate`, sentence by sentence as each is ready, in `voice` where
        the backend clones (else its own voice), `speed` times as fast (pitch kept), its numbers in words
        unless `normalize` is False. `tts` is the service's voice tuned for one request (FishTTS.tuned); the
        service's own by default."""
        async with aclosing(self.spoken(text, voice, sample_rate, speed, tts=tts, normalize=normalize)) as spoken:
            async for piece in spoken:
                if isinstance(piece, Spoken):
                    yield piece.audio

    async def spoken(
        self,
        text: str,
        voice: VoiceReference | None,
        sample_rate: int,
        speed: float = 1.0,
        *,
        tts: TTS | None = None,
        normalize: bool = True,
        word_timings: bool = False,
    ) -> AsyncGenerator[Spoken | Words, None]:
        """As `stream`, each piece with the chunk of text it speaks; with `word_timings`, each chunk's words'
        timings after its audio (pipeline.Words)."""
        tts = tts or self.tts
        cloned = voice if tts.can_clone else None
        async with self.work:
            await prepare_voice(tts, cloned)
            speak = voice_speaker(
                tts, cloned, sample_rate, self.stall_s, speed, numbers_in_words=normalize, word_timings=word_timings
            )
            # Closed before the work's place is given back: the voice has stopped by then.
            async with aclosing(speak_text(text, speak)) as spoken:
                async for piece in spoken:
                    yield piece
