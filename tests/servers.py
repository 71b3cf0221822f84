"""A real `fishvoice serve` for the tests: started on a free port with FISHVOICE_* settings, and the job
API's waits."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port, stop, wait_for_http

STORY = {
    "message": "Tell me a long story about a robot who learns to paint.",
    "max_tokens": 300,
    "temperature": 0.3,
    "system_message": "You are a storyteller. Write many short sentences.",
}


def start_server(tmp_path: Path, **settings: str) -> tuple[str, subprocess.Popen]:
    """A `fishvoice serve` process with FISHVOICE_<NAME> settings, answering at the returned URL.
    A server with its jobs in Redis gets a Redis prefix of its own unless one is given."""
    port = free_port()
    if "jobs" in settings:
        settings = {"redis_prefix": f"test-{uuid.uuid4().hex[:12]}", **settings}
    env = {
        **os.environ,
        "FISHVOICE_STORE": str(tmp_path / "db.sqlite3"),
        "FISHVOICE_PORT": str(port),
        **{f"FISHVOICE_{name.upper()}": value for name, value in settings.items()},
    }
    with open(tmp_path / f"server-{port}.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "fishvoice", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process)
    except BaseException:
        stop(process)
        raise
    return f"http://127.0.0.1:{port}", process


@contextmanager
def server(tmp_path: Path, **settings: str) -> Iterator[str]:
    """`start_server` for the length of a with-block."""
    base, process = start_server(tmp_path, **settings)
    try:
        yield base
    finally:
        stop(process)


def wait_final(http: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"/status/{job_id}").json()
        if job["status"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"):
            return job
        time.sleep(0.1)
    raise TimeoutError(job_id)


def wait_status(http: httpx.Client, job_id: str, status: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while (job := http.get(f"/status/{job_id}").json())["status"] != status:
        assert time.monotonic() < deadline, f"job never reached {status}: {job}"
        time.sleep(0.02)
    return job


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a /metrics scrape, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(scraped: dict, name: str, **labels: str) -> float:
    """The sum of `name`'s samples that have `labels` (among others)."""
    wanted = set(labels.items())
    return sum(value for (found, has), value in scraped.items() if found == name and wanted <= has)
