"""Reference voices: decode, validate, hash. A voice is kept by content hash, so a conversation
stores it once and a cloning backend encodes it once.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .audio import MAX_AUDIO_BYTES, Audio, b64decode_audio, decode_audio, from_pcm16, resample, to_pcm16
from .errors import FishvoiceError

VOICE_RATE = 44100  # Fish Speech's codec rate; references are kept at it.
MIN_REFERENCE_S = 1.0
MAX_REFERENCE_S = 60.0
USED_REFERENCE_S = 30.0  # only the first 30 s serve as the voice


@dataclass(frozen=True)
class VoiceReference:
    """A caller's voice: mono audio at 44.1 kHz (at most 30 s), what it says if known, and its hash."""

    hash: str
    audio: Audio
    reference_text: str | None = None

    def pcm16(self) -> bytes:
        return to_pcm16(self.audio.samples)

    @classmethod
    def from_pcm16(cls, hash: str, data: bytes, reference_text: str | None) -> VoiceReference:
        return cls(hash, Audio(from_pcm16(data), VOICE_RATE), reference_text)


def load_reference(value: str, reference_text: str | None = None, field: str = "system_audio") -> VoiceReference:
    """Decode and check a base64 reference voice; errors name `field`."""
    return reference_from_bytes(b64decode_audio(value, field), reference_text, field)


def load_speech(value: str, field: str = "user_audio") -> Audio:
    """Decode and check base64 speech (the user's message as audio) with the limits of a reference voice:
    size, format, 1 to 60 s; errors name `field`. At the file's own rate."""
    return speech_from_bytes(b64decode_audio(value, field), field)


def speech_from_bytes(data: bytes, field: str, min_seconds: float = MIN_REFERENCE_S) -> Audio:
    """An audio file's bytes decoded under a reference voice's limits: size, format, `min_seconds` to 60 s
    (some audio, with 0); errors name `field`. At the file's own rate."""
    if len(data) > MAX_AUDIO_BYTES:
        raise FishvoiceError("payload_too_large", f"{field}: audio is larger than {MAX_AUDIO_BYTES // 2**20} MB", field)
    if not data:
        raise FishvoiceError("invalid_audio", f"{field}: empty audio", field)
    audio = decode_audio(data, field, max_seconds=MAX_REFERENCE_S)
    seconds = audio.duration_s
    if audio.samples.size == 0:
        raise FishvoiceError("invalid_audio", f"{field}: the audio holds no samples", field)
    if seconds < min_seconds:
        raise FishvoiceError(
            "invalid_audio", f"{field}: audio is {seconds:.2f} s long; at least {min_seconds:g} s is needed", field
        )
    if seconds > MAX_REFERENCE_S:
        raise FishvoiceError("invalid_audio", f"{field}: audio is longer than {MAX_REFERENCE_S:g} s", field)
    return audio


def reference_from_bytes(data: bytes, reference_text: str | None = None, field: str = "audio") -> VoiceReference:
    """Decode and check a reference voice from an audio file's bytes (an upload); errors name `field`.
    The same limits as the base64 path: size, format, length, silence."""
    audio = speech_from_bytes(data, field)
    if float(np.max(np.abs(audio.samples))) < 1e-4:
        raise FishvoiceError("invalid_audio", f"{field}: audio is silent", field)
    used = Audio(audio.samples[: int(USED_REFERENCE_S * audio.sample_rate)], audio.sample_rate)
    voice_audio = resample(used, VOICE_RATE)
    digest = hashlib.sha256(to_pcm16(voice_audio.samples)).hexdigest()
    return VoiceReference(digest, voice_audio, reference_text)


def join_references(voices: list[VoiceReference]) -> VoiceReference:
    """Several references as one voice, one after another (as Fish Speech prompts with each in turn):
    the audio joined and cut to the first 30 s, the texts joined."""
    if len(voices) == 1:
        return voices[0]
    samples = np.concatenate([voice.audio.samples for voice in voices])[: int(USED_REFERENCE_S * VOICE_RATE)]
    texts = [voice.reference_text for voice in voices if voice.reference_text]
    digest = hashlib.sha256(to_pcm16(samples)).hexdigest()
    return VoiceReference(digest, Audio(samples, VOICE_RATE), " ".join(texts) or None)


def as_speakers(speakers: list[VoiceReference]) -> VoiceReference:
    """Several speakers' voices as one dialogue prompt, as Fish's models read one: speaker i's text tagged
    `<|speaker:i|>`, a line each, and their audio one after another, each cut to its share of the 30 s."""
    if len(speakers) == 1:
        return speakers[0]
    share = int(USED_REFERENCE_S * VOICE_RATE / len(speakers))
    samples = np.concatenate([speaker.audio.samples[:share] for speaker in speakers])
    text = "\n".join(f"<|speaker:{n}|>{speaker.reference_text or ''}" for n, speaker in enumerate(speakers))
    digest = hashlib.sha256(to_pcm16(samples) + text.encode()).hexdigest()  # the same audio may be tagged otherwise
    return VoiceReference(digest, Audio(samples, VOICE_RATE), text)
