"""`fishvoice client` against a live server: the files it writes, its modes, its failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import soundfile

from .conftest import free_port
from .test_server import server


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
    report = json.loads((tmp_path / "response.json").read_text())
    info = soundfile.info(tmp_path / "response.wav")
    assert info.samplerate == report["sample_rate"] == 44100
    assert info.duration == pytest.approx(report["duration_s"], abs=0.01) and info.duration > 0.5
    assert (tmp_path / "response.txt").read_text().strip() == report["text"]
    assert report["audio"] == str(tmp_path / "response.wav")


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
