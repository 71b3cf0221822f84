"""Word spans in the speech of a voice that does not tell them (the Fish engine, any future one): Piper
speaks the same text, knowing where each of its words is (piper.py), and dynamic time warping of the two
renditions' MFCCs (librosa) carries each word's span across, as aeneas does with eSpeak; each span is then
trimmed to where the speech in it is voiced, since a warp puts pauses on the words beside them.

Measured (bench/timestamps.py) against speech whose word boundaries are known, far closer than Whisper's
attention-based word times: those drift early by a quarter of a second where pauses fall between words.
English, as the embedded Piper voice speaks it.
"""

from __future__ import annotations

import functools
import logging
import threading

import numpy as np

from ..audio import Audio, resample
from ..tts.piper import PiperTTS
from .words import Span

log = logging.getLogger(__name__)

_RATE = 16000
_HOP = _RATE // 100  # a frame each 10 ms
_VOICED_DB = -35.0  # a frame this far below the loudest is silence
# Piper's reference speaks a little faster than its own rate, for a cheaper rendition and warp (measured on
# bench/timestamps.py's joined words: p95 boundary error 73 ms at 1x, 69 at 1.2x, 105 at 1.4x).
_PACE = 1.2
_CRUMB = 6  # frames: a voiced run this short, alone beyond a pause at a span's edge, is the next word's
_PAUSE = 8  # frames of silence that make a pause
_BETWEEN_WORDS = 15  # frames of silence that part two words (a stop consonant's closure is shorter)
_COLLAPSED = 0.1  # seconds: a word found shorter than this was put in the wrong place
_NEAR = 35  # frames: how far from a warped boundary a pause may lie and still be taken for it
_STEPS = np.array([[1, 1], [0, 1], [1, 0]])
_STEP_COSTS = np.array([0.0, 1.0, 1.0])
_MOST_CELLS = 40_000_000  # frames x frames of the warp (20 s against 20 s is 4M): past it, words are spread


class ReferenceAligner:
    """Spans of a text's words in any voice's audio of it."""

    def __init__(self, piper: PiperTTS | None = None):
        self._piper = piper or PiperTTS()

    def spans(self, audio: Audio, text: str) -> list[Span]:
        """The words' spans in `audio` (seconds from its start), as Piper's rendition of `text` has them."""
        pieces = list(self._piper.stream_timed(text, pace=_PACE))
        reference, spans, at = [], [], 0.0
        for piece, piece_spans in pieces:
            reference.append(piece.samples)
            spans += [Span(at + s.start, at + s.end, s.weight) for s in piece_spans]
            at += piece.duration_s
        target = resample(audio, _RATE).samples
        if target.size < _HOP:
            return []
        voiced = _voiced_frames(target)
        if not spans or int(at * 100) * voiced.size > _MOST_CELLS:
            log.warning("%.0f s of speech cannot be aligned word by word: its words are spread", audio.duration_s)
            return _trimmed([Span(0.0, target.size / _RATE, 1.0)], voiced)
        source = resample(Audio(np.concatenate(reference), self._piper.sample_rate), _RATE).samples
        return _trimmed(_at_pauses(_warped(spans, source, target), voiced), voiced)


def _warped(spans: list[Span], source: np.ndarray, target: np.ndarray) -> list[Span]:
    """`spans` of the source carried into the target along the warping path of their MFCCs."""
    import librosa

    features = [_mfcc(samples) for samples in (source, target)]
    # A step that holds one side still costs a little more than an even one: a warp that lingers less
    # (measured: p95 boundary error 65 -> 43 ms on bench/timestamps.py's joined words).
    _, path = librosa.sequence.dtw(
        X=features[0], Y=features[1], metric="euclidean", step_sizes_sigma=_STEPS, weights_add=_STEP_COSTS
    )
    last = features[0].shape[1] - 1
    earliest = np.full(last + 1, np.iinfo(np.int64).max)
    np.minimum.at(earliest, path[:, 0], path[:, 1])  # each source frame's first target frame

    def carried(seconds: float) -> float:
        return float(earliest[min(int(seconds * 100), last)]) / 100

    return [Span(carried(s.start), max(carried(s.start), carried(s.end)), s.weight) for s in spans]


def _mfcc(samples: np.ndarray) -> np.ndarray:
    """13 MFCCs a frame, each normalised over the utterance (so two voices' levels and timbres compare)."""
    import librosa

    mfcc = np.asarray(librosa.feature.mfcc(y=samples, sr=_RATE, n_mfcc=13, hop_length=_HOP, n_fft=512))
    normalised: np.ndarray = (mfcc - mfcc.mean(axis=1, keepdims=True)) / (mfcc.std(axis=1, keepdims=True) + 1e-6)
    return normalised


def _voiced_frames(samples: np.ndarray) -> np.ndarray:
    frames = samples[: samples.size // _HOP * _HOP].reshape(-1, _HOP)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    voiced: np.ndarray = rms > rms.max(initial=0.0) * 10 ** (_VOICED_DB / 20)
    return voiced


def _trimmed(spans: list[Span], voiced: np.ndarray) -> list[Span]:
    """Each span narrowed to the voiced frames in it (as it is, where none is voiced), leaving out a crumb of
    the word beside it: a short voiced run cut off from the rest by a pause (a warp may begin a word after
    a pause at the pause's start, where the word before still ends)."""
    out = []
    for span in spans:
        first, stop = int(span.start * 100), min(voiced.size, int(np.ceil(span.end * 100)))
        runs = _runs(voiced[first:stop])
        while len(runs) > 1 and runs[0][1] - runs[0][0] < _CRUMB and runs[1][0] - runs[0][1] >= _PAUSE:
            runs = runs[1:]
        while len(runs) > 1 and runs[-1][1] - runs[-1][0] < _CRUMB and runs[-1][0] - runs[-2][1] >= _PAUSE:
            runs = runs[:-1]
        if runs:
            span = Span((first + runs[0][0]) / 100, (first + runs[-1][1]) / 100, span.weight)
        out.append(span)
    return out


def _at_pauses(spans: list[Span], voiced: np.ndarray) -> list[Span]:
    """Two words' boundary moved to the pause between them where the speech pauses near it: a warp puts
    the edge of a pause a little off (a word starting at the pause's start, or ending inside the next one),
    and a pause is where one word ends and the next begins."""
    pauses = [(start, stop) for start, stop in _runs(~voiced) if stop - start >= _BETWEEN_WORDS]
    out = list(spans)
    for i in range(len(out) - 1):
        before, after = out[i], out[i + 1]
        low, high = before.end * 100 - _NEAR, after.start * 100 + _NEAR
        middle = (before.end + after.start) * 50
        collapsed = after.end - after.start < _COLLAPSED  # a short word the warp squeezed into its neighbour
        near = [
            (a, b)
            for a, b in pauses
            if a < high and b > low and a > before.start * 100 and (b < after.end * 100 or collapsed)
        ]
        if near:
            start, stop = min(near, key=lambda pause: abs((pause[0] + pause[1]) / 2 - middle))
            out[i] = Span(before.start, start / 100, before.weight)
            out[i + 1] = Span(stop / 100, max(after.end, stop / 100), after.weight)
    return out


def _runs(voiced: np.ndarray) -> list[tuple[int, int]]:
    """The voiced runs, as [start, stop) frames."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], voiced.astype(np.int8), [0]))))
    return [(int(start), int(stop)) for start, stop in zip(edges[::2], edges[1::2], strict=True)]


_lock = threading.Lock()


@functools.cache
def _shared() -> ReferenceAligner:
    return ReferenceAligner()


def shared_reference_aligner() -> ReferenceAligner:
    """The process's one reference aligner, its Piper voice loaded at first use."""
    with _lock:
        return _shared()
