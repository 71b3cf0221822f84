"""Fish's control markers in a text to speak: found (S1's closed list, S2's bracket cues, phonemes, speakers)
and nothing else; left whole by the text's clean-up and by the chunker, however the text streams in; given
as written to a voice that renders them, removed for one that does not."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from fishvoice.audio import Audio
from fishvoice.markers import MARKER, without_markers
from fishvoice.pipeline import speak_text, voice_speaker
from fishvoice.text import SpeechChunker, normalize_for_speech
from fishvoice.voices import VoiceReference, as_speakers

DIALOGUE = (
    "[whispering to herself, with a smile] <|speaker:0|>(happy) Good morning, my friend! "
    "[speaking slowly, as if to a child, and with great care] Did you hear the news today? "
    "<|speaker:1|>(sighing) I did, and it was (in a hurry tone) not good at all. "
    "Say <|phoneme_start|>t ə m e t oʊ<|phoneme_end|> with me, [laugh] then we go (see the map)."
)


def test_the_markers_found_are_fishs_and_only_those():
    found = [m.group(0) for m in MARKER.finditer(DIALOGUE)]
    assert found == [
        "[whispering to herself, with a smile]",
        "<|speaker:0|>",
        "(happy)",
        "[speaking slowly, as if to a child, and with great care]",
        "<|speaker:1|>",
        "(sighing)",
        "(in a hurry tone)",
        "<|phoneme_start|>t ə m e t oʊ<|phoneme_end|>",
        "[laugh]",
    ]  # "(see the map)" is not one of S1's markers; a markdown link's text is not a cue
    assert not MARKER.search("Read [the guide](https://example.com) (twice) <b>now</b>.")


def test_without_markers_is_what_a_plain_voice_says():
    assert without_markers(DIALOGUE) == (
        "Good morning, my friend! Did you hear the news today? I did, and it was not good at all. "
        "Say with me, then we go (see the map)."
    )


def test_the_clean_up_leaves_markers_whole():
    text = "**Note** > <|speaker:1|>[whispering] see [the docs](http://x.y) <|phoneme_start|>a > b<|phoneme_end|>"
    assert (
        normalize_for_speech(text)
        == "Note <|speaker:1|>[whispering] see the docs <|phoneme_start|>a > b<|phoneme_end|>"
    )


@pytest.mark.parametrize("step", [1, 2, 3, 7, 50])
def test_the_chunker_never_cuts_inside_a_marker(step):
    chunker = SpeechChunker()
    chunks = []
    for start in range(0, len(DIALOGUE), step):
        chunks += chunker.feed(DIALOGUE[start : start + step])
    chunks += chunker.flush()
    assert len(chunks) >= 4
    assert " ".join(chunks).split() == DIALOGUE.split()  # nothing lost, nothing added
    found = [m.group(0) for chunk in chunks for m in MARKER.finditer(chunk)]
    assert found == [m.group(0) for m in MARKER.finditer(DIALOGUE)]  # each marker whole, in one chunk


class RecordingVoice:
    """A voice that records what it is asked to say."""

    name, sample_rate, can_clone, capacity = "recording", 16000, False, 1

    def __init__(self, renders_markers: bool) -> None:
        self.renders_markers = renders_markers
        self.said: list[str] = []

    def stream(
        self, text: str, voice: VoiceReference | None = None, stop: threading.Event | None = None
    ) -> Iterator[Audio]:
        self.said.append(text)
        yield Audio(np.zeros(1600, np.float32), self.sample_rate)


@pytest.mark.parametrize("renders", [True, False])
def test_a_voice_gets_the_markers_only_if_it_renders_them(renders):
    voice = RecordingVoice(renders)
    speak = voice_speaker(voice, None, 16000, stall_s=10)

    async def say(text: str) -> int:
        return len([piece async for piece in speak(text)])

    assert asyncio.run(say("(happy) [laugh] Hello there!")) == 1
    assert asyncio.run(say("<|speaker:1|>[pause]")) == (1 if renders else 0)  # markers alone: nothing to say
    expected = ["(happy) [laugh] Hello there!", "<|speaker:1|>[pause]"] if renders else ["Hello there!"]
    assert voice.said == expected


def test_a_dialogues_speaker_is_carried_into_the_chunks_cut_from_its_turn():
    voice = RecordingVoice(renders_markers=True)
    speak = voice_speaker(voice, None, 16000, stall_s=10, numbers_in_words=False)
    dialogue = (
        "<|speaker:0|>Good morning, my friend! How have you been keeping all this long and busy week? "
        "<|speaker:1|>Very well, thank you. The garden is finally blooming, and the bees are back."
    )

    async def say_all() -> None:
        async for _ in speak_text(dialogue, speak):
            pass

    asyncio.run(say_all())
    assert len(voice.said) >= 3
    assert all(said.startswith("<|speaker:") for said in voice.said), voice.said
    assert [said[:13] for said in voice.said] == sorted(said[:13] for said in voice.said)  # 0s, then 1s
    assert " ".join(s.replace("<|speaker:0|>", "").replace("<|speaker:1|>", "") for s in voice.said).split() == (
        dialogue.replace("<|speaker:0|>", "").replace("<|speaker:1|>", "").split()
    )


def test_speakers_voices_become_one_tagged_prompt():
    first = VoiceReference("a", Audio(np.ones(16000, np.float32) * 0.1, 16000), "Hello there.")
    second = VoiceReference("b", Audio(np.ones(8000, np.float32) * 0.2, 16000), None)
    assert as_speakers([first]) is first
    both = as_speakers([first, second])
    assert both.reference_text == "<|speaker:0|>Hello there.\n<|speaker:1|>"
    assert both.audio.samples.size == 24000 and both.hash not in ("a", "b")
    assert as_speakers([second, first]).hash != both.hash
