"""A reply in progress, as the session tracks it: what was sent piece by piece (so a cut keeps only what was
heard), and, for a reply begun at a pause, the guess it waits on."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ...contract import ChatMessage, ToolCall, WordTiming
from .protocol import ResponseSummary, SessionConfig


@dataclass
class Guess:
    """What a reply begun on a pause's transcript waits on: the silence confirming the turn ended there
    (`decided` True: its events held so far go out) or the speech going on (False: they are dropped)."""

    at: int  # where the speech paused, in input samples
    said: str  # the turn's transcript
    decided: asyncio.Future[bool]
    held: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Reply:
    summary: ResponseSummary
    message: str
    config: SessionConfig
    text: list[str] = field(default_factory=list)
    pieces: list[tuple[int, int, str]] = field(default_factory=list)  # (start ms, end ms, text) of each audio piece
    words: list[WordTiming] = field(default_factory=list)  # its words' timings, as each chunk's are found
    sent_ms: int = 0
    heard_ms: int | None = None  # how much of its audio the client played, once it said (a truncation)
    cancelled: str | None = None  # the reason, once cancelled: nothing more is sent
    task: asyncio.Task[None] | None = None
    previous_item: str | None = None  # the conversation item before the reply's
    guess: Guess | None = None  # set for a reply begun at a pause
    out_of_band: bool = False  # `conversation: "none"`: its items join no conversation, nothing is kept
    turn_ended: float | None = None  # when the turn it answers ended (perf_counter), where speech detection said
    audio_out: bool = False  # whether any of its audio went out
    history: list[ChatMessage] = field(default_factory=list)  # the turns before its exchange
    after: list[ChatMessage] = field(default_factory=list)  # the calls and results its exchange has so far
    calls: dict[int, ToolCall] = field(default_factory=dict)  # the functions it calls, by the LLM's index
    call_items: dict[int, str] = field(default_factory=dict)  # their items' ids
    outputs: list[str] = field(default_factory=list)  # the ids of its output items (message, calls), in order

    @property
    def undecided_at(self) -> int | None:
        """Where the speech paused, for a guess not yet confirmed or dropped; else None."""
        return self.guess.at if self.guess is not None and not self.guess.decided.done() else None

    @property
    def undecided(self) -> bool:
        return self.undecided_at is not None

    @property
    def held_back(self) -> bool:
        """Whether its events are kept from the client: a guess not (or never to be) confirmed."""
        return self.guess is not None and not (self.guess.decided.done() and self.guess.decided.result())

    def sent_audio(self, duration_ms: int, text: str) -> None:
        """A piece of audio speaking `text` went out."""
        self.pieces.append((self.sent_ms, self.sent_ms + duration_ms, text))
        self.sent_ms += duration_ms

    def heard(self) -> str:
        """The reply's text up to `heard_ms` of its audio (all of it sent, if the client did not say); a
        text reply is heard as sent. A word is heard once half of it has played, by the words' timings
        where they reach the cut (estimated by each chunk's share of its words otherwise: the timings of
        the chunk playing may still be under way)."""
        if not self.config.audio:
            return "".join(self.text).strip()
        end = self.sent_ms if self.heard_ms is None else min(self.heard_ms, self.sent_ms)
        if self.heard_ms is None:
            return " ".join(text for _, _, text in _chunks(self.pieces)).strip()
        if self.words and self.words[-1].end * 1000 >= end:
            return " ".join(word.word for word in self.words if (word.start + word.end) * 500 <= end)
        spoken: list[str] = []
        for start, stop, text in _chunks(self.pieces):
            if stop <= end:
                spoken.append(text)
            elif start < end:
                words = text.split()
                spoken.append(" ".join(words[: max(1, round(len(words) * (end - start) / (stop - start)))]))
                break
            else:
                break
        return " ".join(spoken).strip()


def _chunks(pieces: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Audio pieces joined into the chunks of text they speak (a chunk may arrive in several pieces)."""
    joined: list[tuple[int, int, str]] = []
    for start, stop, text in pieces:
        if joined and joined[-1][2] == text and joined[-1][1] == start:
            joined[-1] = (joined[-1][0], stop, text)
        else:
            joined.append((start, stop, text))
    return joined
