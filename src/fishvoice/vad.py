"""Voice activity in a live stream: Silero's speech probability every 32 ms, and turns cut from it.

The model is the Silero VAD that faster-whisper ships (its ONNX file, run by onnxruntime), fed as the
audio arrives: its recurrent state and the last 64 samples carry from one call to the next, so a
stream gets the probabilities the whole recording would (with half a second of silence before it, as a live
stream has before anyone speaks), but for a state started again after a second of quiet. `TurnDetector` is
OpenAI's `server_vad`: speech starts when the probability crosses `threshold`, stops after `silence_ms` below
it (less a margin, as Silero's own segmenter does), and each turn keeps `prefix_ms` of audio before its start.

With `eagerness` set it is OpenAI's `semantic_vad`: the silence that ends a turn depends on what was said.
The turn is heard where the speech pauses (as it always is, to answer within a breath); a transcript that
reads as a finished utterance (`reads_finished`: a question, or a sentence ended without a word that asks for
more) ends the turn after a short silence, one that trails off ("and...", "I'd like to") only after a long
one; until the transcript is known the long one holds. `EAGERNESS_MS` gives both, per eagerness.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Literal, cast

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
# A stream starts as if this much silence came before it (see `_after_silence`).
LEAD_IN_WINDOWS = 16  # 512 ms
# The model's state starts again after this long with no window at SIGN_OF_SPEECH or over (see StreamingVAD).
# Phone-band speech is near the threshold: after 2 to 5 s of an A-law line's quiet (as a 5 s or 2 s period left
# it), 1 to 2 questions of 25 were cut at their first words; started again each second, none of 100.
QUIET_RESET_WINDOWS = 31  # about 1 s
SIGN_OF_SPEECH = 0.2


def _session() -> Any:
    from faster_whisper.vad import get_vad_model

    return get_vad_model().session  # one per process (cached), thread-safe to run


@functools.cache
def _after_silence() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The model's recurrent state after half a second of silence, as a live stream's speech comes. From its
    zero state the model doubts the first speech: phone-band speech from a stream's first sample fell under
    the threshold for 500 ms after its first word in 1 of 20 renditions (a turn cut at "What is"); after
    the silence, in none of 80."""
    zeros = np.zeros(_STATE_SHAPE, np.float32)
    silence = np.zeros((LEAD_IN_WINDOWS, _CONTEXT + WINDOW), np.float32)
    _, h, c = _session().run(None, {"input": silence, "h": zeros, "c": zeros})
    return h, c


class StreamingVAD:
    """Speech probabilities of 16 kHz audio fed in pieces of any length, one per 32 ms window.

    Silero's recurrent state drifts over long steady non-speech (a line's DC offset, hum, digital zeros): after
    a minute of an A-law phone line's silence (one step above zero), 3 of a question's windows were over 0.5
    against 34 after none; after a minute of 50 Hz hum, 36 of 54 against 48. So after `QUIET_RESET_WINDOWS`
    windows with no sign of speech the state starts again from the one after silence (which heard 46 of 53
    after each of those minutes; in quiet noise its highest was 0.31, under the threshold)."""

    def __init__(self) -> None:
        self._session = _session()
        self._h, self._c = _after_silence()  # replaced, never changed in place: shared
        self._context = np.zeros(_CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)
        self._quiet = 0  # windows since the last with any sign of speech

    def feed(self, samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The probabilities of the windows these samples complete (samples left over wait for more)."""
        audio = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        whole = audio.size // WINDOW * WINDOW
        self._pending = audio[whole:]
        if whole == 0:
            return np.zeros(0, np.float32)
        windows = audio[:whole].reshape(-1, WINDOW)
        # A long piece runs in parts, so that the state can start again inside it.
        parts = range(0, len(windows), QUIET_RESET_WINDOWS)
        return np.concatenate([self._run(windows[start : start + QUIET_RESET_WINDOWS]) for start in parts])

    def _run(self, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        contexts = np.concatenate([self._context[None], windows[:-1, -_CONTEXT:]])
        self._context = windows[-1, -_CONTEXT:].copy()
        batch = np.concatenate([contexts, windows], axis=1)
        output, self._h, self._c = self._session.run(None, {"input": batch, "h": self._h, "c": self._c})
        probabilities = cast(npt.NDArray[np.float32], np.asarray(output, np.float32).reshape(-1))
        signs = np.flatnonzero(probabilities >= SIGN_OF_SPEECH)
        self._quiet = len(probabilities) - 1 - int(signs[-1]) if signs.size else self._quiet + len(probabilities)
        if self._quiet >= QUIET_RESET_WINDOWS:
            self._h, self._c = _after_silence()
            self._quiet = 0
        return probabilities


Eagerness = Literal["low", "medium", "high"]
# semantic_vad's silence that ends a turn, in ms: after a finished utterance, and after one that trails off.
# `low` waits even after what reads as finished: the recogniser may mishear a trailing word ("... my sister and"
# heard as "... my sister in?"), and low is the promise not to cut a sentence paused mid-way.
EAGERNESS_MS: dict[Eagerness, tuple[int, int]] = {"high": (150, 1200), "medium": (350, 2500), "low": (2000, 6000)}
# Words a sentence does not end on: a transcript ending with one trails off, whatever its punctuation.
_TRAILING_WORDS = (
    "a an and as at because but by for from if in into like my of on or so than that the their then to um uh with "
    "when where which while who your our his her its i we you they is are was were be"
)
_TRAILING = frozenset(_TRAILING_WORDS.split())
# Words not even a question ends on ("... and?" is a sentence cut short and misheard).
_NEVER_LAST_WORDS = "a an and because but or the um uh my your our their his her its"
_NEVER_LAST = frozenset(_NEVER_LAST_WORDS.split())


def reads_finished(transcript: str) -> bool:
    """Whether what was heard reads as a finished utterance: a question, or a sentence ended by a full stop or
    an exclamation on a word that can end one (Whisper punctuates what it hears)."""
    text = transcript.strip()
    words = re.findall(r"[a-z']+", text.lower())
    if not words or text.endswith(".."):
        return False
    if text.endswith("?"):
        return words[-1] not in _NEVER_LAST
    return text.endswith((".", "!")) and words[-1] not in _TRAILING


@dataclass(frozen=True)
class TurnOptions:
    """OpenAI's `server_vad` settings, or its `semantic_vad` (`eagerness` set)."""

    threshold: float = 0.5
    prefix_ms: int = 300
    silence_ms: int = 500
    eagerness: Eagerness | None = None
    idle_ms: int | None = None  # server_vad's idle_timeout_ms: a user silent this long after a reply is prompted

    @property
    def pause_ms(self) -> int:
        """Quiet long enough to call a pause, and to hear the turn while the rest of `silence_ms` passes."""
        return min(PAUSE_MS, self.silence_ms)

    def silence_after(self, finished: bool | None) -> int:
        """The silence that ends a turn: server VAD's own, or semantic VAD's for what the pause's transcript
        reads as (None: not heard yet)."""
        if self.eagerness is None:
            return self.silence_ms
        short, long = EAGERNESS_MS[self.eagerness]
        return short if finished else long


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
        self._silence_ms = options.silence_after(None)  # what ends the current pause, as far as it is known

    @property
    def speaking(self) -> bool:
        return self._speaking

    def heard(self, finished: bool) -> None:
        """The current pause's transcript reads as finished or not: semantic VAD's silence follows it."""
        if self._paused:
            self._silence_ms = self.options.silence_after(finished)

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
                self._silence_ms = self.options.silence_after(None)
                if not self._speaking:
                    self._speaking = True
                    events.append(SpeechStarted(start))
            elif self._speaking and probability < low:
                quiet_ms = self._position_ms - self._last_speech_ms
                if not self._paused and quiet_ms >= self.options.pause_ms:
                    self._paused = True
                    events.append(SpeechPaused(self._last_speech_ms))
                if quiet_ms >= self._silence_ms:
                    self._speaking = False
                    events.append(SpeechStopped(self._last_speech_ms))
        return events
