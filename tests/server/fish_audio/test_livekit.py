"""LiveKit's Fish voice (`livekit.plugins.fishaudio.TTS`, the agent framework's own client of `POST /v1/tts`
and `/v1/tts/live`) speaking through a real `fishvoice serve`, outside any LiveKit room: whole and streamed,
its sentences come back as audio the server's recogniser hears. Its URL is a constructor argument."""

from __future__ import annotations

import asyncio

import aiohttp
import fishaudio
import pytest
from livekit.agents import NOT_GIVEN
from livekit.plugins.fishaudio import TTS

from fishvoice.audio import Audio, encode_bytes, from_pcm16
from tests.servers import server
from tests.test_asr import word_error_rate

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

KEY = "livekit-key"
# plain words the recogniser knows ("livekit" was heard as "LifeHit"), both sentences needed to pass
SENTENCES = ["Hello there, this is a voice speaking through the server.", "And a second sentence follows it."]


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with server(tmp_path_factory.mktemp("livekit"), api_key=KEY) as base:
        yield base


def voice(url: str, session: aiohttp.ClientSession, fmt: str = "wav") -> TTS:
    # Its default voice_id is one of Fish's catalogue voices, which a fresh server has not saved.
    return TTS(api_key=KEY, base_url=url, model="s1", voice_id=NOT_GIVEN, output_format=fmt, http_session=session)


async def whole(url: str, text: str, fmt: str) -> Audio:
    """synthesize(): one POST /v1/tts, its file decoded by the plugin into frames."""
    async with aiohttp.ClientSession() as session:
        tts = voice(url, session, fmt)
        try:
            pcm = b"".join([bytes(event.frame.data) async for event in tts.synthesize(text)])
            return Audio(from_pcm16(pcm), tts.sample_rate)
        finally:
            await tts.aclose()


async def streamed(url: str, sentences: list[str]) -> Audio:
    """stream(): text pushed a sentence at a time over /v1/tts/live, the audio read as it comes."""
    async with aiohttp.ClientSession() as session:
        tts = voice(url, session)
        stream = tts.stream()
        try:
            for sentence in sentences:
                stream.push_text(sentence + " ")
            stream.end_input()
            pcm = b"".join([bytes(event.frame.data) async for event in stream])
            return Audio(from_pcm16(pcm), tts.sample_rate)
        finally:
            await stream.aclose()
            await tts.aclose()


def heard(url: str, audio: Audio) -> str:
    assert audio.duration_s > 3, audio.duration_s
    wav = encode_bytes(audio, "wav")[0]
    return fishaudio.FishAudio(api_key=KEY, base_url=url).asr.transcribe(audio=wav, language="en").text


@pytest.mark.parametrize("fmt", ["wav", "pcm", "mp3", "opus"])  # opus: its bitrate in bps (64000)
def test_livekits_fish_voice_speaks_a_whole_text_through_the_server(url, fmt):
    text = heard(url, asyncio.run(whole(url, " ".join(SENTENCES), fmt)))
    assert word_error_rate(" ".join(SENTENCES), text) < 0.3, text  # Piper's voice is drawn anew each time


def test_livekits_fish_voice_streams_sentences_through_the_live_socket(url):
    text = heard(url, asyncio.run(streamed(url, SENTENCES)))
    assert word_error_rate(" ".join(SENTENCES), text) < 0.3, text  # Piper's voice is drawn anew each time
