"""The README's Python, JavaScript and cURL examples, run as written against the worker's local API."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from .conftest import ROOT, free_port, stop, wait_for_http

RUNNERS = {"python": [sys.executable], "javascript": ["node", "--input-type=module", "-e"], "curl": ["bash", "-c"]}


def readme_example(name: str) -> str:
    match = re.search(rf"<!-- example: {name} -->\n```\w+\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert match, f"README has no example {name}"
    return match.group(1)


@pytest.fixture(scope="module")
def worker_url(tmp_path_factory):
    port = free_port()
    env = {**os.environ, "FISHVOICE_STORE": str(tmp_path_factory.mktemp("store") / "db.sqlite3")}
    process = subprocess.Popen([sys.executable, "handler.py", "--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", str(port)],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/docs", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


@pytest.mark.parametrize("name", ["curl", "python", "javascript"])
def test_readme_example_runs(worker_url, tmp_path, name):
    if name == "javascript" and shutil.which("node") is None:
        pytest.skip("node is not installed")
    code = readme_example(name)
    command = RUNNERS[name] + ([code] if name != "python" else ["-c", code])
    done = subprocess.run(command, cwd=tmp_path, env={**os.environ, "FISHVOICE_URL": worker_url}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()
    if name in ("curl", "python"):
        assert (tmp_path / "reply.wav").stat().st_size > 10_000
    if name == "python":
        assert "4 turns in the conversation" in done.stdout
    if name == "javascript":
        assert "mp3" in done.stdout
