"""Text for speech: split a streamed reply into speakable chunks, and clean text before TTS.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import re

from .markers import masked, split_markers

# A sentence ends at . ! ? (or …) followed by space, unless the word before the stop is a common
# abbreviation or a single letter (initials); "3.5" never splits since no space follows the dot.
_SENTENCE_END = re.compile(r"([.!?…]+[\"')\]]*)(\s+)")
_CLAUSE_END = re.compile(r"([,;:\u2014\u2013])(\s+)")  # \u2014 em dash, \u2013 en dash
_ABBREVIATIONS = {
    "mr",
    "mrs",
    "ms",
    "dr",
    "prof",
    "sr",
    "jr",
    "st",
    "vs",
    "etc",
    "e.g",
    "i.e",
    "approx",
    "no",
    "mt",
    "fig",
}
# A word followed by space: complete, whatever the LLM writes next.
_WORD = re.compile(r"\S+(?=\s)")


def _words(*groups: str) -> frozenset[str]:
    return frozenset(" ".join(groups).split())


# Words that lead into the next one: pausing right after them breaks a phrase ("the | sky", "was | dark").
_LEADS_ON = _words(
    "a an the this that these those my your his her its our their some any every each no",  # determiners
    "of in on at to for with from by into onto over under about through across after before between like near",
    "as and or but nor so because if than when while where which who whom whose what how",  # conjunctions
    "is are was were be been being am has have had do does did will would can could shall should may might must",
    "along around toward towards without within beyond behind beneath above below during against among upon",
    "not very i we you he she it they there here just more most named called",
    "i'm you're we're they're he's she's it's that's there's i've you've we've they've i'll you'll we'll they'll",
    "i'd you'd he'd she'd we'd they'd isn't aren't wasn't weren't don't doesn't didn't won't can't couldn't",
    "wouldn't shouldn't haven't hasn't hadn't let's",
)
# Words that open a phrase: a pause just before them is natural ("the sky was dark | with clouds"). Not
# "of", which holds its noun to the one before ("the depths of the sea").
_OPENS = _words(
    "in on at to for with from by into onto over under about through across after before between near as",
    "along around toward towards without within beyond behind beneath above below during against among upon",
    "and or but nor so because if than when while where which who whom whose until since though although",
)
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_MARKS = re.compile(r"\*\*|__|[*`#>]|^\s*[-+]\s+", re.MULTILINE)
_URL = re.compile(r"https?://\S+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SPACES = re.compile(r"\s+")


class SpeechChunker:
    """Turns a stream of text deltas into chunks ready to speak.

    The first chunk leaves as soon as it is speakable, since the listener waits for it: at the first
    sentence end; at the first clause end (, ; : or a dash) of `first_min_words` words or more; or, from
    `first_words` words on, at a natural pause between two words: before a word that opens a phrase
    ("with", "and", "when"), or anywhere once `first_max_words` words have come, but never after a word
    that leads into the next ("the", "was", "of"), nor inside a number, after an abbreviation or initials.

    Every later chunk is a whole sentence (one shorter than `min_chars` goes with the next); a clause once
    the buffer is long enough to be worth speaking on its own; or, failing any boundary, the words before
    `max_chars`. The second alone may end sooner, since it must be spoken before the first one's speech
    has run out or the voice pauses: at a clause end or before a word that opens a phrase, once it is
    `second_ratio` times as long as the first chunk (up to `clause_chars`).
    """

    def __init__(
        self,
        min_chars: int = 12,
        clause_chars: int = 80,
        max_chars: int = 240,
        first_min_words: int = 2,
        first_words: int = 4,
        first_max_words: int = 8,
        second_ratio: float = 2.0,
    ):
        self.min_chars = min_chars
        self.clause_chars = clause_chars
        self.max_chars = max_chars
        self.first_min_words = first_min_words
        self.first_words = first_words
        self.first_max_words = first_max_words
        self.second_ratio = second_ratio
        self._buffer = ""
        self._view = ""
        self._emitted = 0
        self._first_chars = 0

    def feed(self, delta: str) -> list[str]:
        """Add text; return the chunks that became complete."""
        self._buffer += delta
        chunks = []
        while (chunk := self._next_chunk()) is not None:
            chunks.append(chunk)
        return chunks

    def flush(self) -> list[str]:
        """Return whatever is left once the text has ended."""
        rest, self._buffer = self._buffer.strip(), ""
        return [rest] if rest else []

    def _next_chunk(self) -> str | None:
        self._view = masked(self._buffer)  # where cuts are looked for: the buffer, its markers blanked
        clause_min = self.min_chars
        if self._emitted == 0:
            cut = self._early_cut(0, 0)
        elif self._emitted == 1:
            clause_min = max(self.min_chars, min(self.clause_chars, round(self.second_ratio * self._first_chars)))
            cut = self._early_cut(clause_min, clause_min)
        else:
            cut = self._sentence_cut()
        if cut is None and self._emitted > 0 and len(self._buffer) >= self.clause_chars:
            cut = self._last_match(_CLAUSE_END, clause_min)
        if cut is None and len(self._buffer) > self.max_chars:
            cut = self._view.rfind(" ", 0, self.max_chars) + 1 or self.max_chars
        if cut is None:
            return None
        chunk, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
        if not chunk:
            return None
        self._emitted += 1
        self._first_chars = self._first_chars or len(chunk)
        return chunk

    def _early_cut(self, clause_chars: int, phrase_chars: int) -> int | None:
        """The earliest natural break: a sentence end; a clause end of `first_min_words` words and
        `clause_chars` characters or more; or a pause between words (see the class) past `phrase_chars`."""
        cuts = [self._sentence_cut()]
        for match in _CLAUSE_END.finditer(self._view):
            if match.end(1) >= clause_chars and len(self._view[: match.end(1)].split()) >= self.first_min_words:
                cuts.append(match.end(1))
                break
        words = list(_WORD.finditer(self._view))
        for index, word in enumerate(words[self.first_words - 1 :], start=self.first_words):
            if word.end() < phrase_chars or not _breaks_after(word.group()):
                continue
            following = words[index].group().strip("\"'(*_`").lower() if index < len(words) else None
            if following in _OPENS or (self._emitted == 0 and index >= self.first_max_words):
                cuts.append(word.end())
                break
        found = [cut for cut in cuts if cut is not None]
        return min(found) if found else None

    def _sentence_cut(self) -> int | None:
        for match in _SENTENCE_END.finditer(self._view):
            if match.end(1) < self.min_chars and self._emitted > 0:  # merge a short sentence, but not the first
                continue
            last_word = self._view[: match.start(1)].rsplit(None, 1)[-1:] or [""]
            word = last_word[0].lower().rstrip(".")
            if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha() and match.group(1) == "."):
                continue
            return match.end(1)
        return None

    def _last_match(self, pattern: re.Pattern[str], min_end: int) -> int | None:
        ends = [m.end(1) for m in pattern.finditer(self._view) if m.end(1) >= min_end]
        return ends[-1] if ends else None


def _is_abbreviation(word: str) -> bool:
    """A common abbreviation or an initial, whose dot ends no sentence."""
    word = word.lower().rstrip(".")
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def _breaks_after(word: str) -> bool:
    """Whether speech may pause after `word` (a whole word, space after it) in the middle of a sentence."""
    bare = word.strip("\"'()[]*_`").lower().replace("\u2019", "'")  # \u2019: a typographic apostrophe
    if not bare or not bare[-1].isalnum():  # a clause or sentence end is cut as such, or not at all
        return False
    if any(ch.isdigit() for ch in word):  # never inside a number: 3 | million, 1 | 000
        return False
    return bare not in _LEADS_ON and not _is_abbreviation(word)


def normalize_for_speech(text: str) -> str:
    """Strip what should not be read aloud: control characters (a voice may refuse a NUL), markdown marks,
    links' targets, bare URLs, extra space. Fish's control markers are left whole (markers.py)."""
    runs = [marker if is_marker else _plain(marker) for marker, is_marker in split_markers(_CONTROL.sub(" ", text))]
    return _SPACES.sub(" ", "".join(runs)).strip()


def _plain(text: str) -> str:
    return _MARKS.sub("", _URL.sub("", _LINK.sub(r"\1", text)))


def is_speakable(text: str) -> bool:
    """Whether the text holds anything a voice can say (a letter or a digit)."""
    return any(ch.isalnum() for ch in text)
