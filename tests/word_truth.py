"""Speech whose word boundaries are known, to measure word timings against (tests and bench/timestamps.py).

- `separate_sentences`: the words as sentences of one word each ("Morning. Light."), spoken by Piper in one
  text: the voice makes each sentence apart, so each word lies alone between silences, and where its sound
  starts and ends is read off its sentence's piece of audio (`piece_bounds`, on the very audio timed: the
  voice draws its durations at random, so another run of it would differ).
- `joined_words`: each word spoken on its own by Piper at another pace and prosody than its default, joined
  with short gaps: speech no aligner's reference voice made (the reference aligner's test).
In both, a word's sound starts and ends where its sentence's samples first and last reach 2% of its peak.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fishvoice.audio import Audio

WORDS = [
    "Morning",
    "light",
    "spilled",
    "across",
    "quiet",
    "streets",
    "while",
    "bakers",
    "carried",
    "warm",
    "bread",
    "toward",
    "small",
    "cafes",
    "near",
    "the",
    "river",
]
_LEVEL = 0.02  # of a sentence's peak: where its word's sound begins and ends
_GAP_S = 0.12


@dataclass(frozen=True)
class Truth:
    audio: Audio
    text: str
    bounds: list[tuple[float, float]]  # each word's (start, end), seconds


def sounded(samples: np.ndarray) -> tuple[int, int]:
    loud = np.flatnonzero(np.abs(samples) > _LEVEL * np.abs(samples).max())
    return int(loud[0]), int(loud[-1]) + 1


def separate_sentences(words=WORDS) -> str:
    """The words as one-word sentences: spoken by Piper, each is a piece of its own."""
    return " ".join(f"{word.capitalize()}." for word in words)


def piece_bounds(pieces: list[Audio]) -> list[tuple[float, float]]:
    """Where the sound of each piece (a one-word sentence) is, in seconds of the pieces joined."""
    bounds, at = [], 0
    for piece in pieces:
        start, end = sounded(piece.samples)
        bounds.append(((at + start) / piece.sample_rate, (at + end) / piece.sample_rate))
        at += piece.samples.size
    return bounds


def joined_words(piper_voice, words=WORDS) -> Truth:
    """Each word spoken alone by `piper_voice` (piper's PiperVoice) slower and with more variation than its
    default, joined with gaps."""
    from piper import SynthesisConfig

    other = SynthesisConfig(length_scale=1.25, noise_scale=0.9, noise_w_scale=1.2)
    samples = [next(iter(piper_voice.synthesize(f"{word}.", syn_config=other))).audio_float_array for word in words]
    return _joined(samples, piper_voice.config.sample_rate, " ".join(words), gap_s=_GAP_S)


def _joined(pieces: list[np.ndarray], rate: int, text: str, gap_s: float) -> Truth:
    """The pieces joined with gaps, and where each one's sound is."""
    gap = np.zeros(int(gap_s * rate), np.float32)
    out, bounds, at = [], [], 0
    for piece in pieces:
        start, end = sounded(piece)
        bounds.append(((at + start) / rate, (at + end) / rate))
        out += [piece.astype(np.float32), gap]
        at += piece.size + gap.size
    return Truth(Audio(np.concatenate(out), rate), text, bounds)


def boundary_errors_ms(found: list[tuple[float, float]], truth: list[tuple[float, float]]) -> np.ndarray:
    """|found - true| of every start and end, in ms."""
    assert len(found) == len(truth), (len(found), len(truth))
    pairs = zip(np.ravel(found), np.ravel(truth), strict=True)
    return np.array([abs(f - t) for f, t in pairs]) * 1000
