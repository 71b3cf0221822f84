"""`fishvoice client` against a live server: the files it writes, its modes, speech as the message, its failures."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile

from tests.servers import server

from .conftest import free_port, speech_b64
from .test_asr import SENTENCE, word_error_rate

pytestmark = pytest.mark.model  # loads models (or starts a server that does)


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> Iterator[str]:
    with server(tmp_path_factory.mktemp("client"), api_key="secret") as base:
        yield base


def client(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fishvoice", "client", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "FISHVOICE_LOG_LEVEL": "WARNING"},
    )


def written_reply(out: Path) -> dict[str, Any]:
    """The report the client wrote in `out`, checked against the WAV beside it (44.1 kHz, over 0.5 s)."""
    report: dict[str, Any] = json.loads((out / "response.json").read_text())
    info = soundfile.info(out / "response.wav")
    assert info.samplerate == report["sample_rate"] == 44100
    assert info.duration == pytest.approx(report["duration_s"], abs=0.01) and info.duration > 0.5
    return report


@pytest.mark.parametrize("mode", [[], ["--sync"], ["--stream"]])
def test_client_writes_a_wav_that_decodes_to_the_reported_duration(url, tmp_path, mode):
    done = client(
        "--url",
        url,
        "--api-key",
        "secret",
        "--message",
        "Tell me about the sea.",
        "--max-tokens",
        "40",
        "--output-dir",
        str(tmp_path),
        *mode,
    )
    assert done.returncode == 0, done.stderr
    report = written_reply(tmp_path)
    assert (tmp_path / "response.txt").read_text().strip() == report["text"]
    assert report["audio"] == str(tmp_path / "response.wav")


@pytest.mark.parametrize("mode", [[], ["--stream"]])
def test_client_sends_a_recording_as_the_message_and_writes_what_was_heard_and_the_reply(url, tmp_path, speech, mode):
    """`--user-audio`: a WAV of Piper saying SENTENCE, heard by the server's Whisper and answered."""
    said = tmp_path / "said.wav"
    said.write_bytes(base64.b64decode(speech_b64(speech)))
    out = tmp_path / "out"
    done = client(
        "--url",
        url,
        "--api-key",
        "secret",
        "--user-audio",
        str(said),
        "--max-tokens",
        "24",
        "--output-dir",
        str(out),
        *mode,
    )
    assert done.returncode == 0, done.stderr
    report = written_reply(out)
    heard = report["transcript"]
    assert word_error_rate(SENTENCE, heard["text"]) < 0.15 and heard["language"] == "en"
    assert f"you said: {heard['text']}" in done.stderr
    assert report["text"].strip() and report["text"] in done.stdout
    assert report["history"][0] == {"role": "user", "content": heard["text"]}


def test_client_module_entry_point_and_mp3(url, tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fishvoice.client",
            "--url",
            url,
            "--api-key",
            "secret",
            "--message",
            "Hi",
            "--max-tokens",
            "8",
            "--audio-format",
            "mp3",
            "--output-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "response.mp3").stat().st_size > 1000


def test_client_reports_a_refused_key(url, tmp_path):
    done = client("--url", url, "--api-key", "wrong", "--message", "Hi", "--output-dir", str(tmp_path))
    assert done.returncode == 1 and "unauthorized" in done.stderr


def test_client_reports_an_unreachable_server(tmp_path):
    done = client("--url", f"http://127.0.0.1:{free_port()}", "--message", "Hi", "--output-dir", str(tmp_path))
    assert done.returncode == 1 and "cannot reach" in done.stderr


def test_client_reports_a_failed_job(url, tmp_path):
    done = client(
        "--url", url, "--api-key", "secret", "--message", "Hi", "--temperature", "7", "--output-dir", str(tmp_path)
    )
    assert done.returncode == 1 and "FAILED" in done.stderr and "temperature" in done.stderr
