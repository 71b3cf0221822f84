"""A Piper voice's own timings: its ONNX model patched (with piper-tts' own patch) to output how many
samples it gave each phoneme, and those phonemes grouped into the words they spell. Exact for the audio
the voice made, and free: the durations are computed on the way to the audio anyway."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..cache import default_cache_dir, write_atomic
from .words import Span

log = logging.getLogger(__name__)

_BETWEEN_WORDS = frozenset(" ^$_")  # a word gap, the sentence's start and end, padding
_PUNCTUATION = frozenset(",.;:!?¡¿—…\"'()-")  # a pause the voice makes: no word's time
_MARKS = frozenset("ˈˌː")  # stress and length: part of a phoneme, not one of their own


def patched_model(path: Path, cache_dir: str | Path | None = None) -> Path | None:
    """A copy of the voice at `path` that also outputs its phoneme durations, made once into the cache
    (never the installed package's file); None where it cannot be made (no onnx package, a model
    without the tensor), and the voice then speaks without timings."""
    try:
        import onnx
        from piper.patch_voice_with_alignment import add_alignment_output
    except ImportError as exc:
        log.warning("Piper's word timings need the onnx package (%s): words will be spread by length", exc)
        return None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    target = Path(cache_dir or default_cache_dir()) / "piper-aligned" / f"{path.stem}-{digest}.onnx"
    if target.is_file():
        return target
    try:
        model = onnx.load(str(path))
        add_alignment_output(model)
    except Exception as exc:  # a voice exported without the durations' tensor, or one not an ONNX model
        log.warning("the Piper voice %s cannot tell its timings (%s): words will be spread by length", path, exc)
        return None
    try:
        write_atomic(target, lambda tmp: onnx.save(model, tmp))
    except OSError as exc:  # a cache that cannot be written: the voice speaks on, without timings
        log.warning("the Piper voice patched to tell its timings cannot be kept in %s (%s)", target.parent, exc)
        return None
    log.info("patched the Piper voice %s to tell its timings: %s", path.name, target)
    return target


def phoneme_spans(alignments: Sequence[Any] | None, sample_rate: int) -> list[Span]:
    """The words of one of Piper's sentences as spans (seconds from the sentence's start), from its
    phoneme alignments (piper's PhonemeAlignment: a phoneme and its samples); none without them."""
    spans: list[Span] = []
    at, start, weight = 0, None, 0
    for alignment in alignments or ():
        phoneme, samples = alignment.phoneme, int(alignment.num_samples)
        if phoneme in _BETWEEN_WORDS or phoneme in _PUNCTUATION:
            if start is not None:
                spans.append(Span(start / sample_rate, at / sample_rate, weight))
                start, weight = None, 0
        else:
            start = at if start is None else start
            weight += phoneme not in _MARKS
        at += samples
    if start is not None:
        spans.append(Span(start / sample_rate, at / sample_rate, weight))
    return spans
