"""The voice protocol the assistant speaks to."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import numpy as np

from ..align.words import Span
from ..audio import Audio
from ..voices import VoiceReference


class TTS(Protocol):
    """Speaks text, in a reference voice where the backend can clone one.

    `stream` blocks (model inference) and yields the speech in pieces as they are ready; the
    assistant drives it in a worker thread, and sets `stop` to end it early.
    """

    name: str
    sample_rate: int
    can_clone: bool
    renders_markers: bool  # reads Fish's control markers ((happy), [whisper], <|speaker:0|>); else they are removed
    capacity: int  # texts it speaks at once to good effect (jobs beyond that only wait)

    def stream(
        self, text: str, voice: VoiceReference | None = None, stop: threading.Event | None = None
    ) -> Iterator[Audio]: ...


class VoiceCodeStore(Protocol):
    """Where a cloning backend keeps its encoding of a voice, by a key of its own: a conversation store
    shared by several workers lets them encode a voice once between them."""

    async def put_voice_codes(self, key: str, data: bytes) -> None: ...

    async def voice_codes(self, key: str) -> bytes | None: ...


@runtime_checkable
class PreparesVoices(Protocol):
    """A backend that readies a voice before speaking in it (Fish encodes the reference, or loads its
    encoding from the store); `stream` then finds it ready. Backends without the step need nothing."""

    async def prepare(self, voice: VoiceReference) -> None: ...


@runtime_checkable
class TimesWords(Protocol):
    """A voice that tells where the words of its speech are (Piper, from its own phoneme durations): each
    piece comes with its words' spans, in seconds from the piece's start. Others are aligned afterwards."""

    def stream_timed(
        self, text: str, voice: VoiceReference | None = None, stop: threading.Event | None = None
    ) -> Iterator[tuple[Audio, list[Span]]]: ...


async def prepare_voice(tts: TTS, voice: VoiceReference | None) -> None:
    """Ready `voice` where the backend has such a step (and clones at all); else nothing."""
    if voice is not None and tts.can_clone and isinstance(tts, PreparesVoices):
        await tts.prepare(voice)


def synthesize(tts: TTS, text: str, voice: VoiceReference | None = None) -> Audio:
    """All of the speech at once."""
    pieces = [piece.samples for piece in tts.stream(text, voice)]
    return Audio(np.concatenate(pieces) if pieces else np.zeros(0, np.float32), tts.sample_rate)
