"""The worker as RunPod runs it: `python handler.py` (local test mode) and RunPod's local test API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from fishvoice.contract import parse_request

from .conftest import ROOT, free_port, stop, wait_for_http

pytestmark = pytest.mark.model  # loads models (or starts a server that does)


def worker_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "FISHVOICE_STORE": str(tmp_path / "db.sqlite3"), **extra}


def test_sample_input_is_valid():
    raw = json.loads((ROOT / "test_input.json").read_text())
    assert parse_request(raw["input"]).message == "Tell me a short story about a robot"


def test_handler_py_runs_a_job_in_local_test_mode(tmp_path):
    job = {"input": {"message": "Say hi.", "max_tokens": 12, "audio_format": "wav", "conversation_id": "local-1"}}
    done = subprocess.run(
        [sys.executable, "handler.py", "--test_input", json.dumps(job)],
        cwd=ROOT,
        env=worker_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "completed successfully" in done.stdout and "'conversation_id': 'local-1'" in done.stdout


def test_handler_py_fails_a_bad_job_with_the_field_named(tmp_path):
    job = {"input": {"message": "Hi", "max_new_tokens": 5}}
    done = subprocess.run(
        [sys.executable, "handler.py", "--test_input", json.dumps(job)],
        cwd=ROOT,
        env=worker_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert "max_new_tokens: unknown field; did you mean max_tokens?" in done.stdout + done.stderr


@pytest.mark.parametrize("streaming", ["0", "1"])
def test_runpod_local_api_serves_the_worker(tmp_path, streaming):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "handler.py", "--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", str(port)],
        cwd=ROOT,
        env=worker_env(tmp_path, FISHVOICE_STREAMING=streaming),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/docs", process)
        reply = httpx.post(
            f"http://127.0.0.1:{port}/runsync", json={"input": {"message": "Say hi.", "max_tokens": 12}}, timeout=120
        )
        body = reply.json()
        assert body["status"] == "COMPLETED"
        if streaming == "1":  # a generator handler: the aggregated events, ending with the whole response
            kinds = [event["type"] for event in body["output"]]
            assert kinds[0] == "text" and "audio" in kinds and kinds[-1] == "done"
        else:
            assert body["output"]["text"] and body["output"]["sample_rate"] == 44100
        bad = httpx.post(
            f"http://127.0.0.1:{port}/runsync", json={"input": {"message": "Hi", "temperature": "hot"}}, timeout=60
        ).json()
        assert "temperature: must be a number" in json.dumps(bad)
    finally:
        stop(process)
