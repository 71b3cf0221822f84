"""The session's input audio: as the client appends it (pcm16 at 24 kHz, or G.711 at 8 kHz brought to 24 kHz),
held from where the current turn may begin (positions count samples since the session began)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
import numpy.typing as npt
import soxr

from ...audio import G711_RATE, from_g711, from_pcm16
from ...errors import FishvoiceError
from ..http.fields import invalid
from .protocol import REALTIME_RATE, AudioFormatName

PER_MS = REALTIME_RATE // 1000  # samples per millisecond


def pcm16(value: Any, field: str) -> npt.NDArray[np.float32]:
    """Base64 pcm16 (little-endian, mono) as float samples."""
    data = _base64(value, field, "pcm16")
    if len(data) % 2:
        raise FishvoiceError("invalid_audio", f"{field}: pcm16 needs an even number of bytes", field)
    return from_pcm16(data)


def _base64(value: Any, field: str, kind: str) -> bytes:
    if not isinstance(value, str):
        raise invalid(field, f"required, base64 of {kind} audio")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise FishvoiceError("invalid_audio", f"{field}: not valid base64", field) from None


class InputDecoder:
    """The client's appended audio in the session's input format, as 24 kHz samples; G.711 is resampled as one
    stream, so the seams between appends are not heard."""

    def __init__(self, audio_format: AudioFormatName):
        self.format = audio_format
        self._resampler = soxr.ResampleStream(G711_RATE, REALTIME_RATE, 1, dtype="float32")

    def decode(self, value: Any, field: str) -> npt.NDArray[np.float32]:
        if self.format == "pcm":
            return pcm16(value, field)
        samples = from_g711(_base64(value, field, f"G.711 ({self.format})"), self.format)
        resampled: npt.NDArray[np.float32] = self._resampler.resample_chunk(samples)
        return resampled


class InputAudio:
    """The input buffer: 24 kHz samples from stream position `start`."""

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

    def take_all(self) -> npt.NDArray[np.float32]:
        return self.take(self.start, self.end)

    def keep_last(self, samples: int) -> None:
        if self.size > 2 * samples:  # trimmed in steps, not on every append
            self.take(self.end - samples, self.end - samples)

    def clear(self) -> None:
        self._chunks, self.start, self.size = [], self.end, 0
