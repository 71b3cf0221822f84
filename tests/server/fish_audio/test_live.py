"""Fish's streaming TTS, the WebSocket `/v1/tts/live`, on a real `fishvoice serve` (Piper): Fish Audio's own
SDK streams text in and gets audio out while it still writes, heard back by the server's `/v1/asr`; the
protocol's edges by hand (flush, a second start on one socket, unknown events); bad events, hostile frames
and a client gone mid-utterance answered without a hang or anything left held."""

from __future__ import annotations

import asyncio
import io
import re
import threading
import time
from typing import Any

import fishaudio
import httpx
import msgpack
import pytest
import soundfile
import websockets
from fishaudio.exceptions import WebSocketError
from fishaudio.types import FlushEvent, TextEvent

from tests.servers import server

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

KEY = "fish-live-key"
FIRST = "Hello there, this is the first sentence of a streamed reply. "
SECOND = "And here comes the second one, which was written after the first was heard."
FREE_S = 10
FREE_S_SPEAKING = 1.5  # well before 40 sentences' speech could end on its own


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    settings = {"api_key": KEY, "max_body_mb": "2", "realtime_idle": "3"}
    with server(tmp_path_factory.mktemp("fish-live"), **settings) as base:
        yield base


def heard(url: str, wav: bytes) -> set[str]:
    """What the server's recogniser hears in `wav` (through Fish's SDK, as a client would)."""
    text = fishaudio.FishAudio(api_key=KEY, base_url=url).asr.transcribe(audio=wav, language="en").text
    return set(re.findall(r"[a-z]+", text.lower()))


def nothing_held(url: str, within: float = FREE_S, but: str | None = None) -> None:
    """Nothing in use on the server (`but` that count) within `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        held = httpx.get(f"{url}/health", timeout=10).json()["in_use"]
        held.pop(but, None)
        if not any(held.values()):
            return
        assert time.monotonic() < deadline, f"still held: {held}"
        time.sleep(0.1)


def test_the_sdk_streams_text_in_and_audio_out_while_it_writes(url):
    first_audio = threading.Event()
    waited: list[bool] = []

    def writing():
        yield FIRST
        yield FlushEvent()
        waited.append(first_audio.wait(60))  # the rest is written only once the first words are heard
        for word in SECOND.split(" "):
            yield TextEvent(text=word + " ")

    client = fishaudio.FishAudio(api_key=KEY, base_url=url)
    chunks = []
    for chunk in client.tts.stream_websocket(writing(), format="wav", latency="balanced"):
        chunks.append(chunk)
        first_audio.set()
    assert waited == [True]
    wav = b"".join(chunks)
    samples, rate = soundfile.read(io.BytesIO(wav))
    assert rate == 44100 and len(samples) / rate > 4
    words = heard(url, wav)
    assert {"first", "sentence", "second"} <= words, words
    nothing_held(url)


async def test_the_async_sdk_in_mp3(url):
    async def writing():
        for part in ("The quick brown fox ", "jumps over ", "the lazy dog."):
            yield part

    client = fishaudio.AsyncFishAudio(api_key=KEY, base_url=url)
    mp3 = b"".join([chunk async for chunk in client.tts.stream_websocket(writing(), format="mp3")])
    assert mp3[:3] == b"ID3" or mp3[0] == 0xFF
    with soundfile.SoundFile(io.BytesIO(mp3)) as audio:
        wav = io.BytesIO()
        soundfile.write(wav, audio.read(), audio.samplerate, format="WAV")
    assert {"fox", "lazy", "dog"} <= heard(url, wav.getvalue())


# ---- the protocol by hand ----


def socket_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/v1/tts/live"


def pack(event: str, **fields: Any) -> bytes:
    return msgpack.packb({"event": event, **fields})


async def events(socket: Any, until: str = "finish", timeout: float = 60) -> list[dict[str, Any]]:
    """What the server sends, up to its `until` event (included)."""
    seen = []
    while True:
        event = msgpack.unpackb(await asyncio.wait_for(socket.recv(), timeout))
        seen.append(event)
        if event["event"] == until:
            return seen


def connect(url: str, key: str = KEY) -> Any:
    return websockets.connect(socket_url(url), additional_headers={"Authorization": f"Bearer {key}", "model": "s1"})


async def test_two_utterances_on_one_socket_and_unknown_events_ignored(url):
    async with connect(url) as socket:
        for text in ("One small sentence.", "Another one."):
            await socket.send(pack("start", request={"text": "", "format": "pcm", "sample_rate": 16000}))
            await socket.send(pack("ping", data=1))  # not Fish's: ignored
            await socket.send(pack("text", text=text))
            await socket.send(pack("stop"))
            seen = await events(socket)
            audio = b"".join(event["audio"] for event in seen if event["event"] == "audio")
            assert seen[-1] == {"event": "finish", "reason": "stop"}
            assert len(audio) > 16000  # over half a second of 16-bit samples at 16 kHz
    nothing_held(url)


@pytest.mark.parametrize(
    ("sent", "field"),
    [
        ([pack("text", text="Hello.")], "event"),
        ([pack("start", request={"text": "", "format": "xml"})], "request.format"),
        ([pack("start", request={"text": "", "temperature": 3})], "request.temperature"),
        ([pack("start", request={"text": "", "colour": "blue"})], "request.colour"),
        ([pack("start", request="fast")], "request"),
        ([pack("start", request={"text": "", "reference_id": "nobody"})], "reference_id"),
        ([pack("start", request={"text": ""}), pack("text", text=7)], "text"),
        ([pack("start", request={"text": ""}), pack("start", request={"text": ""})], "event"),
        ([b"\xc1 not msgpack"], "message"),
        ([msgpack.packb([1, 2, 3])], "message"),
        ([pack("start", request={"text": ""}), pack("text", text="x" * (3 * 2**20))], "message"),
    ],
)
async def test_a_bad_event_finishes_with_an_error_naming_the_field(url, sent, field):
    async with connect(url) as socket:
        for frame in sent:
            await socket.send(frame)
        finish = (await events(socket))[-1]
        assert finish["reason"] == "error" and finish["field"] == field, finish
        assert finish["message"].startswith(f"{field}: "), finish
        # the socket goes on: a good utterance after the bad event
        await socket.send(pack("start", request={"text": "Still here.", "format": "wav"}))
        await socket.send(pack("stop"))
        assert (await events(socket))[-1] == {"event": "finish", "reason": "stop"}
    nothing_held(url)


async def test_a_wrong_key_is_told_and_the_socket_closed(url):
    async with connect(url, key="wrong") as socket:
        finish = msgpack.unpackb(await asyncio.wait_for(socket.recv(), 10))
        assert (finish["reason"], finish["code"]) == ("error", "unauthorized")
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(socket.recv(), 10)
        assert socket.close_code == 1008


def test_the_sdk_raises_on_an_error_finish(url):
    client = fishaudio.FishAudio(api_key=KEY, base_url=url)
    with pytest.raises(WebSocketError):
        list(client.tts.stream_websocket(iter(["Hello."]), reference_id="nobody"))


async def test_a_client_gone_mid_utterance_leaves_nothing_speaking(url):
    long_text = " ".join(f"This is sentence number {n} of a long text that nobody will hear." for n in range(40))
    async with connect(url) as socket:
        await socket.send(pack("start", request={"text": "", "format": "wav"}))
        await socket.send(pack("text", text=long_text))
        await socket.send(pack("stop"))
        assert (await events(socket, until="audio"))[-1]["audio"]
    nothing_held(url)  # the speaking stopped with the socket, well before the text's minutes of speech


async def test_a_bad_event_while_speaking_stops_the_speech_and_the_socket_goes_on(url):
    long_text = " ".join(f"This is sentence number {n} of a long text cut short." for n in range(40))
    async with connect(url) as socket:
        await socket.send(pack("start", request={"text": "", "format": "pcm"}))
        await socket.send(pack("text", text=long_text))
        assert (await events(socket, until="audio"))[-1]["audio"]  # speaking now
        await socket.send(pack("text", text=7))
        finish = (await events(socket))[-1]
        assert (finish["reason"], finish["field"]) == ("error", "text")
        nothing_held(url, FREE_S_SPEAKING, but="tts_live_sockets")  # stopped with the error, the socket open
        await socket.send(pack("start", request={"text": "Still here.", "format": "pcm"}))
        await socket.send(pack("stop"))
        assert (await events(socket))[-1] == {"event": "finish", "reason": "stop"}


async def test_an_idle_socket_is_closed(url):
    async with connect(url) as socket:
        await socket.send(pack("start", request={"text": "", "format": "wav"}))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(socket.recv(), 15)  # the server's idle limit here is 3 s
        assert socket.close_code == 1000
    nothing_held(url)
