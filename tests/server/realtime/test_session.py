"""The realtime voice session (`/v1/realtime`) through the official `openai` client's realtime connection
against a real `fishvoice serve`: spoken questions (Piper's speech as pcm16) heard with server VAD and
answered in text and audio, barge-in cancelling a reply and keeping only what was heard, push-to-talk,
typed turns, and bad events answered with `error` events while the session goes on."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

from fishvoice.asr.whisper import WhisperASR
from fishvoice.audio import G711_RATE, Audio, from_g711, from_pcm16, resample, to_g711
from fishvoice.tts.base import synthesize
from tests.realtime_client import (
    ANSWERED,
    KEY,
    QUESTION,
    RATE,
    TALKATIVE,
    WAIT_S,
    ask_aloud,
    audio_of,
    heard_as_asked,
    in_order,
    pcm,
    session,
    silence,
    speak,
    stored_history,
    transcript_of,
    until,
    vad_session,
    words,
)
from tests.servers import sample, samples, server
from tests.test_asr import letter_error_rate

pytestmark = pytest.mark.model  # loads models (or starts a server that does)


@pytest.fixture(scope="module")
def server_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("realtime")


@pytest.fixture(scope="module")
def url(server_dir) -> Iterator[str]:
    with server(server_dir, api_key=KEY, concurrency="2", realtime_sessions="3") as base:
        yield base


def test_spoken_question_is_heard_and_answered_in_text_and_speech(url, question):
    seen = ask_aloud(url, silence(0.5) + question + silence(1.0))
    assert in_order(seen, ["input_audio_buffer.speech_started", *ANSWERED]), [e.type for e in seen]
    started = next(e for e in seen if e.type == "input_audio_buffer.speech_started")
    assert 300 <= started.audio_start_ms <= 800  # the speech follows 0.5 s of silence
    heard = next(e for e in seen if e.type == "conversation.item.input_audio_transcription.completed")
    assert heard_as_asked(heard.transcript), heard.transcript
    delta = next(e for e in seen if e.type == "conversation.item.input_audio_transcription.delta")
    assert delta.item_id == heard.item_id and delta.delta == heard.transcript and seen.index(delta) < seen.index(heard)
    done = seen[-1].response
    assert done.status == "completed" and done.usage.output_tokens > 0
    reply = transcript_of(seen, done.id)
    assert reply.strip() and done.output[0].content[0].transcript == reply.strip()
    audio = from_pcm16(audio_of(seen, done.id))
    assert audio.size / RATE >= 0.1 * len(reply.split())
    assert float(np.sqrt(np.mean(np.square(audio)))) > 0.01


def test_a_turn_is_answered_from_its_pause_once_the_silence_confirms_it(url, server_dir, question):
    """Spoken at real-time pace, the turn is heard and its reply begun at the speech's pause, while the
    silence that ends it is still running; the reply's events are held until then, so they come in order."""

    seen = ask_aloud(url, silence(0.3) + question + silence(1.5), silence_ms=1000, paced=True)
    kinds = [e.type for e in seen]
    assert in_order(seen, ANSWERED), kinds
    assert kinds.count("response.created") == 1 and seen[-1].response.status == "completed"
    log = "".join(path.read_text() for path in server_dir.glob("server-*.log"))
    assert "a reply begun at the pause goes out" in log


def test_pauses_inside_a_turn_do_not_answer_it_early(url, tts):
    """Commas make pauses longer than a guess waits for and shorter than the silence that ends the turn:
    whatever was begun at them is dropped unsent, and the whole turn is answered once."""
    said = "Wait, stop, please tell me about dogs instead."
    seen = ask_aloud(url, pcm(synthesize(tts, said)) + silence(1.5), silence_ms=1000, paced=True)
    kinds = [e.type for e in seen]
    assert kinds.count("input_audio_buffer.committed") == 1 and kinds.count("response.created") == 1
    heard = next(e for e in seen if e.type == "conversation.item.input_audio_transcription.completed")
    assert {"wait", "dogs"} <= set(words(heard.transcript)), heard.transcript
    assert seen[-1].response.status == "completed"


def test_speaking_over_a_reply_cancels_it_and_keeps_what_was_heard(url, question, interruption):
    before = samples(httpx.get(f"{url}/metrics").text)

    async def talk() -> tuple[list[Any], int, str]:
        async with session(url, conversation_id="barge-in") as connection:
            async with httpx.AsyncClient() as http:
                during = samples((await http.get(f"{url}/metrics")).text)
            assert sample(during, "fishvoice_realtime_sessions_open") >= 1
            await vad_session(connection, TALKATIVE)
            await speak(connection, question + silence(1.0))
            seen: list[Any] = []
            first_audio = await until(connection, "response.output_audio.delta", seen)
            await speak(connection, interruption)
            await until(connection, "input_audio_buffer.speech_started", seen)
            started = len(seen) - 1
            # The client heard 400 ms of the reply when the user spoke.
            await connection.conversation.item.truncate(item_id=first_audio.item_id, content_index=0, audio_end_ms=400)
            await speak(connection, silence(1.0))
            # The interrupted reply ends (cancelled, or it had been sent whole and was still playing), and the
            # interruption is answered.
            while not [e for e in seen if e.type == "response.done" and e.response.id != first_audio.response_id]:
                await until(connection, "response.done", seen)
            return seen, started, first_audio.response_id

    seen, started, interrupted = asyncio.run(talk())
    done = next(e.response for e in seen if e.type == "response.done" and e.response.id == interrupted)
    assert done.status in ("cancelled", "completed")
    if done.status == "cancelled":  # it was still being written: nothing more of it was sent
        assert done.status_details.reason in ("turn_detected", "client_cancelled")
        assert not [
            e for e in seen[started:] if e.type == "response.output_audio.delta" and e.response_id == interrupted
        ]
    assert any(e.type == "conversation.item.truncated" and e.audio_end_ms == 400 for e in seen)
    full = words(transcript_of(seen, interrupted))
    sent = words(done.output[0].content[0].transcript)  # what its sent audio speaks
    assert sent and sent == full[: len(sent)]
    assert seen[-1].type == "response.done" and seen[-1].response.status == "completed"

    # The session stored the conversation: a job on the same conversation sees the heard part only, the
    # words of the reply's first 400 ms.
    history = stored_history(url, "barge-in")
    assert heard_as_asked(history[0]["content"]), history[0]
    kept = words(history[1]["content"])
    assert history[1]["role"] == "assistant" and 1 <= len(kept) <= 3
    assert kept == full[: len(kept)] and len(kept) < len(full)
    assert "dogs" in words(history[2]["content"])

    # What operators see: two turns, a barge-in where the reply was cut by the speech, and the time from each
    # turn's end to its reply's first audio.
    after = samples(httpx.get(f"{url}/metrics").text)

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert grew("fishvoice_realtime_turns_total") == 2
    barged = done.status == "cancelled" and done.status_details.reason == "turn_detected"
    assert grew("fishvoice_realtime_barge_ins_total") == int(barged)
    assert grew("fishvoice_realtime_voice_to_voice_seconds_count") == 2
    assert 0 < grew("fishvoice_realtime_voice_to_voice_seconds_sum") < 2 * WAIT_S
    assert grew("fishvoice_first_audio_seconds_count", route="/v1/realtime") >= 2
    assert grew("fishvoice_asr_seconds_count", route="/v1/realtime") >= 2


@pytest.mark.parametrize(
    ("detection", "turns"),
    [
        ({"type": "semantic_vad", "eagerness": "low"}, 1),  # "... a pizza with" trails off: the pause is waited out
        ({"type": "server_vad", "silence_duration_ms": 500}, 2),  # server VAD cuts it at the pause
    ],
)
def test_semantic_vad_waits_out_a_pause_in_the_middle_of_a_sentence(url, tts, detection, turns):
    said = pcm(synthesize(tts, "I would like to order a large pizza with")) + silence(1.5)
    said += pcm(synthesize(tts, "extra cheese and mushrooms, please.")) + silence(3.5)

    async def talk() -> list[Any]:
        async with session(url) as connection:
            turn = {**detection, "create_response": False}
            await connection.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": turn}}})
            updated = await until(connection, "session.updated", [])
            assert updated.session.audio.input.turn_detection.type == detection["type"]
            await speak(connection, said, 20, paced=True)
            seen: list[Any] = []
            # the line stays open in silence, as a caller's does: under load the pause's transcript (which
            # decides the wait) may come late, and the turn ends only as silence goes on arriving
            quiet = asyncio.create_task(speak(connection, silence(30), 20, paced=True))
            try:
                while sum(e.type == "conversation.item.input_audio_transcription.completed" for e in seen) < turns:
                    await until(connection, "conversation.item.input_audio_transcription.completed", seen)
            finally:
                quiet.cancel()
                await asyncio.gather(quiet, return_exceptions=True)
            await speak(connection, silence(0.5), 20, paced=True)  # nothing more comes
            with contextlib.suppress(TimeoutError):
                seen.append(await asyncio.wait_for(connection.recv(), 1.0))
            return seen

    seen = asyncio.run(talk())
    heard = [e.transcript for e in seen if e.type == "conversation.item.input_audio_transcription.completed"]
    assert sum(e.type == "input_audio_buffer.committed" for e in seen) == turns, heard
    assert "pizza" in words(heard[0]) and "mushrooms" in words(heard[-1]), heard
    assert not [e for e in seen if e.type.startswith("response.")]


def test_a_silent_user_is_prompted_after_server_vads_idle_timeout(url):
    async def talk() -> tuple[list[Any], float]:
        async with session(url) as connection:
            opened = time.monotonic()  # the idle clock starts with the session
            detection = {"type": "server_vad", "idle_timeout_ms": 5000}
            instructions = "Answer in one short sentence."
            audio = {"input": {"turn_detection": detection}}
            await connection.session.update(session={"type": "realtime", "instructions": instructions, "audio": audio})
            updated = await until(connection, "session.updated", [])
            assert updated.session.audio.input.turn_detection.idle_timeout_ms == 5000
            seen: list[Any] = []
            microphone = asyncio.create_task(speak(connection, silence(12.0), 20, paced=True))
            try:
                await until(connection, "input_audio_buffer.timeout_triggered", seen)
                after_s = time.monotonic() - opened
                await until(connection, "response.done", seen)
            finally:
                microphone.cancel()
            return seen, after_s

    seen, after_s = asyncio.run(talk())
    assert 4.5 <= after_s < 8.0  # the silence lasted idle_timeout_ms (counted from just before session.created)
    triggered = next(e for e in seen if e.type == "input_audio_buffer.timeout_triggered")
    assert triggered.audio_end_ms - triggered.audio_start_ms == 5000
    order = ["input_audio_buffer.timeout_triggered", "input_audio_buffer.committed", "response.created"]
    assert in_order(seen, [*order, "response.output_audio.delta", "response.done"]), [e.type for e in seen]
    assert seen[-1].response.status == "completed"
    assert next(e for e in seen if e.type == "input_audio_buffer.committed").item_id == triggered.item_id


@pytest.mark.parametrize("law", ["pcmu", "pcma"])
def test_a_phone_caller_speaks_g711_and_hears_g711(url, tts, law):
    """Telephone audio, as Twilio's Media Streams and SIP gateways send it: G.711 at 8 kHz in and out."""
    question = to_g711(resample(synthesize(tts, QUESTION), G711_RATE).samples, law)
    phone_silence = to_g711(np.zeros(G711_RATE, np.float32), law)

    async def talk() -> list[Any]:
        async with session(url) as connection:
            phone = {"format": {"type": f"audio/{law}"}}
            turn = {"type": "server_vad", "silence_duration_ms": 500}
            audio = {"input": {**phone, "turn_detection": turn}, "output": phone}
            instructions = "You speak English only. Answer in one short sentence."  # SmolLM2 answers "France" in French
            await connection.session.update(session={"type": "realtime", "instructions": instructions, "audio": audio})
            updated = await until(connection, "session.updated", [])
            assert updated.session.audio.output.format.type == f"audio/{law}"
            # The call's line is open a moment before the caller speaks, as the other spoken tests' streams are.
            said = phone_silence[: G711_RATE // 2] + question + phone_silence
            await speak(connection, said, 20, paced=True, bytes_per_s=G711_RATE)
            seen: list[Any] = []
            await until(connection, "response.done", seen)
            return seen

    seen = asyncio.run(talk())
    heard = next(e for e in seen if e.type == "conversation.item.input_audio_transcription.completed")
    # At 8 kHz Whisper splits and joins words it hears ("Francis Parris"): letters, not words, are compared.
    assert letter_error_rate(QUESTION, heard.transcript) < 0.2, heard.transcript
    done = seen[-1].response
    assert done.status == "completed" and done.audio.output.format.type == f"audio/{law}"
    answer = b"".join(base64.b64decode(e.delta) for e in seen if e.type == "response.output_audio.delta")
    said = transcript_of(seen, done.id)
    samples = from_g711(answer, law)  # one byte a sample at 8 kHz: as long as its words take to say
    assert 0.1 * len(said.split()) <= samples.size / G711_RATE <= 1.2 * len(said.split()) + 1.0
    back = WhisperASR().transcribe(Audio(samples, G711_RATE), language="en").text
    assert letter_error_rate(said, back) < 0.2, (said, back)


def test_a_response_out_of_band_joins_no_conversation(url):
    """`conversation: "none"`: a reply with its own instructions, modalities and metadata that the conversation
    does not keep; the question it answered is still the conversation's to answer."""

    async def talk() -> list[Any]:
        async with session(url, conversation_id="out-of-band") as connection:
            await connection.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": QUESTION}]}
            )
            seen: list[Any] = []
            aside = {
                "conversation": "none",
                "metadata": {"purpose": "classify"},
                "output_modalities": ["text"],
                "instructions": "Say whether the user asked a question: answer yes or no.",
            }
            await connection.response.create(response=aside)
            await until(connection, "response.done", seen)
            told = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say OK."}]}
            await connection.response.create(
                response={"conversation": "none", "input": [told], "output_modalities": ["text"]}
            )
            await until(connection, "response.done", seen)
            await connection.response.create(response={"output_modalities": ["text"]})  # in the conversation
            await until(connection, "response.done", seen)
            return seen

    seen = asyncio.run(talk())
    aside, told, answer = [e.response for e in seen if e.type == "response.done"]
    assert aside.metadata == {"purpose": "classify"} and answer.metadata is None
    assert all(r.status == "completed" and r.output_modalities == ["text"] for r in (aside, told, answer))
    added = {e.item.id for e in seen if e.type == "conversation.item.added"}
    assert aside.output[0].id not in added and told.output[0].id not in added and answer.output[0].id in added
    assert any(e.type == "response.output_item.added" and e.item.id == aside.output[0].id for e in seen)
    history = stored_history(url, "out-of-band")
    assert [turn["role"] for turn in history[:2]] == ["user", "assistant"]
    assert history[0]["content"] == QUESTION and history[1]["content"] == answer.output[0].content[0].text


def test_a_transcription_session_hears_turns_and_answers_none(url, question):
    async def talk() -> list[Any]:
        async with session(url) as connection:
            heard = {
                "turn_detection": {"type": "server_vad"},
                "transcription": {"model": "whisper-1", "language": "en"},
            }
            await connection.session.update(session={"type": "transcription", "audio": {"input": heard}})
            updated = await until(connection, "session.updated", [])
            assert updated.session.type == "transcription"
            await speak(connection, question + silence(1.0), 20, paced=True)
            seen: list[Any] = []
            await until(connection, "conversation.item.input_audio_transcription.completed", seen)
            await connection.response.create()
            await until(connection, "error", seen)
            await speak(connection, silence(0.5))
            with contextlib.suppress(TimeoutError):
                seen.append(await asyncio.wait_for(connection.recv(), 1.0))
            return seen

    seen = asyncio.run(talk())
    heard = next(e for e in seen if e.type == "conversation.item.input_audio_transcription.completed")
    assert heard_as_asked(heard.transcript), heard.transcript
    refused = next(e for e in seen if e.type == "error")
    assert refused.error.param == "response.create" and "transcription session" in refused.error.message
    assert not [e for e in seen if e.type.startswith("response.")]


def test_items_are_retrieved_as_the_client_holds_them_and_deleted_from_the_conversation(url):
    def typed(text: str) -> dict[str, Any]:
        return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}

    async def talk() -> list[Any]:
        async with session(url, conversation_id="items") as connection:
            seen: list[Any] = []
            await connection.conversation.item.create(item=typed("Tell me about cats."))
            dropped = (await until(connection, "conversation.item.added", seen)).item.id
            await connection.conversation.item.delete(item_id=dropped)
            await until(connection, "conversation.item.deleted", seen)
            await connection.response.create()
            await until(connection, "error", seen)  # nothing left to answer
            await connection.conversation.item.create(item=typed(QUESTION))
            asked = (await until(connection, "conversation.item.added", seen)).item.id
            await connection.response.create(response={"output_modalities": ["text"]})
            done = await until(connection, "response.done", seen)
            for item_id in (asked, done.response.output[0].id, dropped):
                await connection.conversation.item.retrieve(item_id=item_id)
                await until(connection, "error" if item_id == dropped else "conversation.item.retrieved", seen)
            return seen

    seen = asyncio.run(talk())
    deleted, nothing, *_, not_found = [e for e in seen if e.type in ("conversation.item.deleted", "error")]
    assert deleted.type == "conversation.item.deleted" and nothing.type == not_found.type == "error"
    assert nothing.error.param == "response.create" and not_found.error.param == "item_id"
    asked, answer = [e.item for e in seen if e.type == "conversation.item.retrieved"]
    assert asked.role == "user" and asked.content[0].text == QUESTION
    done = next(e.response for e in seen if e.type == "response.done")
    assert answer.id == done.output[0].id and answer.status == "completed" and answer.content[0].text
    history = stored_history(url, "items")
    assert history[0]["content"] == QUESTION and "cats" not in json.dumps(history)


def test_an_item_of_a_stored_exchange_is_deleted_from_the_store(url):
    def typed(text: str) -> dict[str, Any]:
        return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}

    async def talk() -> tuple[str, list[Any]]:
        async with session(url, conversation_id="deleted-stored") as connection:
            seen: list[Any] = []
            answers = []
            for said in ("Say hello.", "Say goodbye."):  # the first exchange is stored as the second reply starts
                await connection.conversation.item.create(item=typed(said))
                await connection.response.create(response={"output_modalities": ["text"]})
                answers.append((await until(connection, "response.done", seen)).response.output[0])
            await connection.conversation.item.delete(item_id=answers[0].id)
            await until(connection, "conversation.item.deleted", seen)
            return answers[0].content[0].text, seen

    first_answer, _ = asyncio.run(talk())
    history = stored_history(url, "deleted-stored")
    assert [turn["role"] for turn in history[:3]] == ["user", "user", "assistant"], history
    assert history[0]["content"] == "Say hello." and first_answer not in [turn["content"] for turn in history]


def test_a_reply_truncated_to_nothing_leaves_its_question_unanswered(url):
    """A reply sent whole, then truncated at 0 ms (the client played none of it): no empty assistant turn is
    kept; the question is answered with the next one."""

    async def talk() -> None:
        async with session(url, conversation_id="unheard") as connection:
            for text in ("What is the capital of France?", "And of Spain?"):
                await connection.conversation.item.create(
                    item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
                )
                await connection.response.create(response={"max_output_tokens": 16})
                done = await until(connection, "response.done", [])
                assert done.response.status == "completed"
                if text.startswith("What"):
                    item = done.response.output[0].id
                    await connection.conversation.item.truncate(item_id=item, content_index=0, audio_end_ms=0)
                    await until(connection, "conversation.item.truncated", [])

    asyncio.run(talk())
    history = stored_history(url, "unheard")
    assert all(turn["content"].strip() for turn in history), history
    assert [turn["role"] for turn in history] == ["user", "assistant", "user", "assistant"]
    assert history[0]["content"] == "What is the capital of France? And of Spain?"


def test_push_to_talk_commits_and_asks(url, question):
    async def talk() -> list[Any]:
        async with session(url) as connection:
            await connection.session.update(
                session={
                    "type": "realtime",
                    "instructions": "Answer in one short sentence.",
                    "audio": {"input": {"turn_detection": None}},
                }
            )
            updated = await until(connection, "session.updated", [])
            assert updated.session.audio.input.turn_detection is None
            await speak(connection, question + silence(1.0))
            seen: list[Any] = []
            await connection.input_audio_buffer.commit()
            await connection.response.create()
            await until(connection, "response.done", seen)
            return seen

    seen = asyncio.run(talk())
    kinds = [e.type for e in seen]
    assert "input_audio_buffer.speech_started" not in kinds  # no VAD: the client said when the turn ended
    heard = next(e for e in seen if e.type == "conversation.item.input_audio_transcription.completed")
    assert heard_as_asked(heard.transcript), heard.transcript
    done = seen[-1].response
    assert done.status == "completed" and audio_of(seen, done.id)


def test_bad_events_get_errors_and_the_session_goes_on(url):
    async def talk() -> list[Any]:
        async with session(url) as connection:
            errors: list[Any] = []
            sends = [
                {"type": "no.such.event"},
                {"type": "session.update", "session": {"audio": {"input": {"turn_detection": {"threshold": 5}}}}},
                {"type": "session.update", "session": {"audio": {"output": {"voice": "nobody"}}}},
                {"type": "session.update", "session": {"colour": "blue"}},
                {"type": "input_audio_buffer.append", "audio": "not base64!"},
                {"type": "input_audio_buffer.commit"},
                {"type": "response.cancel"},
                {"type": "response.create"},
                {"type": "conversation.item.truncate", "item_id": "item_x", "content_index": 0, "audio_end_ms": 10},
                {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": []}},
            ]
            for event in sends:
                await connection.send(event)
                errors.append(await until(connection, "error", []))
            await connection.session.update(session={"type": "realtime", "output_modalities": ["text"]})
            await until(connection, "session.updated", [])
            await connection.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}
            )
            await connection.response.create(response={"max_output_tokens": 20})
            seen: list[Any] = []
            await until(connection, "response.done", seen)
            return errors + seen

    events = asyncio.run(talk())
    errors = [e.error for e in events[:10]]
    assert [(e.code, e.param) for e in errors] == [
        ("invalid_input", "type"),
        ("invalid_input", "session.audio.input.turn_detection.threshold"),
        ("not_found", "session.audio.output.voice"),
        ("invalid_input", "session.colour"),
        ("invalid_audio", "audio"),
        ("invalid_audio", "input_audio_buffer"),
        ("invalid_input", "response.cancel"),
        ("invalid_input", "response.create"),
        ("not_found", "item_id"),
        ("invalid_input", "item.content"),
    ]
    assert all(
        e.message and e.type == ("not_found_error" if e.code == "not_found" else "invalid_request_error")
        for e in errors
    )
    text = "".join(e.delta for e in events[10:] if e.type == "response.output_text.delta")
    assert text.strip() and events[-1].response.status == "completed"
    assert not [e for e in events if e.type == "response.output_audio.delta"]


def test_keys_and_the_session_limit_are_enforced(url):
    ws_url = url.replace("http://", "ws://") + "/v1/realtime?model=fishvoice"

    async def refused(**options: Any) -> tuple[dict[str, Any], int | None]:
        async with websockets.connect(ws_url, **options) as socket:
            event = json_event(await asyncio.wait_for(socket.recv(), WAIT_S))
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(socket.recv(), WAIT_S)
            return event, socket.close_code

    async def check() -> None:
        event, code = await refused(additional_headers={"Authorization": "Bearer wrong"})
        assert event["error"]["code"] == "unauthorized" and code == 1008
        # Browsers give the key as a subprotocol, or in the query.
        async with websockets.connect(ws_url, subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"]) as socket:
            assert socket.subprotocol == "realtime"
            assert json_event(await socket.recv())["type"] == "session.created"
        async with websockets.connect(f"{ws_url}&api_key={KEY}") as socket:
            assert json_event(await socket.recv())["type"] == "session.created"
        # Three sessions at once are allowed here; a fourth is refused until one closes.
        async with session(url), session(url), session(url):
            event, code = await refused(additional_headers={"Authorization": f"Bearer {KEY}"})
            assert event["error"]["code"] == "backend_unavailable" and code == 1013
        async with session(url) as connection:
            await connection.session.update(session={"type": "realtime", "instructions": "Hi."})
            assert (await until(connection, "session.updated", [])).session.instructions == "Hi."

    asyncio.run(check())


def json_event(message: str | bytes) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(message)
    return event


@pytest.fixture(scope="module")
def limited(tmp_path_factory) -> Iterator[str]:
    """A server without keys that allows one session at once, idle for 3 s at most, and messages of half a MB."""
    settings = {"realtime_sessions": "1", "realtime_idle": "3", "max_body_mb": "0.5"}
    with server(tmp_path_factory.mktemp("realtime-limits"), **settings) as base:
        yield base


def test_one_session_at_once_idle_time_out_and_message_size(limited):
    ws_url = limited.replace("http://", "ws://") + "/v1/realtime"

    async def check() -> None:
        async with websockets.connect(ws_url) as first:
            assert json_event(await first.recv())["type"] == "session.created"
            assert json_event(await first.recv())["type"] == "conversation.created"
            async with websockets.connect(ws_url) as second:
                assert json_event(await second.recv())["error"]["code"] == "backend_unavailable"
                with pytest.raises(websockets.ConnectionClosed):
                    await second.recv()
                assert second.close_code == 1013
            # A message over half a MB is refused by name, and the session goes on; the limit is in bytes, so
            # text of fewer characters than that but more bytes (two per "é") is refused too.
            instructions = "é" * (2**18 + 8)
            for event in (
                {"type": "input_audio_buffer.append", "audio": "A" * (2**19 + 8)},
                {"type": "session.update", "session": {"instructions": instructions}},
            ):
                await first.send(json.dumps(event, ensure_ascii=False))
                error = json_event(await first.recv())["error"]
                assert (error["code"], error["param"]) == ("payload_too_large", "message")
                assert error["message"] == "message: larger than 0.5 MB"
            await first.send(json.dumps({"type": "session.update", "session": {"instructions": "Be brief."}}))
            assert json_event(await first.recv())["type"] == "session.updated"
            # Then 3 s of nothing closes it, saying why.
            started = time.monotonic()
            timeout = json_event(await asyncio.wait_for(first.recv(), 30))
            assert timeout["error"]["code"] == "timeout" and 2.5 <= time.monotonic() - started < 30
            with pytest.raises(websockets.ConnectionClosed):
                await first.recv()
            assert first.close_code == 1000

    asyncio.run(check())


def test_a_dropped_connection_stops_its_reply_and_keeps_what_was_sent(limited):
    ws_url = limited.replace("http://", "ws://") + "/v1/realtime?conversation_id=dropped"

    async def talk() -> str:
        async with websockets.connect(ws_url) as socket:
            ask = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Tell me a story."}]}
            await socket.send(json.dumps({"type": "conversation.item.create", "item": ask}))
            await socket.send(json.dumps({"type": "response.create", "response": {"instructions": TALKATIVE}}))
            said = ""
            while (event := json_event(await asyncio.wait_for(socket.recv(), WAIT_S)))["type"] != (
                "response.output_audio.delta"
            ):
                said += event.get("delta", "") if event["type"] == "response.output_audio_transcript.delta" else ""
            return said  # leaving the block drops the connection mid-reply

    async def session_ended() -> None:
        """This server allows one session at once: a new one opens once the dropped one has ended."""
        while True:
            async with websockets.connect(limited.replace("http://", "ws://") + "/v1/realtime") as socket:
                if json_event(await socket.recv())["type"] == "session.created":
                    return
            await asyncio.sleep(0.2)

    said = words(asyncio.run(talk()))
    asyncio.run(asyncio.wait_for(session_ended(), WAIT_S))
    # The exchange was stored with what the reply's sent audio speaks.
    history = stored_history(limited, "dropped", key=None, message="Go on.")
    assert history[0] == {"role": "user", "content": "Tell me a story."}
    kept = words(history[1]["content"])
    assert history[1]["role"] == "assistant" and kept and kept[: len(said)] == said[: len(kept)]


def test_a_key_given_in_the_url_never_reaches_the_log(url, server_dir):
    """Browsers can only give a WebSocket its key in the URL (`?api_key=`): uvicorn's WebSocket lines and each
    request's own line print URLs, and no log line may show a key, right or wrong, on any route."""
    wrong = "not-the-key-but-still-secret-0451"

    async def connect(key: str) -> str:
        ws_url = url.replace("http://", "ws://") + f"/v1/realtime?model=fishvoice&api_key={key}"
        async with websockets.connect(ws_url) as socket:
            return str(json_event(await socket.recv())["type"])

    assert asyncio.run(connect(KEY)) == "session.created"
    assert asyncio.run(connect(wrong)) == "error"
    for key in (KEY, wrong):
        httpx.get(f"{url}/health?api_key={key}", timeout=10)
        httpx.post(f"{url}/runsync?api_key={key}&token={key}", json={"input": {}}, timeout=10)
    time.sleep(0.5)  # the access lines are written
    log = "".join(path.read_text() for path in server_dir.glob("server-*.log"))
    assert "/v1/realtime?model=fishvoice&api_key=[redacted]" in log
    assert "/runsync?api_key=[redacted]&token=[redacted]" in log
    assert KEY not in log and wrong not in log


def test_a_session_asking_for_word_timestamps_gets_them_and_a_cut_keeps_the_words_heard(url):
    """fishvoice's `word_timestamps` session field: each spoken chunk's words come as
    `response.output_audio.words` after its audio; a truncate keeps the words heard by those timings (a
    word once half of it played), in the stored conversation too."""

    async def talk() -> tuple[list[dict], list[dict]]:
        socket_url = url.replace("http://", "ws://") + "/v1/realtime?model=fishvoice&conversation_id=words-cut"
        async with websockets.connect(socket_url, additional_headers={"Authorization": f"Bearer {KEY}"}) as socket:
            update = {"type": "realtime", "word_timestamps": True, "audio": {"input": {"turn_detection": None}}}
            await socket.send(json.dumps({"type": "session.update", "session": update}))
            message = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": TALKATIVE}]}
            await socket.send(json.dumps({"type": "conversation.item.create", "item": message}))
            await socket.send(json.dumps({"type": "response.create"}))
            events = []
            while (event := json.loads(await asyncio.wait_for(socket.recv(), WAIT_S)))["type"] != "response.done":
                assert event["type"] != "error", event
                events.append(event)
            events.append(event)
            timed = [word for e in events if e["type"] == "response.output_audio.words" for word in e["words"]]
            cut = round((timed[2]["end"] + timed[3]["start"]) * 500)  # between the third word and the fourth
            truncate = {"type": "conversation.item.truncate", "item_id": event["response"]["output"][0]["id"]}
            await socket.send(json.dumps({**truncate, "content_index": 0, "audio_end_ms": cut}))
            while (answer := json.loads(await asyncio.wait_for(socket.recv(), WAIT_S)))[
                "type"
            ] != "conversation.item.truncated":
                assert answer["type"] != "error", answer
            return events, timed

    events, timed = asyncio.run(talk())
    kinds = [event["type"] for event in events]
    session = next(e for e in events if e["type"] == "session.updated")["session"]
    assert session["word_timestamps"] is True
    assert kinds.index("response.output_audio.delta") < kinds.index("response.output_audio.words")
    transcript = next(e for e in events if e["type"] == "response.output_audio_transcript.done")["transcript"]
    assert [w["word"] for w in timed] == transcript.replace("*", "").split()
    for before, after in itertools.pairwise(timed):
        assert before["end"] <= after["start"]
    kept = stored_history(url, "words-cut")[1]["content"]
    assert kept.split() == [w["word"] for w in timed[:3]], (kept, timed[:4])
