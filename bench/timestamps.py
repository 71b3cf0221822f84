"""Word timings: how close they are to where the words are heard, and what they cost.

Ground truth is constructed (tests/word_truth.py): words spoken as one-word sentences by Piper (its own
timings are read against its very audio), and words spoken one at a time by Piper at another pace and
prosody, joined with gaps (the speech of a voice that tells no timings, for the reference aligner). Prints,
for each method, the median and p95 of |found - true| over every word's start and end, in ms, beside
Whisper's attention-based word times with the known text (faster-whisper's alignment), the method not
chosen; then the cost: a text spoken with and without timings (first audio and the whole, and their ratio),
and the reference aligner's time against the voice's time on the same speech.

    python bench/timestamps.py [--cases 10] [--words 12]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/word_truth.py

from fishvoice.align.reference import ReferenceAligner
from fishvoice.align.words import assign, caller_words
from fishvoice.audio import resample
from fishvoice.pipeline import Words, speak_text, voice_speaker
from fishvoice.tts.piper import PiperTTS
from tests.word_truth import WORDS, Truth, boundary_errors_ms, joined_words, piece_bounds, separate_sentences

STORY = (
    "The lighthouse keeper climbed the stairs at dusk, as she had for thirty years. Below, the sea was calm; "
    "above, the first stars came out one by one. She lit the lamp, wrote two lines in the log, and sat down "
    "to watch the ships pass on their way to the harbour."
)


async def timed_speech(piper: PiperTTS, text: str, word_timings: bool) -> tuple[float, float, list, list]:
    """First audio and whole time of `text` spoken through the pipeline, its pieces and its words."""
    speak = voice_speaker(piper, None, piper.sample_rate, 60, word_timings=word_timings)
    started, first, pieces, words = time.perf_counter(), None, [], []
    async for piece in speak_text(text, speak):
        if isinstance(piece, Words):
            words += piece.words
        else:
            first = first or time.perf_counter() - started
            pieces.append(piece.audio)
    return first or 0.0, time.perf_counter() - started, pieces, words


def whisper_word_times(truth: Truth) -> list[tuple[float, float]]:
    """Whisper base's word times for the known text (cross-attention alignment), for comparison."""
    import ctranslate2
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer

    from fishvoice.asr.whisper import WhisperASR

    whisper = WhisperASR().model.resource
    samples = resample(truth.audio, 16000).samples
    features = whisper.feature_extractor(samples)
    padded = np.ascontiguousarray(pad_or_trim(features, 3000)[None], np.float32)
    encoded = whisper.model.encode(ctranslate2.StorageView.from_array(padded))
    tokenizer = Tokenizer(whisper.hf_tokenizer, whisper.model.is_multilingual, task="transcribe", language="en")
    found = whisper.find_alignment(tokenizer, [tokenizer.encode(" " + truth.text)], encoded, features.shape[-1])[0]
    return [(float(word["start"]), float(word["end"])) for word in found]


def report(name: str, errors: list[np.ndarray]) -> None:
    every = np.concatenate(errors)
    print(
        f"{name:46s} median {np.median(every):6.1f} ms   p95 {np.percentile(every, 95):6.1f} ms   ({every.size} bounds)"
    )


def accuracy(piper: PiperTTS, cases: int, words: int) -> None:
    rng = np.random.default_rng(0)
    orders = [list(WORDS)] + [list(rng.permutation(WORDS)[:words]) for _ in range(cases - 1)]
    own, reference, whisper = [], [], []
    aligner = ReferenceAligner(piper)
    for order in orders:
        _, _, pieces, timed = asyncio.run(timed_speech(piper, separate_sentences(order), True))
        own.append(boundary_errors_ms([(w.start, w.end) for w in timed], piece_bounds(pieces)))
        truth = joined_words(piper._voice, order)
        found = assign(caller_words(truth.text), aligner.spans(truth.audio, truth.text))
        reference.append(boundary_errors_ms([(w.start, w.end) for w in found], truth.bounds))
        whisper.append(boundary_errors_ms(whisper_word_times(truth), truth.bounds))
    print(f"accuracy over {cases} texts of {words} words (bounds: median <= 40 ms, p95 <= 100 ms)")
    report("Piper's own durations (one-word sentences)", own)
    report("reference aligner (joined words, other pace)", reference)
    report("Whisper's word times, known text (not used)", whisper)


def cost(piper: PiperTTS, rounds: int) -> None:
    runs = {flag: [asyncio.run(timed_speech(piper, STORY, flag))[:2] for _ in range(rounds)] for flag in (False, True)}
    first = {flag: float(np.median([r[0] for r in runs[flag]])) for flag in runs}
    whole = {flag: float(np.median([r[1] for r in runs[flag]])) for flag in runs}
    print(
        f"\ncost on Piper (own durations), median of {rounds}: first audio {first[False] * 1000:.0f} -> "
        f"{first[True] * 1000:.0f} ms ({first[True] / first[False]:.2f}x), whole {whole[False] * 1000:.0f} -> "
        f"{whole[True] * 1000:.0f} ms ({whole[True] / whole[False]:.2f}x)"
    )
    aligner = ReferenceAligner(piper)
    speaking, aligning, lengths = [], [], []
    for sentence in STORY.split(". "):
        started = time.perf_counter()
        audio = resample(piper_audio(piper, sentence), 24000)
        speaking.append(time.perf_counter() - started)
        lengths.append(audio.duration_s)
        started = time.perf_counter()
        aligner.spans(audio, sentence)
        aligning.append(time.perf_counter() - started)
    said, heard = sum(speaking), sum(lengths)
    print(
        f"reference aligner: {sum(aligning) * 1000:.0f} ms for {heard:.1f} s of speech (real-time factor "
        f"{sum(aligning) / heard:.3f}); Piper made it in {said * 1000:.0f} ms ({sum(aligning) / said:.2f}x Piper's "
        "time; S1-mini's real-time factor on this CPU is about 11, bench/fish.py --device cpu)"
    )


def piper_audio(piper: PiperTTS, text: str):
    from fishvoice.tts.base import synthesize

    return synthesize(piper, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--words", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    piper = PiperTTS()
    ReferenceAligner(piper).spans(resample(piper_audio(piper, "Warm up."), 24000), "Warm up.")  # librosa's JIT
    accuracy(piper, args.cases, args.words)
    cost(piper, args.rounds)


if __name__ == "__main__":
    main()
