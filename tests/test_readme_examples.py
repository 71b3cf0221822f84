"""The README's Python, JavaScript and cURL examples, run as written against `fishvoice serve`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
import soundfile

from fishvoice.audio import decode_audio
from tests.servers import server

from .conftest import ROOT

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

RUNNERS = {
    "python": [sys.executable, "-c"],
    "python-stream": [sys.executable, "-c"],
    "javascript": ["node", "--input-type=module", "-e"],
    "curl": ["bash", "-c"],
    "fish-python": [sys.executable, "-c"],
    "fish-curl": ["bash", "-c"],
    "fish-sdk": [sys.executable, "-c"],
    "fish-voices": [sys.executable, "-c"],
    "openai": [sys.executable, "-c"],
    "openai-chat": [sys.executable, "-c"],
    "openai-realtime": [sys.executable, "-c"],
    "curl-openai": ["bash", "-c"],
    "curl-voices": ["bash", "-c"],
    "timestamps": [sys.executable, "-c"],
    "agent-tool": [sys.executable, "-c"],
}
REPLY_FILES = {"fish-curl": "reply.mp3"}


def readme_example(name: str) -> str:
    match = re.search(rf"<!-- example: {name} -->\n```\w+\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert match, f"README has no example {name}"
    return match.group(1)


@pytest.fixture(scope="module")
def worker_url(tmp_path_factory):
    with server(tmp_path_factory.mktemp("examples")) as base:
        yield base


@pytest.mark.parametrize("name", list(RUNNERS))
def test_readme_example_runs(worker_url, tmp_path, name, speech):
    if name == "javascript" and shutil.which("node") is None:
        pytest.skip("node is not installed")
    if name == "fish-voices":  # the recording it reads, as the example before it leaves one
        soundfile.write(tmp_path / "reply.wav", speech.samples, speech.sample_rate)
    done = subprocess.run(
        RUNNERS[name] + [readme_example(name)],
        cwd=tmp_path,
        env={**os.environ, "FISHVOICE_URL": worker_url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()
    if name == "openai-chat":
        assert decode_audio((tmp_path / "reply.wav").read_bytes(), "reply", 60).duration_s > 0.5
    if name == "curl-openai":
        assert decode_audio((tmp_path / "reply.mp3").read_bytes(), "reply", 60).duration_s > 0.5
        assert '"id":"fishvoice"' in done.stdout.replace(" ", "")
    elif name not in ("javascript", "agent-tool"):
        assert soundfile.info(tmp_path / REPLY_FILES.get(name, "reply.wav")).duration > 0.5
    if name == "python":
        assert "4 turns in the conversation" in done.stdout
    if name == "curl-voices":  # added, listed, used by the job, renamed, deleted: each answered with success
        assert done.stdout.count('"success":true') == 4 and '"reference_ids":["narrator"]' in done.stdout
        assert "'backend': 'piper'" in done.stdout
    if name == "python-stream":
        assert "sentence 0:" in done.stdout and soundfile.info(tmp_path / "reply.wav").samplerate == 24000
    if name == "javascript":
        assert "mp3" in done.stdout
    if name == "fish-python":
        assert done.stdout.startswith("audio/wav []") and soundfile.info(tmp_path / "reply.wav").samplerate == 44100
    if name == "fish-curl":
        assert done.stdout.strip() == "200 audio/mpeg"
    if name == "fish-voices":
        assert done.stdout.strip().endswith("Narrator ['Narrator']"), done.stdout
    if name == "timestamps":
        assert re.findall(r"[\d.]+ (\S+)", done.stdout) == ["Hello", "there,", "friend!", "It", "is", "3:30."]
    if name == "fish-sdk":
        assert {"live", "spoken", "written"} <= set(re.findall(r"[a-z]+", done.stdout.lower())), done.stdout
    if name == "agent-tool":  # the tool ran, and an answer was spoken
        assert "get_weather returned: Sunny in Paris" in done.stdout and re.search(r"said \(\d", done.stdout), (
            done.stdout
        )
    if name == "openai":
        assert "'fishvoice'" in done.stdout and soundfile.info(tmp_path / "reply.wav").samplerate == 24000


def test_every_setting_is_in_the_readme():
    from fishvoice.config import Settings

    readme = (ROOT / "README.md").read_text()
    assert [name for name in Settings.model_fields if f"`FISHVOICE_{name.upper()}`" not in readme] == []
