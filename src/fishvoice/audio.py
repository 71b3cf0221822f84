"""Audio in and out: decode any input file, resample, encode the output formats, base64.

Decoding and encoding go through PyAV (FFmpeg), resampling through soxr, time stretching through
FFmpeg's `atempo` filter. Everything inside fishvoice is mono float32 in [-1, 1] with its sample rate
beside it.

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
StreamFormat = Literal["wav", "flac", "mp3", "opus", "aac", "pcm16"]  # what StreamEncoder writes
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
    return from_float(samples).astype("<i2").tobytes()


def from_pcm16(data: bytes) -> npt.NDArray[np.float32]:
    """Float samples from little-endian signed 16-bit PCM (to_pcm16's inverse); an odd last byte is dropped."""
    return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float32) / 32767.0


G711_RATE = 8000  # telephone audio: G.711 at 8 kHz, one byte a sample
G711_CODECS = {"pcmu": "pcm_mulaw", "pcma": "pcm_alaw"}  # mu-law (North America, Japan), A-law (elsewhere)


def to_g711(samples: npt.NDArray[np.float32], law: str) -> bytes:
    """8 kHz samples as G.711 bytes (`law`: pcmu or pcma), by FFmpeg's codec."""
    if not samples.size:
        return b""
    encoder = av.CodecContext.create(G711_CODECS[law], "w")
    encoder.sample_rate, encoder.format, encoder.layout = G711_RATE, "s16", "mono"  # type: ignore[attr-defined]
    frame = av.AudioFrame.from_ndarray(from_float(samples)[None, :], format="s16", layout="mono")
    frame.sample_rate = G711_RATE
    return b"".join(bytes(packet) for packet in encoder.encode(frame))  # type: ignore[attr-defined]


def from_g711(data: bytes, law: str) -> npt.NDArray[np.float32]:
    """G.711 bytes (`law`: pcmu or pcma) as 8 kHz float samples."""
    if not data:
        return np.zeros(0, np.float32)
    decoder = av.CodecContext.create(G711_CODECS[law], "r")
    decoder.sample_rate, decoder.layout = G711_RATE, "mono"  # type: ignore[attr-defined]
    frames = decoder.decode(av.Packet(data))  # type: ignore[attr-defined]
    return np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames]).astype(np.float32) / 32767.0


def from_float(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
    return cast(npt.NDArray[np.int16], (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype(np.int16))


def encode_bytes(audio: Audio, audio_format: ByteFormat) -> tuple[bytes, int]:
    """The audio as a file in `audio_format` (or bare little-endian pcm16), and its rate: its own, but
    48 kHz for opus. No samples give pcm16 no bytes and each file format what `_encode_file` says."""
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
_Codec = Literal["pcm_s16le", "flac", "libmp3lame", "libopus", "aac"]
_CONTAINERS: dict[str, tuple[str, _Codec]] = {
    "wav": ("wav", "pcm_s16le"),
    "flac": ("flac", "flac"),
    "mp3": ("mp3", "libmp3lame"),
    "opus": ("ogg", "libopus"),
    "aac": ("adts", "aac"),  # AAC-LC in ADTS frames: each frame carries its own header, so a stream can be cut
}


def _encode_file(audio: Audio, audio_format: str) -> bytes:
    """The audio as one file. With no samples (a text with nothing to say): wav is a valid file of 0 frames,
    its header alone, and flac a valid file of no frames (its length 0, which FLAC reads as "unknown");
    FFmpeg decodes both to no samples, and so does libsndfile the WAV. mp3 and opus are 0 bytes: an MP3 is
    nothing but its frames, and an Ogg Opus stream without an audio page is one decoders refuse, so no
    bytes say "no audio" most plainly."""
    container_name, codec = _CONTAINERS[audio_format]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_name) as container:
        stream = container.add_stream(codec, rate=audio.sample_rate, layout="mono")
        if not audio.samples.size and container_name == "wav":
            container.start_encoding()  # the header, which FFmpeg writes otherwise with the first packet
        ctx = stream.codec_context
        resampler = av.AudioResampler(
            format=ctx.format.name, layout="mono", rate=audio.sample_rate, frame_size=ctx.frame_size or None
        )
        pcm = np.frombuffer(to_pcm16(audio.samples), dtype=np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = audio.sample_rate
        head = resampler.resample(frame) if audio.samples.size else []  # no samples: no frames, not an error
        for chunk in (*head, *resampler.resample(None)):
            container.mux(stream.encode(chunk))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def _pcm16_frame(audio: Audio) -> av.AudioFrame:
    pcm = np.frombuffer(to_pcm16(audio.samples), dtype=np.int16).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
    frame.sample_rate = audio.sample_rate
    return frame


class _Sink:
    """A write-only file for PyAV: not seekable, so a muxer writes its header once, up front, and never
    goes back to fill in lengths (what lets the bytes leave as they are written)."""

    def __init__(self) -> None:
        self._data = bytearray()

    def write(self, data: bytes) -> int:
        self._data += data
        return len(data)

    def take(self) -> bytes:
        data = bytes(self._data)
        self._data.clear()
        return data


def streaming_wav_header(sample_rate: int) -> bytes:
    """A 16-bit mono WAV header whose lengths say "unknown" (0xFFFFFFFF), for audio whose end is not yet
    known: readers take the data up to the end of the stream."""
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


class StreamEncoder:
    """One audio file written piece by piece: `encode` each piece as it comes and send what it returns,
    then send what `finish` returns; the parts joined are one valid file.

    One encoder stays open across the pieces, so there are no gaps or repeated headers where pieces meet.
    The muxer writes to a stream it cannot seek back in, so lengths in headers stay "unknown": FLAC's
    STREAMINFO has no sample count, MP3 has no Xing header, WAV says 0xFFFFFFFF (players read on to the
    end). `pcm16` is bare little-endian samples. Opus is at 48 kHz (Ogg Opus always decodes at 48 kHz);
    every other format at `sample_rate`, the rate of the pieces. `bit_rate` (bits/s) sets a lossy codec's."""

    def __init__(self, audio_format: StreamFormat, sample_rate: int, bit_rate: int | None = None) -> None:
        self.audio_format = audio_format
        self.input_rate = sample_rate
        self.sample_rate = OPUS_RATE if audio_format == "opus" else sample_rate
        self._header = streaming_wav_header(sample_rate) if audio_format == "wav" else b""
        self._container: av.container.OutputContainer | None = None
        if audio_format in ("wav", "pcm16"):
            return
        container_name, codec = _CONTAINERS[audio_format]
        self._sink = _Sink()
        # Pages of Ogg go out every 20 ms of audio rather than every second, so each piece leaves whole.
        options = {"page_duration": "20000"} if audio_format == "opus" else {}
        # A small IO buffer: the bytes of each piece leave with it, not once 32 KB have gathered.
        self._container = av.open(self._sink, mode="w", format=container_name, buffer_size=4096, options=options)
        self._stream = self._container.add_stream(codec, rate=self.sample_rate, layout="mono")
        if bit_rate is not None:  # bits per second, for the lossy codecs; their own default otherwise
            self._stream.codec_context.bit_rate = bit_rate
        ctx = self._stream.codec_context
        self._resampler = av.AudioResampler(
            format=ctx.format.name, layout="mono", rate=self.sample_rate, frame_size=ctx.frame_size or None
        )

    def encode(self, audio: Audio) -> bytes:
        """The bytes of the file that `audio` completes (some may wait for the next piece: a codec frame)."""
        if audio.sample_rate != self.input_rate:
            raise ValueError(f"pieces must be at {self.input_rate} Hz (got {audio.sample_rate})")
        header, self._header = self._header, b""
        if self._container is None:
            return header + to_pcm16(audio.samples)
        if audio.samples.size:
            for frame in self._resampler.resample(_pcm16_frame(audio)):
                self._container.mux(self._stream.encode(frame))
        return self._sink.take()

    def finish(self) -> bytes:
        """The file's last bytes: what the codec still held, and the container's trailer."""
        header, self._header = self._header, b""
        if self._container is None:
            return header
        for frame in self._resampler.resample(None):
            self._container.mux(self._stream.encode(frame))
        self._container.mux(self._stream.encode(None))
        self._container.close()
        self._container = None
        return self._sink.take()

    def close(self) -> None:
        """Drop an unfinished file (a client that went away); a no-op after `finish`."""
        if self._container is not None:
            self._container.close()
            self._container = None


MIN_SPEED, MAX_SPEED = 0.25, 4.0
_ATEMPO_RANGE = (0.5, 2.0)  # one atempo filter's best range; farther speeds chain two or more


class TimeStretch:
    """Audio made faster or slower by `speed` with its pitch kept (FFmpeg's `atempo`, WSOLA-like), fed
    piece by piece: each `feed` returns what is ready, `flush` the rest. One instance per stretch of
    continuous audio (a sentence), so the joins inside it are seamless."""

    def __init__(self, speed: float, sample_rate: int) -> None:
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise ValueError(f"speed must be between {MIN_SPEED} and {MAX_SPEED} (got {speed})")
        self.sample_rate = sample_rate
        self._graph = av.filter.Graph()
        node = self._graph.add_abuffer(format="flt", sample_rate=sample_rate, layout="mono")
        for tempo in _atempo_steps(speed):
            step = self._graph.add("atempo", f"{tempo:.6f}")
            node.link_to(step)
            node = step
        sink = self._graph.add("abuffersink")
        node.link_to(sink)
        self._graph.configure()
        self._pts = 0

    def feed(self, audio: Audio) -> Audio:
        if audio.sample_rate != self.sample_rate:
            raise ValueError(f"pieces must be at {self.sample_rate} Hz (got {audio.sample_rate})")
        if audio.samples.size:
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(audio.samples, dtype=np.float32).reshape(1, -1), format="flt", layout="mono"
            )
            frame.sample_rate = self.sample_rate
            frame.pts = self._pts
            self._pts += audio.samples.size
            self._graph.push(frame)
        return self._pull()

    def flush(self) -> Audio:
        self._graph.push(None)
        return self._pull()

    def _pull(self) -> Audio:
        parts: list[npt.NDArray[np.float32]] = []
        while True:
            try:
                frame = self._graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                break
            parts.append(frame.to_ndarray().reshape(-1).astype(np.float32, copy=False))
        samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return Audio(np.clip(samples, -1.0, 1.0), self.sample_rate)


def _atempo_steps(speed: float) -> list[float]:
    low, high = _ATEMPO_RANGE
    steps: list[float] = []
    while speed < low:
        steps.append(low)
        speed /= low
    while speed > high:
        steps.append(high)
        speed /= high
    return [*steps, speed]


def time_stretch(audio: Audio, speed: float) -> Audio:
    """`audio` played `speed` times as fast, pitch kept (`speed` 1 returns it as it is)."""
    if speed == 1.0 or audio.samples.size == 0:
        return audio
    stretch = TimeStretch(speed, audio.sample_rate)
    head, tail = stretch.feed(audio), stretch.flush()
    return Audio(np.concatenate([head.samples, tail.samples]), audio.sample_rate)
