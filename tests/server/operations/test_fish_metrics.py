"""The Fish engine as /metrics shows it, on a server speaking with a tiny checkpoint: its slots, and totals
that add up to the audio it made."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
import soundfile

pytestmark = pytest.mark.model  # starts a server that loads the models

pytest.importorskip("torch", reason="the Fish engine needs the `fish` extra (torch)")

from tests.fish_tiny import write_voice  # noqa: E402
from tests.servers import sample, samples, server  # noqa: E402

HOP = 2048  # samples of 44.1 kHz audio a frame of codes makes


def test_the_fish_engines_totals_add_up_to_the_audio_it_made(tmp_path: Path):
    checkpoint = write_voice(tmp_path / "tiny-s1")
    settings = {"voice": "fish", "fish_checkpoint": str(checkpoint), "fish_device": "cpu", "fish_seed": "1"}
    with server(tmp_path, **settings) as base, httpx.Client(base_url=base, timeout=120) as http:
        before = samples(http.get("/metrics").text)
        answer = http.post("/v1/tts", json={"text": "Hello.", "format": "wav"})
        assert answer.status_code == 200
        after = samples(http.get("/metrics").text)
    made = soundfile.info(io.BytesIO(answer.content)).frames // HOP

    def grew(name: str) -> float:
        return sample(after, name) - sample(before, name)

    assert made >= 2
    # One chunk of text, one request: its frames are the audio's, and the last may be its end, unspoken.
    assert made <= grew("fishvoice_fish_frames_total") <= made + 1
    assert grew("fishvoice_fish_steps_total") >= made - 1  # the prefill makes the first frame
    assert grew("fishvoice_fish_step_seconds_total") > 0 and grew("fishvoice_fish_prefill_seconds_total") > 0
    assert grew("fishvoice_fish_prefill_positions_total") > 0
    assert grew("fishvoice_fish_codec_chunks_total") >= grew("fishvoice_fish_codec_decodes_total") >= 1
    assert grew("fishvoice_fish_out_of_memory_failures_total") == 0
    assert sample(after, "fishvoice_fish_slots") >= 1 and sample(after, "fishvoice_fish_slots_busy") == 0
    assert grew("fishvoice_first_audio_seconds_count") == 1
    assert grew("fishvoice_speech_audio_seconds_total") == pytest.approx(made * HOP / 44100, abs=0.1)
