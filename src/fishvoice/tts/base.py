"""The voice protocol the assistant speaks to."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Protocol

import numpy as np

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
    capacity: int  # texts it speaks at once to good effect (jobs beyond that only wait)

    def stream(
        self, text: str, voice: VoiceReference | None = None, stop: threading.Event | None = None
    ) -> Iterator[Audio]: ...


def synthesize(tts: TTS, text: str, voice: VoiceReference | None = None) -> Audio:
    """All of the speech at once."""
    pieces = [piece.samples for piece in tts.stream(text, voice)]
    return Audio(np.concatenate(pieces) if pieces else np.zeros(0, np.float32), tts.sample_rate)
