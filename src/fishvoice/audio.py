"""Audio in and out: decode any input file, resample, encode the output formats, base64.

Decoding and encoding go through PyAV (FFmpeg), resampling through soxr. Everything inside
fishvoice is mono float32 in [-1, 1] with its sample rate beside it.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
import struct
from dataclasses import dataclass
from typing import Literal, cast

import av
import numpy as np
import numpy.typing as npt
import soxr

from .errors import FishvoiceError

AudioFormat = Literal["array", "wav", "flac", "mp3", "opus", "pcm16"]
ByteFormat = Literal["wav", "flac", "mp3", "opus", "pcm16"]  # the formats that are bytes (all but `array`)
AUDIO_FORMATS: tuple[str, ...] = ("array", "wav", "flac", "mp3", "opus", "pcm16")
SAMPLE_RATES: tuple[int, ...] = (8000, 16000, 22050, 24000, 44100, 48000)

MAX_AUDIO_BYTES = 15 * 1024 * 1024
# Base64 grows data by 4/3; anything longer than this cannot decode under the limit.
MAX_AUDIO_BASE64_CHARS = math.ceil(MAX_AUDIO_BYTES / 3) * 4 + 1024
OPUS_RATE = 48000  # Ogg Opus always decodes at 48 kHz, whatever rate went in.

_DATA_URI = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Audio:
    """Mono float32 samples and their rate."""

    samples: npt.NDArray[np.float32]
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


def b64decode_audio(value: str, field: str) -> bytes:
    """Decode base64 audio (plain or a data: URI), refusing bad base64 and files over the size limit."""
    if len(value) > MAX_AUDIO_BASE64_CHARS:
        raise FishvoiceError("payload_too_large", f"{field}: audio is larger than {MAX_AUDIO_BYTES // 2**20} MB", field)
    text = _WHITESPACE.sub("", _DATA_URI.sub("", value, count=1))
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FishvoiceError("invalid_audio", f"{field}: not valid base64", field) from None
    if len(data) > MAX_AUDIO_BYTES:
        raise FishvoiceError("payload_too_large", f"{field}: audio is larger than {MAX_AUDIO_BYTES // 2**20} MB", field)
    if not data:
        raise FishvoiceError("invalid_audio", f"{field}: empty audio", field)
    return data


def decode_audio(data: bytes, field: str, max_seconds: float) -> Audio:
    """Decode an audio file of any common container to mono float32 at its own rate.

    Decoding stops just past `max_seconds`, so a small file that claims hours costs nothing;
    the caller sees a duration above the limit and refuses it.
    """
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            audio_streams = container.streams.audio
            stream = audio_streams[0] if audio_streams else None
            if stream is None or not stream.rate:
                raise FishvoiceError("invalid_audio", f"{field}: the file holds no audio stream", field)
            rate = int(stream.rate)
            limit = int((max_seconds + 1) * rate)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            parts: list[np.ndarray] = []
            total = 0
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
                    total += parts[-1].size
                if total > limit:
                    break
            else:
                parts.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    except FishvoiceError:
        raise
    except Exception as exc:  # FFmpeg raises many types for garbage input; all mean "not audio".
        raise FishvoiceError(
            "invalid_audio", f"{field}: not a readable audio file ({type(exc).__name__})", field
        ) from None
    samples = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    if not np.all(np.isfinite(samples)):
        raise FishvoiceError("invalid_audio", f"{field}: the audio holds invalid samples", field)
    return Audio(samples, rate)


def resample(audio: Audio, rate: int) -> Audio:
    """The same audio at another sample rate (soxr, high quality)."""
    if audio.sample_rate == rate or audio.samples.size == 0:
        return Audio(audio.samples.astype(np.float32, copy=False), rate)
    out = cast(npt.NDArray[np.float32], soxr.resample(audio.samples, audio.sample_rate, rate, quality="HQ"))
    # Full-scale input rings slightly past 1.0 after band-limiting; keep the [-1, 1] promise.
    return Audio(np.clip(out, -1.0, 1.0).astype(np.float32, copy=False), rate)


def to_pcm16(samples: npt.NDArray[np.float32]) -> bytes:
    """Little-endian signed 16-bit PCM, clipped to range."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def encode_bytes(audio: Audio, audio_format: ByteFormat) -> tuple[bytes, int]:
    """The audio as a file in `audio_format` (or bare little-endian pcm16), and its rate: its own, but
    48 kHz for opus."""
    if audio_format == "pcm16":
        return to_pcm16(audio.samples), audio.sample_rate
    if audio_format == "opus":
        audio = resample(audio, OPUS_RATE)
    return _encode_file(audio, audio_format), audio.sample_rate


def to_array(audio: Audio) -> list[float]:
    """The samples as the `array` format carries them: floats rounded to 5 places."""
    rounded: list[float] = np.round(audio.samples.astype(np.float64), 5).tolist()
    return rounded


# format -> (container, codec); each codec gets its frames in the sample format it asks for.
_Codec = Literal["pcm_s16le", "flac", "libmp3lame", "libopus"]
_CONTAINERS: dict[str, tuple[str, _Codec]] = {
    "wav": ("wav", "pcm_s16le"),
    "flac": ("flac", "flac"),
    "mp3": ("mp3", "libmp3lame"),
    "opus": ("ogg", "libopus"),
}


def _encode_file(audio: Audio, audio_format: str) -> bytes:
    container_name, codec = _CONTAINERS[audio_format]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_name) as container:
        stream = container.add_stream(codec, rate=audio.sample_rate, layout="mono")
        ctx = stream.codec_context
        resampler = av.AudioResampler(
            format=ctx.format.name, layout="mono", rate=audio.sample_rate, frame_size=ctx.frame_size or None
        )
        pcm = np.frombuffer(to_pcm16(audio.samples), dtype=np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = audio.sample_rate
        for chunk in (*resampler.resample(frame), *resampler.resample(None)):
            container.mux(stream.encode(chunk))
        container.mux(stream.encode(None))
    return buffer.getvalue()


class StreamEncoder:
    """One audio file written piece by piece, for answers that stream as the speech is made.

    `encode` takes the next piece (mono, at the encoder's rate) and returns the bytes of the file that
    are ready so far; `close` returns the rest. The bytes joined are one file that decodes whole:
    `pcm16` is bare samples, `wav` a header of unknown length then samples (as a live stream has it),
    `mp3` and `opus` (Ogg) one encoder and container kept open across pieces, so no piece restarts the
    stream. `bit_rate` (bits per second) applies to mp3 and opus; opus needs a rate Opus encodes at
    (48000 is the usual). Not thread-safe: one caller feeds it in order.
    """

    def __init__(
        self, audio_format: Literal["pcm16", "wav", "mp3", "opus"], sample_rate: int, bit_rate: int | None = None
    ):
        self.audio_format = audio_format
        self.sample_rate = sample_rate
        self._header = _wav_stream_header(sample_rate) if audio_format == "wav" else b""
        self._container: av.container.OutputContainer | None = None
        if audio_format in ("mp3", "opus"):
            self._sink = _Sink()
            container_name, codec = _CONTAINERS[audio_format]
            # Small IO buffer and Ogg pages of 20 ms: bytes leave with each piece instead of once a second.
            options = {"page_duration": "20000"} if container_name == "ogg" else {}
            self._container = av.open(self._sink, mode="w", format=container_name, buffer_size=4096, options=options)
            self._stream = self._container.add_stream(codec, rate=sample_rate, layout="mono")
            if bit_rate is not None:
                self._stream.codec_context.bit_rate = bit_rate
            ctx = self._stream.codec_context
            self._resampler = av.AudioResampler(
                format=ctx.format.name, layout="mono", rate=sample_rate, frame_size=ctx.frame_size or None
            )

    def encode(self, audio: Audio) -> bytes:
        if audio.sample_rate != self.sample_rate:
            raise ValueError(f"the encoder runs at {self.sample_rate} Hz; got a piece at {audio.sample_rate} Hz")
        header, self._header = self._header, b""
        if self._container is None:
            return header + to_pcm16(audio.samples)
        if audio.samples.size:
            pcm = np.frombuffer(to_pcm16(audio.samples), dtype=np.int16).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            frame.sample_rate = self.sample_rate
            for chunk in self._resampler.resample(frame):
                self._container.mux(self._stream.encode(chunk))
        return self._sink.take()

    def close(self) -> bytes:
        """The end of the file: what the encoder still held, and the container's trailer."""
        header, self._header = self._header, b""
        if self._container is None:
            return header
        for chunk in self._resampler.resample(None):
            self._container.mux(self._stream.encode(chunk))
        self._container.mux(self._stream.encode(None))
        self._container.close()
        self._container = None
        return self._sink.take()


class _Sink:
    """A write-only, unseekable file for FFmpeg: what it writes is taken out piece by piece."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def _wav_stream_header(sample_rate: int) -> bytes:
    """A 16-bit mono WAV header whose sizes say 'unknown' (0xFFFFFFFF): readers read to the end."""
    unknown = 0xFFFFFFFF
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", unknown)
        + b"WAVEfmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", unknown)
    )
