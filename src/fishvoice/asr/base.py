"""The speech-recognition protocol the assistant and the transcription route speak to.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from ..audio import Audio


@dataclass(frozen=True)
class Segment:
    """A stretch of recognised speech, seconds from the audio's start."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    """What was heard: the text, its language (ISO 639-1, detected or as asked), the speech's segments
    and the audio's length."""

    text: str
    language: str
    duration_s: float
    segments: list[Segment] = field(default_factory=list)


class ASR(Protocol):
    """Turns speech into text. Blocking (model inference): callers run it in a worker thread."""

    name: str

    def segments(
        self,
        audio: Audio,
        *,
        language: str | None = None,
        prompt: str | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[Segment]:
        """The speech's segments as they are recognised (silence and noise filtered out by voice activity);
        `language` None detects it. Setting `stop` ends the iteration early."""
        ...

    def transcribe(self, audio: Audio, *, language: str | None = None, prompt: str | None = None) -> Transcript:
        """All of it at once."""
        ...

    def hear_turn(self, audio: Audio, *, language: str | None = None, stop: threading.Event | None = None) -> str:
        """A short live turn's text (empty for no speech), as fast as the backend can: a conversation
        waits on it. Setting `stop` before it starts skips the work."""
        ...
