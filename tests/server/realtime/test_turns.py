"""Turn taking and replies of a realtime session, without a socket or a model: a scripted recogniser and
assistant, and the turn events (speech started, paused, stopped) fed by hand where the voice activity
detector would. What a reply begun at a pause does when the silence confirms it, when the speech goes on,
when the turn ends elsewhere, and when the user speaks over it; what a truncation keeps."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from fishvoice.audio import Audio
from fishvoice.contract import AudioEvent, DoneEvent, ReplyRequest, TextEvent, Usage
from fishvoice.memory.sqlite import SQLiteStore
from fishvoice.server.realtime.conversation import Conversation
from fishvoice.server.realtime.input_audio import PER_MS
from fishvoice.server.realtime.protocol import ResponseSummary, SessionConfig
from fishvoice.server.realtime.reply import Reply
from fishvoice.server.realtime.responses import Responder
from fishvoice.server.realtime.turns import TurnTaking
from fishvoice.speech_service import WorkLimit

QUESTION = "What is the capital of France"


class Sent:
    """The client's side: every event the session sent, in order."""

    session_id = "sess_test"

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    async def send_error(self, error: Any, client_event_id: str | None = None) -> None:
        self.events.append({"type": "error", "code": error.code})

    def kinds(self) -> list[str]:
        return [e["type"] for e in self.events]


class ScriptedASR:
    """Hears each turn as the next scripted text; remembers how long each heard audio was."""

    def __init__(self, *texts: str):
        self.texts = list(texts)
        self.heard_s: list[float] = []

    def hear_turn(self, audio: Audio, *, language: str | None = None, stop: threading.Event | None = None) -> str:
        self.heard_s.append(audio.duration_s)
        return self.texts.pop(0)


class ScriptedAssistant:
    """Answers every request with two sentences, each text then 200 ms of audio; the second waits for
    `go_on` (so a test can act while the reply is under way)."""

    def __init__(self, store: SQLiteStore):
        self.store = store
        self.asked: list[str] = []
        self.go_on = asyncio.Event()

    async def respond(
        self, request: ReplyRequest, namespace: str = "", *, history: Any = None, tools: Any = None, calls: Any = None
    ) -> AsyncGenerator[Any, None]:
        self.asked.append(request.message)
        audio = base64.b64encode(np.zeros(200 * PER_MS, "<i2").tobytes()).decode()
        for seq, sentence in enumerate(["Paris is the capital.", "It is on the Seine."]):
            if seq:
                await self.go_on.wait()
            yield TextEvent(sentence)
            yield AudioEvent(seq, audio, "pcm16", 24000, sentence)
        yield DoneEvent(SimpleNamespace(usage=Usage(12, 9)))  # type: ignore[arg-type]  # usage is all it reads


async def eventually(condition: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        await asyncio.sleep(0.005)


@pytest.fixture
def session(tmp_path: Path):
    """A session's turn taking over the scripts, with 2 s of input audio buffered (positions in samples)."""

    def build(*heard: str) -> SimpleNamespace:
        sent, asr = Sent(), ScriptedASR(*heard)
        assistant = ScriptedAssistant(SQLiteStore(tmp_path / "db.sqlite3"))
        conversation = Conversation(assistant.store, "", "conv_test")
        config = SessionConfig()
        replies = Responder(sent, assistant, WorkLimit(4), conversation)  # type: ignore[arg-type]
        turns = TurnTaking(sent, asr, WorkLimit(4), conversation, replies, lambda: config)  # type: ignore[arg-type]
        turns.input.append(np.zeros(2000 * PER_MS, np.float32))
        return SimpleNamespace(sent=sent, asr=asr, assistant=assistant, replies=replies, turns=turns)

    return build


def ms(value: int) -> int:
    return value * PER_MS


async def test_a_reply_begun_at_a_pause_is_held_until_the_silence_confirms_it(session):
    s = session(QUESTION)
    await s.turns.speech_started(ms(100))
    s.turns.speech_paused(ms(1200))
    await eventually(lambda: s.replies.current is not None and len(s.replies.current.guess.held) >= 4)
    assert s.sent.kinds() == ["input_audio_buffer.speech_started"]  # nothing of the reply went out yet
    guessed = s.replies.current

    await s.turns.speech_stopped(ms(1200))  # the silence ended the turn where it paused
    s.assistant.go_on.set()
    await eventually(lambda: "response.done" in s.sent.kinds())
    kinds = s.sent.kinds()
    assert kinds[:9] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
    ]
    user_item = s.sent.events[2]["item_id"]
    assert s.sent.events[8]["previous_item_id"] == user_item  # the held events name the confirmed turn
    assert kinds.count("response.output_audio.delta") == 2 and kinds[-1] == "response.done"
    assert s.sent.events[-1]["response"]["status"] == "completed"
    assert s.sent.events[6]["response"]["id"] == guessed.summary.response_id  # the guessed reply went out
    assert len(s.asr.heard_s) == 1 and s.assistant.asked == [QUESTION]  # heard once, answered once


async def test_speech_going_on_after_the_pause_drops_the_guessed_reply_unsent(session):
    s = session(QUESTION, f"{QUESTION} and of Spain")
    await s.turns.speech_started(ms(100))
    s.turns.speech_paused(ms(1000))
    await eventually(lambda: s.replies.current is not None)
    dropped = s.replies.current
    s.turns.speech_paused(ms(1500))  # it went on and paused again: the first guess is dropped
    assert dropped.cancelled == "discarded" and dropped.guess.decided.result() is False
    await eventually(lambda: s.replies.current is not None and s.replies.current is not dropped)
    await s.turns.speech_stopped(ms(1500))
    s.assistant.go_on.set()
    await eventually(lambda: "response.done" in s.sent.kinds())
    sent_ids = {e.get("response", {}).get("id") or e.get("response_id") for e in s.sent.events}
    assert dropped.summary.response_id not in sent_ids
    assert s.sent.kinds().count("response.created") == 1
    assert s.assistant.asked == [QUESTION, f"{QUESTION} and of Spain"]


async def test_a_turn_ending_elsewhere_than_the_pause_is_heard_afresh(session):
    s = session(QUESTION, f"{QUESTION} please")
    await s.turns.speech_started(ms(100))
    s.turns.speech_paused(ms(1000))
    await eventually(lambda: s.replies.current is not None)
    guessed = s.replies.current
    await s.turns.speech_stopped(ms(1400))
    assert guessed.cancelled == "discarded"
    s.assistant.go_on.set()
    await eventually(lambda: "response.done" in s.sent.kinds())
    heard = [e for e in s.sent.events if e["type"].endswith("transcription.completed")]
    assert [e["transcript"] for e in heard] == [f"{QUESTION} please"]
    assert s.asr.heard_s[1] > s.asr.heard_s[0]  # the whole turn, past the pause
    assert s.assistant.asked[-1] == f"{QUESTION} please"


async def test_speech_over_a_confirmed_reply_cancels_it_and_sends_nothing_after(session):
    s = session(QUESTION)
    await s.turns.speech_started(ms(100))
    s.turns.speech_paused(ms(1000))
    await eventually(lambda: s.replies.current is not None)
    await s.turns.speech_stopped(ms(1000))
    await eventually(lambda: "response.output_audio.delta" in s.sent.kinds())
    await s.turns.speech_started(ms(1800))  # barge-in, while the reply waits to go on
    s.assistant.go_on.set()
    await eventually(lambda: "response.done" in s.sent.kinds())
    barged = s.sent.kinds().index("input_audio_buffer.speech_started", 1)
    assert "response.output_audio.delta" not in s.sent.kinds()[barged:]
    done = s.sent.events[-1]["response"]
    assert done["status"] == "cancelled" and done["status_details"]["reason"] == "turn_detected"


def test_a_reply_is_heard_as_far_as_its_audio_was_played():
    reply = Reply(ResponseSummary("resp_1", "item_1", True), "Hi", SessionConfig())
    reply.sent_audio(1000, "One two three four.")
    reply.sent_audio(1000, "Five six.")
    assert reply.heard() == "One two three four. Five six."
    reply.heard_ms = 500
    assert reply.heard() == "One two"
    reply.heard_ms = 1500
    assert reply.heard() == "One two three four. Five"


async def test_a_truncation_to_nothing_gives_the_question_back(tmp_path: Path):
    conversation = Conversation(SQLiteStore(tmp_path / "db.sqlite3"), "", "conv_cut")
    reply = Reply(ResponseSummary("resp_1", "item_1", True), "Where is Paris?", SessionConfig())
    reply.sent_audio(1000, "In France.")
    conversation.remember(reply, reply.heard())
    assert conversation.turns[-1] == {"role": "assistant", "content": "In France."}
    assert conversation.exchange is not None
    conversation.cut(0)
    assert conversation.turns == [] and conversation.exchange is None
    assert conversation.unanswered == ["Where is Paris?"]
    await conversation.store_exchange()  # nothing is stored
    assert (await conversation.store.load("", "conv_cut")).turns == []
