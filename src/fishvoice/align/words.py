"""Which word of a text was spoken when: the caller's words matched to the spans of speech a voice or an
aligner located.

The two sides rarely count the same: the voice speaks a normalised text ("$4.50" is "four dollars, fifty
cents", "U.S.A." one phonemised word, "twenty-five" one). Each side's items carry a weight (letters the
voice says for a caller's word; phonemes or letters of a span), and a dynamic programme pairs them in
order, one word to one or more spans or several words to one span, where their shares of the whole agree
best. A span shared by several words is divided by their weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..contract import WordTiming
from ..markers import without_markers
from ..numbers import spell_out_numbers
from ..text import normalize_for_speech

_MOST_IN_A_GROUP = 4  # words to one span, or spans to one word
_UNEVEN = 0.15  # the cost of a group that is not one to one: where the counts agree, pairs nearly always are right


@dataclass(frozen=True)
class Span:
    """Speech located in the audio: seconds from its start, and how much was said in it (phonemes or letters)."""

    start: float
    end: float
    weight: float


@dataclass(frozen=True)
class TextWord:
    """A word as the caller wrote it (punctuation attached), and the letters a voice says for it."""

    text: str
    weight: float


def caller_words(text: str, *, numbers_in_words: bool = True) -> list[TextWord]:
    """The words of `text` as written, its control markers left out; a token with no letter or digit (a
    dash, an ellipsis) is not a word. A word the voice does not say (a URL) weighs nothing."""
    words = []
    for token in without_markers(text).split():
        if any(ch.isalnum() for ch in token):
            spoken = normalize_for_speech(token)
            spoken = spell_out_numbers(spoken) if numbers_in_words else spoken
            words.append(TextWord(token, float(sum(ch.isalnum() for ch in spoken))))
    return words


def assign(words: list[TextWord], spans: list[Span], offset: float = 0.0, scale: float = 1.0) -> list[WordTiming]:
    """Each word's timing (`offset` + seconds * `scale`), in order, without overlaps; words that weigh
    nothing take no time, at the end of the word before them."""
    said = [word for word in words if word.weight > 0]
    timed = dict(zip(map(id, said), _pair(said, spans), strict=True)) if said and spans else {}
    timings, last = [], 0.0
    for word in words:
        start, end = timed.get(id(word), (last, last))
        start = max(start, last)
        end = max(end, start)
        timings.append(WordTiming(word.text, round(offset + start * scale, 3), round(offset + end * scale, 3)))
        last = end
    return timings


def _pair(words: list[TextWord], spans: list[Span]) -> list[tuple[float, float]]:
    """(start, end) of each word, by the cheapest monotone grouping of words with spans."""
    n, m = len(words), len(spans)
    word_total = sum(word.weight for word in words)
    span_total = sum(span.weight for span in spans) or float(m)
    word_share = [word.weight / word_total for word in words]
    span_share = [(span.weight or 1.0) / span_total for span in spans]
    inf = float("inf")
    cost = [[inf] * (m + 1) for _ in range(n + 1)]
    back: list[list[tuple[int, int]]] = [[(0, 0)] * (m + 1) for _ in range(n + 1)]
    cost[0][0] = 0.0
    for i in range(n + 1):
        for j in range(m + 1):
            if cost[i][j] == inf:
                continue
            for di, dj in _GROUPS:
                if i + di <= n and j + dj <= m:
                    step = abs(sum(word_share[i : i + di]) - sum(span_share[j : j + dj]))
                    step += 0.0 if di == dj == 1 else _UNEVEN
                    if cost[i][j] + step < cost[i + di][j + dj]:
                        cost[i + di][j + dj] = cost[i][j] + step
                        back[i + di][j + dj] = (di, dj)
    if cost[n][m] == inf:  # too uneven to group: spread the words over the whole speech by weight
        return _divide(words, spans[0].start, spans[-1].end)
    timings: list[tuple[float, float]] = []
    i, j = n, m
    while i or j:
        di, dj = back[i][j]
        group = spans[j - dj : j]
        timings[:0] = _divide(words[i - di : i], group[0].start, group[-1].end)
        i, j = i - di, j - dj
    return timings


_GROUPS = [(1, 1)] + [(1, k) for k in range(2, _MOST_IN_A_GROUP + 1)] + [(k, 1) for k in range(2, _MOST_IN_A_GROUP + 1)]


def _divide(words: list[TextWord], start: float, end: float) -> list[tuple[float, float]]:
    """[start, end] shared among `words` by their weights."""
    total = sum(word.weight for word in words)
    out, at = [], start
    for word in words:
        step = (end - start) * word.weight / total
        out.append((at, at + step))
        at += step
    return out
