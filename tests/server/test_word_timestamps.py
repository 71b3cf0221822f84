"""Word timings on every route that speaks, against a real `fishvoice serve` (the Piper voice): the job API
(`word_timestamps`: `words` in the output, a `words` event after a chunk's audio), Fish's
`/v1/tts/stream/with-timestamp` and `/v1/tts/live/with-timestamp`, OpenAI's speech SSE (through the
official client) and Kokoro's `/dev/captioned_speech`. Each route's timings agree with its own audio: in
order, inside it, chunk offsets adding up, the caller's words kept."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time

import httpx
import msgpack
import openai
import pytest
import websockets

from tests.servers import server

pytestmark = pytest.mark.model  # starts a server that loads models

KEY = "words-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXT = "Hello there, friend! It costs $4.50 today. (happy) See you at 3:30 pm."
CALLER_WORDS = ["Hello", "there,", "friend!", "It", "costs", "$4.50", "today.", "See", "you", "at", "3:30", "pm."]
PCM_RATE = 44100


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with server(tmp_path_factory.mktemp("words"), api_key=KEY) as base:
        yield base


@pytest.fixture
def http(url):
    with httpx.Client(base_url=url, headers=AUTH, timeout=120) as client:
        yield client


def in_order_within(words: list[dict], duration: float, start="start", end="end") -> None:
    assert words, "no words"
    for before, after in itertools.pairwise(words):
        assert before[end] <= after[start] + 1e-3, (before, after)
    for word in words:
        assert 0 <= word[start] <= word[end] <= duration + 0.01, (word, duration)


def sse(lines) -> list[dict]:
    return [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]


def test_a_job_asked_for_word_timestamps_answers_with_its_words(http):
    job = {"message": "Say: the quick brown fox jumps.", "max_tokens": 40, "temperature": 0.1, "audio_format": "wav"}
    answer = http.post("/runsync", json={"input": {**job, "word_timestamps": True}}).json()
    output = answer["output"]
    assert "words" in output, answer
    words = output["words"]
    assert [w["word"] for w in words] == output["text"].replace("*", "").split() or len(words) >= 3
    in_order_within(words, output["duration_s"])
    assert words[-1]["end"] > 0.5 * output["duration_s"]
    plain = http.post("/runsync", json={"input": {**job, "max_tokens": 5}}).json()["output"]
    assert "words" not in plain  # only when asked


def test_a_streamed_job_sends_each_chunks_words_after_its_audio(http):
    story = {
        "message": "Tell a short story about a fox.",
        "max_tokens": 120,
        "word_timestamps": True,
        "audio_format": "wav",
    }
    job_id = http.post("/run", json={"input": story}).json()["id"]
    events = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        part = http.get(f"/stream/{job_id}").json()
        events += [item["output"] for item in part["stream"]]
        if part["status"] == "COMPLETED" and not part["stream"]:
            break
        time.sleep(0.05)
    kinds = [event["type"] for event in events]
    assert kinds.count("words") >= 2 and kinds.index("audio") < kinds.index("words")
    streamed = [word for event in events if event["type"] == "words" for word in event["words"]]
    done = events[-1]
    assert done["type"] == "done" and streamed == done["words"]
    in_order_within(streamed, done["duration_s"])


def test_fishs_stream_with_timestamps(http):
    body = {"text": TEXT, "format": "pcm", "sample_rate": PCM_RATE}
    with http.stream("POST", "/v1/tts/stream/with-timestamp", json=body, headers={"model": "s1"}) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        events = sse(reply.iter_lines())
    audio = b"".join(base64.b64decode(event["audio_base64"]) for event in events)
    duration = len(audio) / 2 / PCM_RATE
    words = chunk_words(events, duration)
    assert [w["text"] for w in words] == CALLER_WORDS  # as written: numbers, punctuation; the tag left out
    audio_events = [event for event in events if event["audio_base64"]]
    assert all(event["content"] in TEXT for event in audio_events)


def chunk_words(events: list[dict], duration: float) -> list[dict]:
    """The words of Fish's timed events on the whole audio's timeline, checking that chunk offsets add up."""
    alignments = {event["chunk_seq"]: event for event in events if event["alignment"] is not None}
    assert sorted(alignments) == list(range(len(alignments))) and len(alignments) >= 2
    offset, words = 0.0, []
    for seq in sorted(alignments):
        event = alignments[seq]
        assert event["chunk_audio_offset_sec"] == pytest.approx(offset, abs=0.002)
        segments = event["alignment"]["segments"]
        in_order_within(segments, event["alignment"]["audio_duration"])
        words += [{**s, "start": s["start"] + offset, "end": s["end"] + offset} for s in segments]
        offset += event["alignment"]["audio_duration"]
    assert offset == pytest.approx(duration, abs=0.002)
    in_order_within(words, duration)
    return words


async def live_with_timestamps(url: str, texts: list[str]) -> list[dict]:
    socket_url = url.replace("http://", "ws://") + "/v1/tts/live/with-timestamp"
    async with websockets.connect(socket_url, additional_headers=AUTH) as socket:
        start = {"text": "", "format": "pcm", "sample_rate": PCM_RATE, "latency": "balanced"}
        await socket.send(msgpack.packb({"event": "start", "request": start}))
        for text in texts:
            await socket.send(msgpack.packb({"event": "text", "text": text}))
        await socket.send(msgpack.packb({"event": "stop"}))
        events = []
        while (event := msgpack.unpackb(await asyncio.wait_for(socket.recv(), 60)))["event"] != "finish":
            events.append(event)
    assert event["reason"] == "stop", event
    return events


def test_fishs_live_socket_with_timestamps(url):
    events = asyncio.run(live_with_timestamps(url, ["Hello there, friend! It costs ", "$4.50 today. ", TEXT[43:]]))
    assert all(event["event"] == "audio" for event in events)
    audio = b"".join(event["audio"] for event in events)
    words = chunk_words(events, len(audio) / 2 / PCM_RATE)
    assert [w["text"] for w in words] == CALLER_WORDS


def test_fishs_stream_with_timestamps_at_double_speed_is_half_as_long(http):
    def last_end(speed: float) -> tuple[float, float]:
        body = {"text": "One. Two. Three. Four.", "format": "pcm", "sample_rate": PCM_RATE, "prosody": {"speed": speed}}
        with http.stream("POST", "/v1/tts/stream/with-timestamp", json=body) as reply:
            events = sse(reply.iter_lines())
        audio = b"".join(base64.b64decode(event["audio_base64"]) for event in events)
        last = max((e for e in events if e["alignment"]), key=lambda e: e["chunk_seq"])
        return last["chunk_audio_offset_sec"] + last["alignment"]["segments"][-1]["end"], len(audio) / 2 / PCM_RATE

    slow_end, slow_s = last_end(1.0)
    fast_end, fast_s = last_end(2.0)
    # The voice draws its durations anew each time: each against its own audio.
    assert fast_s == pytest.approx(slow_s / 2, rel=0.2)
    assert fast_end / fast_s == pytest.approx(slow_end / slow_s, abs=0.06)


def test_openai_speech_sse_carries_words_through_the_official_client(url):
    client = openai.OpenAI(api_key=KEY, base_url=f"{url}/v1")
    with client.audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="default",
        input=TEXT,
        response_format="pcm",
        stream_format="sse",
        extra_body={"word_timestamps": True},
    ) as reply:
        events = sse(reply.iter_lines())
    assert events[-1]["type"] == "speech.audio.done"
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    words = [word for event in events for word in event["words"]]
    assert [w["word"] for w in words] == CALLER_WORDS
    in_order_within(words, len(audio) / 2 / 24000)
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.speech.create(model="tts-1", voice="default", input=TEXT, extra_body={"word_timestamps": True})
    assert refused.value.body["param"] == "word_timestamps"


def test_kokoros_captioned_speech_streamed_and_whole(http):
    body = {"model": "kokoro", "input": TEXT, "voice": "default", "response_format": "pcm"}
    with http.stream("POST", "/dev/captioned_speech", json=body) as reply:
        assert reply.status_code == 200
        lines = [json.loads(line) for line in reply.iter_lines() if line.strip()]
    audio = b"".join(base64.b64decode(line["audio"]) for line in lines)
    words = [word for line in lines for word in line["timestamps"]]
    assert [w["word"] for w in words] == CALLER_WORDS
    in_order_within(words, len(audio) / 2 / 24000, start="start_time", end="end_time")
    whole = http.post("/dev/captioned_speech", json={**body, "stream": False}).json()
    assert [w["word"] for w in whole["timestamps"]] == CALLER_WORDS
    assert whole["audio_format"] == "audio/pcm" and len(base64.b64decode(whole["audio"])) > 24000
    untimed = http.post(
        "/dev/captioned_speech", json={"input": "Hi there.", "return_timestamps": False, "stream": False}
    )
    assert untimed.json()["timestamps"] is None
    refused = http.post("/dev/captioned_speech", json={"input": "Hi.", "speed": 9})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "speed"
