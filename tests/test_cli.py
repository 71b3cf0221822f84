"""The `fishvoice` command: `say` writes speech; `chat` holds a conversation in the terminal."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import soundfile

from fishvoice.audio import decode_audio

from .conftest import free_port

pytestmark = pytest.mark.model  # loads models (or starts a server that does)


def fishvoice(*args: str, stdin: str | None = None, cwd=None, env=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fishvoice", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def test_say_writes_a_wav_at_the_requested_rate(tmp_path):
    out = tmp_path / "hello.wav"
    done = fishvoice("say", "Hello from fishvoice. This is a test.", "-o", str(out), "--sample-rate", "16000")
    assert done.returncode == 0, done.stderr
    samples, rate = soundfile.read(out)
    assert rate == 16000 and 1.5 < len(samples) / rate < 5


def test_say_writes_mp3(tmp_path):
    out = tmp_path / "hello.mp3"
    assert fishvoice("say", "Hello.", "-o", str(out)).returncode == 0
    assert decode_audio(out.read_bytes(), "file", 60).duration_s > 0.3


def test_say_speed_two_halves_the_length(tmp_path):
    text = "The quick brown fox jumps over the lazy dog."
    normal, fast = tmp_path / "normal.wav", tmp_path / "fast.wav"
    assert fishvoice("say", text, "-o", str(normal)).returncode == 0
    done = fishvoice("say", text, "-o", str(fast), "--speed", "2")
    assert done.returncode == 0, done.stderr
    ratio = soundfile.info(fast).duration / soundfile.info(normal).duration
    assert 0.45 < ratio < 0.56


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["say", "hi", "-o", "x.txt"], "extension"),
        (["say", "  ", "-o", "x.wav"], "empty"),
        (["say", "hi", "--speed", "5"], "between 0.25 and 4.0"),
    ],
)
def test_say_refuses_bad_arguments_with_exit_status_2(tmp_path, args, words):
    done = fishvoice(*args, cwd=tmp_path)
    assert done.returncode == 2 and words in done.stderr


def test_chat_holds_a_conversation_and_writes_each_reply(tmp_path):
    done = fishvoice(
        "chat",
        "--output-dir",
        str(tmp_path / "replies"),
        "--max-tokens",
        "16",
        "--conversation-id",
        "cli-1",
        stdin="Hello there.\nWhat did I just say?\n/quit\n",
        env={"FISHVOICE_STORE": str(tmp_path / "db.sqlite3")},
    )
    assert done.returncode == 0, done.stderr
    replies = sorted((tmp_path / "replies").glob("reply-*.wav"))
    assert [p.name for p in replies] == ["reply-001.wav", "reply-002.wav"]
    assert all(soundfile.info(p).duration > 0.2 for p in replies)
    assert done.stdout.count("assistant> ") == 2


def test_a_bad_setting_is_named_and_exits_2():
    done = fishvoice("serve", env={"FISHVOICE_JOBS": "postgres://db/0"})
    assert done.returncode == 2 and "FISHVOICE_JOBS" in done.stderr and "Traceback" not in done.stderr


def test_serve_with_an_unreachable_job_redis_exits_with_the_reason(tmp_path):
    done = fishvoice(
        "serve",
        env={
            "FISHVOICE_JOBS": f"redis://127.0.0.1:{free_port()}/0",
            "FISHVOICE_PORT": str(free_port()),
            "FISHVOICE_STORE": str(tmp_path / "db.sqlite3"),
        },
    )
    assert done.returncode != 0 and "the job store failed" in done.stderr
