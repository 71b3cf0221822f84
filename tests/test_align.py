"""Word timings measured against speech whose word boundaries are known (tests/word_truth.py): Piper's own
durations and the reference aligner for voices that tell none, within the bounds the README states
(median boundary error <= 40 ms, p95 <= 100 ms), and the caller's words kept through normalisation."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from fishvoice.align.reference import ReferenceAligner
from fishvoice.align.words import Span, TextWord, assign, caller_words
from fishvoice.audio import Audio
from fishvoice.contract import WordTiming
from fishvoice.pipeline import Spoken, Words, speak_text, voice_speaker
from fishvoice.tts.piper import PiperTTS
from fishvoice.voices import VoiceReference
from tests.word_truth import WORDS, boundary_errors_ms, joined_words, piece_bounds, separate_sentences

MEDIAN_MS, P95_MS = 40, 100


def within_bounds(errors: np.ndarray) -> bool:
    return bool(np.median(errors) <= MEDIAN_MS and np.percentile(errors, 95) <= P95_MS)


def well_formed(words: list[WordTiming], duration: float) -> None:
    """Starts before ends, no overlaps, in order, inside the audio."""
    for before, after in itertools.pairwise(words):
        assert before.end <= after.start, (before, after)
    for word in words:
        assert 0 <= word.start <= word.end <= duration + 1e-3, (word, duration)


async def spoken(tts, text: str, speed: float = 1.0) -> tuple[list[Audio], list[WordTiming]]:
    speak = voice_speaker(tts, None, tts.sample_rate, 60, speed, word_timings=True)
    pieces, words = [], []
    async for piece in speak_text(text, speak):
        if isinstance(piece, Words):
            words += piece.words
        else:
            assert isinstance(piece, Spoken)
            pieces.append(piece.audio)
    return pieces, words


@pytest.fixture(scope="module")
def piper():
    return PiperTTS()


@pytest.mark.model
def test_pipers_own_timings_match_where_its_words_are_heard(piper):
    pieces, words = asyncio.run(spoken(piper, separate_sentences()))
    assert [word.word for word in words] == [f"{word.capitalize()}." for word in WORDS]
    truth = piece_bounds(pieces)
    errors = boundary_errors_ms([(w.start, w.end) for w in words], truth)
    assert within_bounds(errors), (np.median(errors), np.percentile(errors, 95))
    # The bounds catch a real error: the same words 100 ms late are refused.
    assert not within_bounds(boundary_errors_ms([(w.start + 0.1, w.end + 0.1) for w in words], truth))
    well_formed(words, sum(piece.duration_s for piece in pieces))


class Untimed:
    """Piper speaking at another pace, not telling its durations: a voice like the Fish engine to the
    pipeline, whose words the reference aligner must find in its audio."""

    name, can_clone, renders_markers, capacity = "untimed", False, False, 1

    def __init__(self, piper: PiperTTS):
        self.sample_rate = piper.sample_rate
        self._piper = piper
        self.bounds: list[tuple[float, float]] = []  # where each word said so far is, in the whole speech
        self._said = 0.0

    def stream(
        self, text: str, voice: VoiceReference | None = None, stop: threading.Event | None = None
    ) -> Iterator[Audio]:
        truth = joined_words(self._piper._voice, [word.strip(".,") for word in text.split()])
        self.bounds += [(start + self._said, end + self._said) for start, end in truth.bounds]
        self._said += truth.audio.duration_s
        yield truth.audio


@pytest.mark.model
def test_a_voice_without_timings_is_aligned_to_pipers_rendition(piper):
    voice = Untimed(piper)
    pieces, words = asyncio.run(spoken(voice, " ".join(WORDS) + "."))
    assert [word.word for word in words] == [*WORDS[:-1], WORDS[-1] + "."]
    errors = boundary_errors_ms([(w.start, w.end) for w in words], voice.bounds)
    assert within_bounds(errors), (np.median(errors), np.percentile(errors, 95))
    assert not within_bounds(boundary_errors_ms([(w.start - 0.1, w.end - 0.1) for w in words], voice.bounds))
    well_formed(words, sum(piece.duration_s for piece in pieces))


@pytest.mark.model
def test_the_reference_aligner_on_random_orders_of_words(piper):
    rng = np.random.default_rng(7)
    aligner = ReferenceAligner(piper)
    errors = []
    for _ in range(3):
        truth = joined_words(piper._voice, list(rng.permutation(WORDS)[:12]))
        timed = assign(caller_words(truth.text), aligner.spans(truth.audio, truth.text))
        errors.append(boundary_errors_ms([(w.start, w.end) for w in timed], truth.bounds))
    assert within_bounds(np.concatenate(errors))


@pytest.mark.model
def test_speed_two_halves_the_times(piper):
    text = "Morning. Light. Spilled. Across."
    slow_pieces, slow = asyncio.run(spoken(piper, text, 1.0))
    fast_pieces, fast = asyncio.run(spoken(piper, text, 2.0))
    assert [w.word for w in fast] == [w.word for w in slow]
    # The voice draws its durations anew each time: compare each run against its own audio's length.
    slow_s, fast_s = (sum(p.duration_s for p in pieces) for pieces in (slow_pieces, fast_pieces))
    assert fast_s == pytest.approx(slow_s / 2, rel=0.15)
    assert fast[-1].end == pytest.approx(slow[-1].end * fast_s / slow_s / 1, rel=0.1, abs=0.03)
    well_formed(fast, fast_s)


@pytest.mark.model
def test_numbers_tags_and_punctuation_keep_the_callers_words(piper):
    text = "(happy) It costs $4.50, said Dr. Smith [laugh] on 3/4/2024 at https://example.com — really!"
    pieces, words = asyncio.run(spoken(piper, text))
    expected = [
        "It",
        "costs",
        "$4.50,",
        "said",
        "Dr.",
        "Smith",
        "on",
        "3/4/2024",
        "at",
        "https://example.com",
        "really!",
    ]
    assert [word.word for word in words] == expected
    well_formed(words, sum(piece.duration_s for piece in pieces))
    spoken_words = [w for w in words if w.word != "https://example.com"]
    assert all(w.end - w.start > 0.05 for w in spoken_words), spoken_words
    money = next(w for w in words if w.word == "$4.50,")
    assert money.end - money.start > 3 * (words[0].end - words[0].start)  # "four dollars, fifty cents"


def test_caller_words_leave_markers_and_bare_marks_out():
    words = caller_words("<|speaker:0|>Hi -- there (whispering) [pause] you... 25 km!")
    assert [w.text for w in words] == ["Hi", "there", "you...", "25", "km!"]
    assert words[3].weight == len("twentyfive")


def test_words_grouped_with_spans_by_their_shares():
    words = [TextWord("It", 2), TextWord("costs", 5), TextWord("$4.50", 20), TextWord("today.", 5)]
    spans = [Span(0.0, 0.1, 2), Span(0.2, 0.5, 4), Span(0.6, 0.9, 4), Span(1.0, 1.3, 7), Span(1.4, 1.6, 3)]
    spans += [Span(1.7, 1.9, 5), Span(2.0, 2.3, 4)]
    timed = assign(words, spans)
    assert [(w.word, w.start, w.end) for w in timed][2] == ("$4.50", 0.6, 1.9)
    assert timed[3].start == 2.0 and timed[3].end == 2.3
    assert assign(words, [], offset=1.0) == [WordTiming(w.text, 1.0, 1.0) for w in words]  # nothing located


@pytest.mark.model
def test_a_cache_that_cannot_be_written_leaves_piper_speaking_without_timings(tmp_path):
    from fishvoice.align.piper import patched_model
    from fishvoice.tts.piper import default_voice_path

    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder would be")
    assert patched_model(default_voice_path(), blocked) is None
    voice = PiperTTS(cache_dir=blocked)
    pieces, words = asyncio.run(spoken(voice, "Hello there."))
    assert pieces and [w.word for w in words] == ["Hello", "there."]  # spread over the speech by length
    well_formed(words, sum(piece.duration_s for piece in pieces))
