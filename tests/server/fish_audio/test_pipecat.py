"""Pipecat's Fish voice (`FishAudioTTSService`, the agent framework's own client of `/v1/tts/live`) speaking
through a real `fishvoice serve`: its sentences come back as audio the server's recogniser hears. Its URL is
fixed in its constructor, so the test points its `_base_url` at the server."""

from __future__ import annotations

import asyncio
import time

import fishaudio
import pytest
from pipecat.frames.frames import EndFrame, ErrorFrame, Frame, TTSAudioRawFrame, TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.fish.tts import FishAudioTTSService
from pipecat.workers.runner import WorkerRunner

from fishvoice.audio import Audio, encode_bytes, from_pcm16
from tests.servers import server
from tests.test_asr import word_error_rate

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

KEY = "pipecat-key"
RATE = 24000
# plain words the recogniser knows (it heard "pipecat" as "Pike that's"), both sentences needed to pass
SENTENCES = ["Hello there, this is a voice speaking through the server.", "And a second sentence follows it."]


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with server(tmp_path_factory.mktemp("pipecat"), api_key=KEY) as base:
        yield base


class Heard(FrameProcessor):
    """The end of the pipeline: the audio and the errors that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.audio = bytearray()
        self.errors: list[str] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            self.audio += frame.audio
        elif isinstance(frame, ErrorFrame):
            self.errors.append(frame.error)
        await self.push_frame(frame, direction)


async def speak(url: str, sentences: list[str]) -> Heard:
    tts = FishAudioTTSService(api_key=KEY, sample_rate=RATE, settings=FishAudioTTSService.Settings(model="s1"))
    tts._base_url = url.replace("http://", "ws://") + "/v1/tts/live"
    heard = Heard()
    worker = PipelineWorker(Pipeline([tts, heard]), params=PipelineParams(audio_out_sample_rate=RATE))
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)

    async def say() -> None:
        await worker.queue_frames([TTSSpeakFrame(sentence) for sentence in sentences])
        deadline, size = time.monotonic() + 60, -1
        while time.monotonic() < deadline and (size != len(heard.audio) or size <= 0):  # until the audio stops
            size = len(heard.audio)
            await asyncio.sleep(1.0)
        await worker.queue_frame(EndFrame())

    await asyncio.gather(runner.run(), say())
    return heard


def test_pipecats_fish_voice_speaks_through_the_server(url):
    heard = asyncio.run(speak(url, SENTENCES))
    assert heard.errors == []
    audio = Audio(from_pcm16(bytes(heard.audio)), RATE)
    assert audio.duration_s > 3, audio.duration_s
    wav = encode_bytes(audio, "wav")[0]
    text = fishaudio.FishAudio(api_key=KEY, base_url=url).asr.transcribe(audio=wav, language="en").text
    assert word_error_rate(" ".join(SENTENCES), text) < 0.3, text  # Piper's voice is drawn anew each time
