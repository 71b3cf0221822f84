"""Audio in every container and out in every format, decoded back and checked for rate and length."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import soundfile

from fishvoice.audio import (
    MAX_AUDIO_BYTES,
    Audio,
    StreamEncoder,
    TimeStretch,
    b64decode_audio,
    decode_audio,
    encode_bytes,
    resample,
    time_stretch,
)
from fishvoice.contract import encode_reply_audio
from fishvoice.errors import FishvoiceError
from fishvoice.voices import VOICE_RATE, load_reference

from .conftest import speech_b64


def tone(seconds: float, rate: int = 44100, freq: float = 440.0) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    return Audio((0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)


def encode_with_av(audio: Audio, container: str, codec: str, channels: int = 1) -> bytes:
    """Write a file with FFmpeg directly, so decoding is checked on files we did not make ourselves."""
    import av

    buffer = io.BytesIO()
    layout = "stereo" if channels == 2 else "mono"
    with av.open(buffer, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=audio.sample_rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(
            np.tile(audio.samples, (channels, 1)).astype(np.float32), format="fltp", layout=layout
        )
        frame.sample_rate = audio.sample_rate
        resampler = av.AudioResampler(
            format=stream.codec_context.format.name,
            layout=layout,
            rate=audio.sample_rate,
            frame_size=stream.codec_context.frame_size or None,
        )
        for chunk in (*resampler.resample(frame), *resampler.resample(None)):
            out.mux(stream.encode(chunk))
        out.mux(stream.encode(None))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("container", "codec", "rate", "channels"),
    [
        ("wav", "pcm_s16le", 16000, 1),
        ("flac", "flac", 44100, 2),
        ("mp3", "libmp3lame", 24000, 1),
        ("ogg", "libopus", 48000, 2),
        ("webm", "libopus", 48000, 1),
        ("ipod", "aac", 44100, 2),
    ],
)
def test_every_input_container_decodes_to_mono_at_its_rate(container, codec, rate, channels):
    data = encode_with_av(tone(2.0, rate), container, codec, channels)
    audio = decode_audio(data, "system_audio", max_seconds=60)
    assert audio.samples.ndim == 1 and audio.sample_rate == rate
    assert audio.duration_s == pytest.approx(2.0, abs=0.05)
    assert 0.2 < np.abs(audio.samples).max() <= 1.0


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus", "pcm16", "array"])
@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_every_output_format_decodes_back_at_the_reported_rate_and_length(fmt, rate):
    audio = resample(tone(1.5, 44100), rate)
    data, sample_rate = encode_reply_audio(audio, fmt)
    if fmt == "array":
        back = Audio(np.asarray(data, dtype=np.float32), sample_rate)
    elif fmt == "pcm16":
        back = Audio(np.frombuffer(base64.b64decode(data), "<i2") / 32767.0, sample_rate)
    elif fmt in ("wav", "flac"):
        samples, file_rate = soundfile.read(io.BytesIO(base64.b64decode(data)))
        back = Audio(samples, file_rate)
    else:
        back = decode_audio(base64.b64decode(data), "audio", max_seconds=60)
    assert back.sample_rate == sample_rate == (48000 if fmt == "opus" else rate)
    assert back.duration_s == pytest.approx(1.5, abs=0.03)
    assert np.abs(back.samples).max() == pytest.approx(0.4, abs=0.05)


def test_no_samples_encode_to_an_empty_wav_and_flac_and_to_no_bytes_in_frame_formats():
    """A reply with nothing spoken: wav and flac are files that decoders read as empty audio (a WAV header of
    0 frames); mp3, opus and pcm16 are no bytes (see audio._encode_file)."""
    nothing = Audio(np.zeros(0, np.float32), 24000)
    wav, rate = encode_bytes(nothing, "wav")
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE" and rate == 24000
    info = soundfile.info(io.BytesIO(wav))
    assert (info.frames, info.samplerate, info.channels) == (0, 24000, 1)
    assert soundfile.read(io.BytesIO(wav))[0].size == 0
    flac, _ = encode_bytes(nothing, "flac")
    assert flac[:4] == b"fLaC"
    for data in (wav, flac):
        empty = decode_audio(data, "audio", max_seconds=60)
        assert (empty.samples.size, empty.sample_rate) == (0, 24000)
    assert {fmt: encode_bytes(nothing, fmt)[0] for fmt in ("mp3", "opus", "pcm16")} == dict.fromkeys(
        ("mp3", "opus", "pcm16"), b""
    )


def test_resample_keeps_duration_and_pitch():
    audio = resample(tone(1.0, 22050, freq=1000.0), 48000)
    assert len(audio.samples) == 48000
    spectrum = np.abs(np.fft.rfft(audio.samples))
    assert np.argmax(spectrum) * 48000 / len(audio.samples) == pytest.approx(1000, abs=2)


@pytest.mark.parametrize(
    "data", [b"not audio at all, just text" * 40, bytes(range(256)) * 100, b"RIFF\x00\x00\x00\x00WAVEfmt "]
)
def test_bytes_that_are_not_audio_are_invalid_audio(data):
    with pytest.raises(FishvoiceError) as caught:
        decode_audio(data, "system_audio", max_seconds=60)
    assert (caught.value.code, caught.value.field) == ("invalid_audio", "system_audio")


def test_truncated_file_is_refused_or_decodes_its_head():
    data = encode_with_av(tone(3.0), "mp3", "libmp3lame")
    audio = decode_audio(data[: len(data) // 2], "system_audio", max_seconds=60)
    assert 1.0 < audio.duration_s < 2.0


@pytest.mark.parametrize("text", ["@@@@", "UklGR", "data:audio/wav;base64,!!!"])
def test_bad_base64_is_invalid_audio(text):
    with pytest.raises(FishvoiceError) as caught:
        b64decode_audio(text, "system_audio")
    assert caught.value.code == "invalid_audio" and "base64" in caught.value.message


def test_data_uri_and_line_breaks_are_accepted():
    raw = b"\x01\x02\x03" * 100
    encoded = base64.encodebytes(raw).decode()
    assert b64decode_audio(f"data:audio/wav;base64,{encoded}", "system_audio") == raw


def test_audio_over_15_mb_is_payload_too_large():
    with pytest.raises(FishvoiceError) as caught:
        b64decode_audio(base64.b64encode(b"\0" * (MAX_AUDIO_BYTES + 10)).decode(), "system_audio")
    assert caught.value.code == "payload_too_large"


def test_reference_longer_than_60_s_is_refused_without_decoding_it_all():
    data = base64.b64encode(encode_with_av(tone(75.0, 16000), "flac", "flac")).decode()
    with pytest.raises(FishvoiceError) as caught:
        load_reference(data)
    assert caught.value.code == "invalid_audio" and "60 s" in caught.value.message


def test_reference_shorter_than_1_s_and_silent_ones_are_refused():
    for audio, words in [(tone(0.5), "at least 1 s"), (Audio(np.zeros(44100 * 2, np.float32), 44100), "silent")]:
        with pytest.raises(FishvoiceError) as caught:
            load_reference(speech_b64(audio, "wav"))
        assert caught.value.code == "invalid_audio" and words in caught.value.message


def test_reference_keeps_its_first_30_s_at_44_1_khz_and_hashes_by_content():
    long = speech_b64(tone(40.0, 16000), "flac")
    voice = load_reference(long, "a tone")
    assert voice.audio.sample_rate == VOICE_RATE and voice.audio.duration_s == pytest.approx(30.0, abs=0.01)
    assert load_reference(long).hash == voice.hash != load_reference(speech_b64(tone(40.0, 16000, 300.0), "flac")).hash


@pytest.mark.parametrize(("fmt", "rate"), [("wav", 44100), ("pcm16", 24000), ("mp3", 44100), ("opus", 48000)])
def test_stream_encoder_pieces_join_into_one_file_that_decodes_whole(fmt, rate):
    from fishvoice.audio import StreamEncoder

    encoder = StreamEncoder(fmt, rate, bit_rate=64000 if fmt in ("mp3", "opus") else None)
    pieces = [encoder.encode(tone(0.7, rate, freq)) for freq in (300.0, 440.0, 550.0)]
    data = b"".join(pieces) + encoder.finish()
    assert all(pieces)  # every piece gives bytes at once: nothing waits for the end
    if fmt == "pcm16":
        assert len(data) == 2 * int(0.7 * rate) * 3
        return
    decoded = decode_audio(data, "audio", max_seconds=60)
    assert decoded.sample_rate == rate and decoded.duration_s == pytest.approx(2.1, abs=0.06)
    if fmt == "wav":  # a header of unknown length, as a live stream sends it: libsndfile reads it too
        samples, sample_rate = soundfile.read(io.BytesIO(data))
        assert sample_rate == rate and len(samples) == 3 * int(0.7 * rate)


def test_stream_encoder_refuses_a_piece_at_another_rate():
    from fishvoice.audio import StreamEncoder

    with pytest.raises(ValueError, match="24000 Hz"):
        StreamEncoder("wav", 24000).encode(tone(0.1, 44100))


def dominant_frequency(audio: Audio) -> float:
    spectrum = np.abs(np.fft.rfft(audio.samples * np.hanning(len(audio.samples))))
    return float(np.argmax(spectrum) * audio.sample_rate / len(audio.samples))


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus", "aac", "pcm16"])
def test_a_stream_of_pieces_encodes_to_one_file_that_decodes_whole(fmt):
    """Three sentences encoded as they come: the parts, joined, are one valid file of their total length,
    and every piece but the codec's last frame leaves as soon as it is encoded."""
    encoder = StreamEncoder(fmt, 24000)
    parts = [encoder.encode(tone(1.0, 24000, freq)) for freq in (300.0, 400.0, 500.0)]
    parts.append(encoder.finish())
    assert all(parts[:3])  # each piece gave bytes at once: nothing waits for the end
    data = b"".join(parts)
    if fmt == "pcm16":
        back = Audio(np.frombuffer(data, "<i2") / 32767.0, 24000)
    else:
        back = decode_audio(data, "audio", max_seconds=60)
    assert back.sample_rate == encoder.sample_rate == (48000 if fmt == "opus" else 24000)
    # mp3 and aac carry their encoder's priming samples (no header says to trim them in a stream).
    assert back.duration_s == pytest.approx(3.0, abs=0.1)
    rms = float(np.sqrt(np.mean(np.square(back.samples, dtype=np.float64))))
    assert rms == pytest.approx(0.4 / np.sqrt(2), abs=0.03)  # a tone of 0.4 throughout: no gaps, no blasts
    last = Audio(back.samples[-int(0.7 * back.sample_rate) : -int(0.2 * back.sample_rate)], back.sample_rate)
    assert dominant_frequency(last) == pytest.approx(500.0, abs=15)


def test_streamed_wav_says_its_length_is_unknown_and_reads_to_the_end():
    encoder = StreamEncoder("wav", 16000)
    data = encoder.encode(tone(0.5, 16000)) + encoder.encode(tone(0.25, 16000)) + encoder.finish()
    assert data[4:8] == data[40:44] == b"\xff\xff\xff\xff"
    samples, rate = soundfile.read(io.BytesIO(data))
    assert rate == 16000 and len(samples) == 12000


@pytest.mark.parametrize("speed", [0.25, 0.5, 2.0, 4.0])
def test_time_stretch_changes_length_by_speed_and_keeps_pitch(speed):
    audio = tone(2.0, 24000, freq=440.0)
    fast = time_stretch(audio, speed)
    assert fast.sample_rate == 24000
    assert fast.duration_s == pytest.approx(2.0 / speed, rel=0.05)
    assert dominant_frequency(fast) == pytest.approx(440.0, abs=5)


def test_time_stretch_fed_in_pieces_matches_the_whole():
    audio = tone(2.0, 22050, freq=330.0)
    stretch = TimeStretch(1.5, 22050)
    pieces = [stretch.feed(Audio(part, 22050)) for part in np.array_split(audio.samples, 7)]
    joined = np.concatenate([*(p.samples for p in pieces), stretch.flush().samples])
    assert len(joined) == pytest.approx(len(time_stretch(audio, 1.5).samples), abs=64)
    assert dominant_frequency(Audio(joined, 22050)) == pytest.approx(330.0, abs=5)


def test_time_stretch_at_speed_one_is_the_audio_itself_and_refuses_speeds_out_of_range():
    audio = tone(0.5, 16000)
    assert time_stretch(audio, 1.0) is audio
    for speed in (0.2, 4.5):
        with pytest.raises(ValueError, match=r"between 0\.25 and 4\.0"):
            TimeStretch(speed, 16000)
