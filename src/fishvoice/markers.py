"""Control markers inside a text to speak, as Fish's models read them: S1's closed list of markers in
parentheses (`(happy)`, `(whispering)`, `(laughing)`: only those, not every parenthesis), S2's free cues in
brackets (`[whispering]`, `[laugh]`, `[pause]`: any short bracketed phrase but a markdown link's text),
phoneme spans (`<|phoneme_start|>...<|phoneme_end|>`) and dialogue speakers (`<|speaker:0|>`).

A voice that renders them (the Fish engine) is given them as written; any other has them removed before it
speaks, so none is ever read aloud. The text a reply keeps is what was written, markers and all; the speech
chunker never cuts inside one (it looks for its cuts in the text `masked`).
"""

from __future__ import annotations

import re

# S1's markers: emotions, tones and sounds (fish-speech's model card and Fish Audio's emotion reference).
S1_MARKERS = frozenset(
    {
        *[
            "angry",
            "sad",
            "disdainful",
            "excited",
            "surprised",
            "satisfied",
            "unhappy",
            "anxious",
            "hysterical",
            "delighted",
            "scared",
            "worried",
        ],
        *[
            "indifferent",
            "upset",
            "impatient",
            "nervous",
            "guilty",
            "scornful",
            "frustrated",
            "depressed",
            "panicked",
            "furious",
            "empathetic",
        ],
        *[
            "embarrassed",
            "reluctant",
            "disgusted",
            "keen",
            "moved",
            "proud",
            "relaxed",
            "grateful",
            "confident",
            "interested",
            "curious",
        ],
        *[
            "confused",
            "joyful",
            "disapproving",
            "negative",
            "denying",
            "astonished",
            "serious",
            "sarcastic",
            "conciliative",
            "comforting",
        ],
        *["sincere", "sneering", "hesitating", "yielding", "painful", "awkward", "amused", "happy", "calm"],
        "in a hurry tone",
        "shouting",
        "screaming",
        "whispering",
        "soft tone",
        "laughing",
        "chuckling",
        "sobbing",
        "crying loudly",
        "sighing",
        "panting",
        "groaning",
        "crowd laughing",
        "background laughter",
        "audience laughing",
        "break",
        "long-break",
    }
)
_S1 = r"\((?:" + "|".join(re.escape(m) for m in sorted(S1_MARKERS, key=len, reverse=True)) + r")\)"
_S2 = r"\[[^\[\]\n]{1,80}\](?!\()"  # a bracketed cue, but not a markdown link's [text](url)
_PHONEMES = r"<\|phoneme_start\|>.*?<\|phoneme_end\|>"
_SPEAKER = r"<\|speaker:\d{1,3}\|>"
MARKER = re.compile("|".join((_PHONEMES, _SPEAKER, _S1, _S2)), re.IGNORECASE | re.DOTALL)
# An opening whose marker has not been closed yet (a streamed text, cut while a marker is being written).
_UNCLOSED = re.compile(r"<\|phoneme_start\|>(?!.*<\|phoneme_end\|>)|<\|(?!.*\|>)|\[(?![^\]]*\])", re.DOTALL)
_LONGEST = 120  # a marker is shorter: an opening further back is not one
_SPACES = re.compile(r"[ \t]{2,}")


def without_markers(text: str) -> str:
    """`text` as a voice that renders no markers should say it."""
    return _SPACES.sub(" ", MARKER.sub(" ", text)).strip()


def masked(text: str) -> str:
    """`text` with each marker (and one still being written, at the end) blanked to `_`s: where a chunker
    looks for a place to cut, so that it never cuts inside one. The same length as `text`."""
    blanked = MARKER.sub(lambda match: "_" * len(match.group(0)), text)
    unclosed = _UNCLOSED.search(blanked, max(0, len(blanked) - _LONGEST))
    return blanked if unclosed is None else blanked[: unclosed.start()] + "_" * (len(blanked) - unclosed.start())


def split_markers(text: str) -> list[tuple[str, bool]]:
    """`text` in runs, each with whether it is a marker: what lies between markers may be rewritten."""
    runs: list[tuple[str, bool]] = []
    at = 0
    for match in MARKER.finditer(text):
        if match.start() > at:
            runs.append((text[at : match.start()], False))
        runs.append((match.group(0), True))
        at = match.end()
    if at < len(text):
        runs.append((text[at:], False))
    return runs


_SPEAKER_TAG = re.compile(_SPEAKER)


def carry_speaker(text: str, speaker: str | None) -> tuple[str, str | None]:
    """A dialogue's chunk with the speaker it continues (`speaker`, the last tag before it) put in front
    where it names none first, and the speaker the next chunk continues."""
    if speaker is not None and not text.lstrip().startswith("<|speaker:"):
        text = speaker + text
    tags = _SPEAKER_TAG.findall(text)
    return text, tags[-1] if tags else speaker
