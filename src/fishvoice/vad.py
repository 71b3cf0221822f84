"""Voice activity in a live stream: Silero's speech probability every 32 ms, and turns cut from it.

The model is the Silero VAD that faster-whisper ships (its ONNX file, run by onnxruntime), fed as the
audio arrives: its recurrent state and the last 64 samples carry from one call to the next, so a
stream gets the probabilities the whole recording would. `TurnDetector` is OpenAI's `server_vad`:
speech starts when the probability crosses `threshold`, stops after `silence_ms` below it (less a
margin, as Silero's own segmenter does), and each turn keeps `prefix_ms` of audio before its start.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt

VAD_RATE = 16000
WINDOW = 512  # samples per probability: 32 ms at 16 kHz
WINDOW_MS = WINDOW * 1000 // VAD_RATE
# A turn's audio runs this far past its last window over the threshold: a word's soft end (a fading
# consonant) falls below it, and without it Whisper loses the word ("the capital of").
TAIL_MS = 200
PAUSE_MS = 96  # this long under the threshold, the speech has paused: a guess at where the turn ends
_CONTEXT = 64  # samples of the previous window the model sees before each window
_STATE_SHAPE = (1, 1, 128)


def _session() -> Any:
    from faster_whisper.vad import get_vad_model

    return get_vad_model().session  # one per process (cached), thread-safe to run


class StreamingVAD:
    """Speech probabilities of 16 kHz audio fed in pieces of any length, one per 32 ms window."""

    def __init__(self) -> None:
        self._session = _session()
        self._h = np.zeros(_STATE_SHAPE, np.float32)
        self._c = np.zeros(_STATE_SHAPE, np.float32)
        self._context = np.zeros(_CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)

    def feed(self, samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The probabilities of the windows these samples complete (samples left over wait for more)."""
        audio = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        whole = audio.size // WINDOW * WINDOW
        self._pending = audio[whole:]
        if whole == 0:
            return np.zeros(0, np.float32)
        windows = audio[:whole].reshape(-1, WINDOW)
        contexts = np.concatenate([self._context[None], windows[:-1, -_CONTEXT:]])
        self._context = windows[-1, -_CONTEXT:].copy()
        batch = np.concatenate([contexts, windows], axis=1)
        output, self._h, self._c = self._session.run(None, {"input": batch, "h": self._h, "c": self._c})
        return cast(npt.NDArray[np.float32], np.asarray(output, np.float32).reshape(-1))


@dataclass(frozen=True)
class TurnOptions:
    """OpenAI's `server_vad` settings."""

    threshold: float = 0.5
    prefix_ms: int = 300
    silence_ms: int = 500

    @property
    def pause_ms(self) -> int:
        """Quiet long enough to call a pause, and to hear the turn while the rest of `silence_ms` passes."""
        return min(PAUSE_MS, self.silence_ms)


@dataclass(frozen=True)
class SpeechStarted:
    at_ms: int  # where speech began (the turn's audio starts `prefix_ms` before it)


@dataclass(frozen=True)
class SpeechPaused:
    at_ms: int  # where the speech went quiet (`pause_ms` ago): it stopped here unless it resumes in `silence_ms`


@dataclass(frozen=True)
class SpeechStopped:
    at_ms: int  # where speech ended (before the silence that ended it)


class TurnDetector:
    """Speech start and stop in a stream of window probabilities (times in ms from the stream's start)."""

    def __init__(self, options: TurnOptions) -> None:
        self.options = options
        self._position_ms = 0
        self._speaking = False
        self._paused = False
        self._last_speech_ms = 0

    @property
    def speaking(self) -> bool:
        return self._speaking

    def feed(self, probabilities: npt.NDArray[np.float32]) -> list[SpeechStarted | SpeechPaused | SpeechStopped]:
        """The changes these windows bring: a pause comes first in every stop (so its audio can be heard
        while the silence is still being waited out), and a pause may be followed by more speech."""
        events: list[SpeechStarted | SpeechPaused | SpeechStopped] = []
        # Silence must fall clearly below the start threshold, so a wavering voice stays one turn.
        low = max(self.options.threshold - 0.15, 0.01)
        for probability in probabilities.tolist():
            start, self._position_ms = self._position_ms, self._position_ms + WINDOW_MS
            if probability >= self.options.threshold:
                self._last_speech_ms, self._paused = self._position_ms, False
                if not self._speaking:
                    self._speaking = True
                    events.append(SpeechStarted(start))
            elif self._speaking and probability < low:
                quiet_ms = self._position_ms - self._last_speech_ms
                if not self._paused and quiet_ms >= self.options.pause_ms:
                    self._paused = True
                    events.append(SpeechPaused(self._last_speech_ms))
                if quiet_ms >= self.options.silence_ms:
                    self._speaking = False
                    events.append(SpeechStopped(self._last_speech_ms))
        return events
