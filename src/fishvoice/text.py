"""Text for speech: split a streamed reply into speakable chunks, and clean text before TTS.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import re

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
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_MARKS = re.compile(r"\*\*|__|[*`#>]|^\s*[-+]\s+", re.MULTILINE)
_URL = re.compile(r"https?://\S+")
_SPACES = re.compile(r"\s+")


class SpeechChunker:
    """Turns a stream of text deltas into chunks ready to speak.

    A chunk is a whole sentence; a clause (at , ; : or a dash) once the buffer is long enough to be
    worth speaking on its own; or, failing any boundary, the words before `max_chars`. The first
    chunk may be a short clause so the first audio leaves early.
    """

    def __init__(self, min_chars: int = 12, clause_chars: int = 80, max_chars: int = 240, first_clause_chars: int = 30):
        self.min_chars = min_chars
        self.clause_chars = clause_chars
        self.max_chars = max_chars
        self.first_clause_chars = first_clause_chars
        self._buffer = ""
        self._emitted = 0

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
        cut = self._sentence_cut()
        clause_limit = self.first_clause_chars if self._emitted == 0 else self.clause_chars
        if cut is None and len(self._buffer) >= clause_limit:
            cut = self._last_match(_CLAUSE_END, self.min_chars)
        if cut is None and len(self._buffer) > self.max_chars:
            cut = self._buffer.rfind(" ", 0, self.max_chars) + 1 or self.max_chars
        if cut is None:
            return None
        chunk, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
        if not chunk:
            return None
        self._emitted += 1
        return chunk

    def _sentence_cut(self) -> int | None:
        for match in _SENTENCE_END.finditer(self._buffer):
            if match.end(1) < self.min_chars and self._emitted > 0:  # merge a short sentence, but not the first
                continue
            last_word = self._buffer[: match.start(1)].rsplit(None, 1)[-1:] or [""]
            word = last_word[0].lower().rstrip(".")
            if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha() and match.group(1) == "."):
                continue
            return match.end(1)
        return None

    def _last_match(self, pattern: re.Pattern[str], min_end: int) -> int | None:
        ends = [m.end(1) for m in pattern.finditer(self._buffer) if m.end(1) >= min_end]
        return ends[-1] if ends else None


def normalize_for_speech(text: str) -> str:
    """Strip what should not be read aloud: markdown marks, links' targets, bare URLs, extra space."""
    text = _URL.sub("", _LINK.sub(r"\1", text))
    text = _MARKS.sub("", text)
    return _SPACES.sub(" ", text).strip()


def is_speakable(text: str) -> bool:
    """Whether the text holds anything a voice can say (a letter or a digit)."""
    return any(ch.isalnum() for ch in text)
