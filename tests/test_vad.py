"""Voice activity in a stream (vad.py): Silero's probabilities fed in pieces equal the whole recording's,
speech is found in real speech and not in silence or noise, and turns start and stop as server_vad says."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import soxr
from faster_whisper.vad import get_vad_model

from fishvoice.audio import G711_RATE, resample, to_g711
from fishvoice.server.realtime.input_audio import InputDecoder
from fishvoice.server.realtime.protocol import REALTIME_RATE
from fishvoice.tts.base import synthesize
from fishvoice.vad import (
    EAGERNESS_MS,
    LEAD_IN_WINDOWS,
    PAUSE_MS,
    VAD_RATE,
    WINDOW,
    WINDOW_MS,
    SpeechPaused,
    SpeechStarted,
    SpeechStopped,
    StreamingVAD,
    TurnDetector,
    TurnOptions,
    reads_finished,
)
from tests.realtime_client import QUESTION

pytestmark = pytest.mark.model  # loads models (or starts a server that does)


@pytest.fixture(scope="module")
def spoken(tts) -> np.ndarray:
    """Half a second of silence, a sentence, a second of silence, at 16 kHz."""
    speech = resample(synthesize(tts, "Turn left at the next corner, please."), VAD_RATE).samples
    quiet = np.zeros(VAD_RATE // 2, np.float32)
    return np.concatenate([quiet, speech, quiet, quiet])


def test_streamed_probabilities_equal_the_whole_recordings(spoken):
    # Under a second of quiet after the speech: after that the stream's state starts again (see StreamingVAD).
    spoken = spoken[: -VAD_RATE // 2]
    whole = spoken[: spoken.size // WINDOW * WINDOW]
    lead_in = np.zeros(LEAD_IN_WINDOWS * WINDOW, np.float32)  # a stream starts as after this silence
    expected = get_vad_model()(np.concatenate([lead_in, whole])).reshape(-1)[LEAD_IN_WINDOWS:]
    vad = StreamingVAD()
    pieces = [vad.feed(whole[start : start + 700]) for start in range(0, whole.size, 700)]  # not window-aligned
    streamed = np.concatenate(pieces)
    assert streamed.shape == expected.shape
    np.testing.assert_allclose(streamed, expected, atol=1e-5)


def test_a_sentence_is_one_turn_and_silence_or_noise_none(spoken):
    turns = TurnDetector(TurnOptions(threshold=0.5, prefix_ms=300, silence_ms=500))
    events = [e for e in turns.feed(StreamingVAD().feed(spoken)) if not isinstance(e, SpeechPaused)]
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    start, stop = events[0].at_ms, events[1].at_ms
    speech_ms = (spoken.size - 1.5 * VAD_RATE) * 1000 / VAD_RATE
    assert 400 <= start <= 900  # Piper's own lead-in is silence too
    assert abs((stop - start) - speech_ms) < 500
    noise = np.random.default_rng(0).normal(0, 0.05, 3 * VAD_RATE).astype(np.float32)
    for quiet in (np.zeros(3 * VAD_RATE, np.float32), noise):
        assert TurnDetector(TurnOptions()).feed(StreamingVAD().feed(quiet)) == []


@pytest.mark.parametrize("law", ["pcmu", "pcma"])
def test_a_caller_on_hold_for_a_minute_is_heard_when_they_speak(tts, law):
    """A phone line's silence for a minute, then the question, in 20 ms pieces as a session gets them: one turn,
    the whole question. A-law's silence is one step above zero: run over it, the model's state drifted until
    3 of the question's 54 windows were over the threshold."""
    speech = resample(synthesize(tts, QUESTION), G711_RATE).samples
    hold = np.zeros(60 * G711_RATE, np.float32)
    stream = to_g711(np.concatenate([hold, speech, np.zeros(G711_RATE, np.float32)]), law)
    events = _turns_of_phone_stream(stream, law, G711_RATE // 50)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped], events
    start, stop = (event.at_ms - 60_000 for event in events)
    assert -100 <= start <= 300 and stop - start >= 1000, events


def test_a_long_piece_of_hum_then_speech_is_heard_as_after_silence(tts):
    """A minute of 50 Hz hum appended at once, then the question: its windows over the threshold as many as
    after half a second of it (the state starts again inside a long piece too)."""
    speech = resample(synthesize(tts, QUESTION), VAD_RATE).samples
    seconds = np.arange(60 * VAD_RATE, dtype=np.float32) / VAD_RATE
    hum = (1e-3 * np.sin(2 * np.pi * 50 * seconds)).astype(np.float32)
    heard = {}
    for length in (VAD_RATE // 2, hum.size):
        vad = StreamingVAD()
        vad.feed(hum[:length])
        heard[length] = int((vad.feed(speech) > 0.5).sum())
    assert heard[hum.size] >= heard[VAD_RATE // 2] - 2, heard


@pytest.mark.parametrize("law", ["pcmu", "pcma"])
def test_a_caller_speaking_from_the_first_sample_is_one_turn(tts, law):
    """Phone audio whose speech starts at the stream's first sample, decoded and resampled as a session does,
    appended in 20 ms pieces, 100 ms pieces or whole: one turn, the whole question. From Silero's zero state, 1
    rendition in 20 was cut after its first word (the renditions differ: Piper's timing is random)."""
    for _ in range(10):
        speech = resample(synthesize(tts, QUESTION), G711_RATE).samples
        stream = to_g711(np.concatenate([speech, np.zeros(G711_RATE, np.float32)]), law)
        for piece in (G711_RATE // 50, G711_RATE // 10, len(stream)):
            events = _turns_of_phone_stream(stream, law, piece)
            assert [type(e) for e in events] == [SpeechStarted, SpeechStopped], events
            assert events[0].at_ms <= 200 and events[1].at_ms >= 1000, events  # it was cut at 64-256 ms


def _turns_of_phone_stream(stream: bytes, law: str, piece: int) -> list[SpeechStarted | SpeechStopped]:
    decoder, to_vad = InputDecoder(law), soxr.ResampleStream(REALTIME_RATE, VAD_RATE, 1, dtype="float32")
    vad, turns = StreamingVAD(), TurnDetector(TurnOptions(silence_ms=500))
    events = []
    for start in range(0, len(stream), piece):
        samples = decoder.decode(base64.b64encode(stream[start : start + piece]).decode(), "audio")
        events += turns.feed(vad.feed(to_vad.resample_chunk(samples)))
    return [e for e in events if not isinstance(e, SpeechPaused)]


def test_turn_rules_on_given_probabilities():
    """Speech at the threshold starts a turn; a dip above threshold - 0.15 is not quiet; quiet for pause_ms
    is a pause (its start the speech's end), for silence_ms the stop; speech after a pause goes on."""
    options = TurnOptions(threshold=0.6, prefix_ms=0, silence_ms=10 * WINDOW_MS)
    assert options.pause_ms == PAUSE_MS == 3 * WINDOW_MS and TurnOptions(silence_ms=64).pause_ms == 64
    quiet = [0.1] * 10
    probabilities = np.array([0.1, 0.6, 0.9, 0.5, 0.5, 0.3, 0.8, *quiet[:4], 0.7, *quiet], np.float32)
    turns = TurnDetector(options)
    events = turns.feed(probabilities)
    # Speech ends after window 2; windows 3-4 are neither speech nor quiet, 5 is quiet: 96 ms since the
    # speech, a pause (at 3 windows), though speech comes again at 6. After 6, quiet: a pause at 7 windows;
    # speech again at 11, then quiet: a pause and, 320 ms on, the stop at 12.
    assert events == [
        SpeechStarted(1 * WINDOW_MS),
        SpeechPaused(3 * WINDOW_MS),
        SpeechPaused(7 * WINDOW_MS),
        SpeechPaused(12 * WINDOW_MS),
        SpeechStopped(12 * WINDOW_MS),
    ]
    assert not turns.speaking
    # Fed one window at a time, the same.
    one_by_one = TurnDetector(options)
    assert [e for p in probabilities for e in one_by_one.feed(np.array([p], np.float32))] == events


@pytest.mark.parametrize(
    ("transcript", "finished"),
    [
        ("What is the capital of France?", True),
        ("Where are you from?", True),  # a preposition may end a question
        ("Could you remind me to call my sister and?", False),  # a conjunction may not
        ("Tell me a joke.", True),
        ("That's great!", True),
        ("I would like to order a pizza with", False),
        ("I would like to order a pizza and...", False),
        ("I'd like to.", False),  # Whisper's full stop on a sentence that asks for more
        ("So the thing is, um.", False),
        ("Okay, so", False),
        ("", False),
    ],
)
def test_what_reads_as_a_finished_utterance(transcript, finished):
    assert reads_finished(transcript) is finished


def silence_until_stop(options: TurnOptions, finished: bool | None, heard_at_ms: int = 200) -> int:
    """ms of silence after a second of speech until the turn stops, the transcript heard `heard_at_ms` into it."""
    turns = TurnDetector(options)
    turns.feed(np.full(1000 // WINDOW_MS, 0.9, np.float32))
    for window in range(8000 // WINDOW_MS):
        if finished is not None and window * WINDOW_MS >= heard_at_ms:
            turns.heard(finished)
        if any(isinstance(e, SpeechStopped) for e in turns.feed(np.array([0.1], np.float32))):
            return (window + 1) * WINDOW_MS
    return -1


def test_semantic_vad_waits_as_long_as_what_was_heard_asks():
    """semantic_vad: until the pause's transcript is known the long silence holds; a finished one ends the turn
    after the short one (at once if that much silence has passed), one that trails off after the long one;
    speech again starts the wait over."""
    for eagerness, (short, long) in EAGERNESS_MS.items():
        options = TurnOptions(eagerness=eagerness)
        assert long - WINDOW_MS < silence_until_stop(options, None) <= long + WINDOW_MS
        assert long - WINDOW_MS < silence_until_stop(options, False) <= long + WINDOW_MS
        assert max(short, 200) <= silence_until_stop(options, True) <= max(short, 200) + 2 * WINDOW_MS, eagerness
    assert TurnOptions().silence_after(True) == TurnOptions().silence_after(None) == 500  # server_vad: as set
