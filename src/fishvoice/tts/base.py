"""The voice protocol the assistant speaks to."""

from __future__ import annotations

from typing import Protocol

from ..audio import Audio
from ..voices import VoiceReference


class TTS(Protocol):
    """Speaks text, in a reference voice where the backend can clone one.

    `synthesize` blocks (model inference); the assistant runs it in a worker thread.
    """

    name: str
    sample_rate: int
    can_clone: bool

    def synthesize(self, text: str, voice: VoiceReference | None = None) -> Audio: ...
