"""Numbers as a voice should say them: dates, times, money, percentages, ordinals, years, measures, ranges
and plain numbers in words; codes, versions and words with digits left alone; markers untouched; and the
voice given them in words unless a request asks for the text as written."""

from __future__ import annotations

import asyncio

import pytest

from fishvoice.numbers import spell_out_numbers
from fishvoice.pipeline import voice_speaker
from tests.test_markers import RecordingVoice


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ("It costs $4.50.", "It costs four dollars and fifty cents."),
        ("£3 or €1.01 or $0.99", "three pounds or one euro and one cent or ninety-nine cents"),
        ("They raised $3 million.", "They raised three million dollars."),
        ("About 20% more", "About twenty percent more"),
        ("Meet at 3:30 pm, or 7:05, or 12:00.", "Meet at three thirty p m, or seven oh five, or twelve o'clock."),
        ("Born on 2024-01-05.", "Born on January fifth, twenty twenty-four."),
        ("She came 1st, he came 22nd.", "She came first, he came twenty-second."),
        ("It happened in 1990, in the 1990s.", "It happened in nineteen ninety, in the nineteen nineties."),
        (
            "Run 5 km at 12 mph; it is -3 °C; a 1 kg bag.",
            "Run five kilometers at twelve miles per hour; it is minus three degrees Celsius; a one kilogram bag.",
        ),
        ("Read pages 3-5.", "Read pages three to five."),
        ("We sold 10,000 units and 3.14 pies.", "We sold ten thousand units and three point one four pies."),
        ("I have 2 cats and -4 points.", "I have two cats and minus four points."),
        ("MP3, COVID-19, H2O, version 2.0.1, call 555-1234.", "MP3, COVID-19, H2O, version 2.0.1, call 555-1234."),
        ("(happy) 42 [laugh 3 times] <|speaker:1|>", "(happy) forty-two [laugh 3 times] <|speaker:1|>"),
    ],
)
def test_numbers_are_said_in_words(written, said):
    assert spell_out_numbers(written) == said


@pytest.mark.parametrize("in_words", [True, False])
def test_the_voice_gets_numbers_in_words_unless_asked_not_to(in_words):
    voice = RecordingVoice(renders_markers=False)
    speak = voice_speaker(voice, None, 16000, stall_s=10, numbers_in_words=in_words)

    async def say(text: str) -> None:
        async for _ in speak(text):
            pass

    asyncio.run(say("It is 3:30 and costs $5."))
    assert voice.said == ["It is three thirty and costs five dollars." if in_words else "It is 3:30 and costs $5."]
