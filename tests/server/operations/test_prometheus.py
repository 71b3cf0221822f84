"""A real Prometheus (Debian's) scrapes a fleet of two `fishvoice serve` sharing Redis while jobs run; PromQL
through its HTTP API sees what the test did: the jobs ended, their first audio, and one queue for the fleet."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port, stop, wait_for_http
from tests.servers import STORY, start_server, wait_status

pytestmark = pytest.mark.model  # starts servers that load the models

SHORT = {"message": "Say hello.", "max_tokens": 16, "temperature": 0.1}


@pytest.fixture
def prometheus() -> str:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is needed (Debian: apt-get install prometheus; .ci/run installs it)"
    return binary


@pytest.fixture
def fleet(tmp_path: Path, redis_url: str) -> Iterator[list[str]]:
    """Two servers on one Redis, one job at a time each."""
    shared = {"jobs": redis_url, "store": redis_url, "redis_prefix": f"prom-{time.monotonic_ns()}", "concurrency": "1"}
    started = [start_server(tmp_path, **shared) for _ in range(2)]
    try:
        yield [url for url, _ in started]
    finally:
        for _, process in started:
            stop(process)


@pytest.fixture
def scraper(tmp_path: Path, prometheus: str, fleet: list[str]) -> Iterator[httpx.Client]:
    """A Prometheus scraping the fleet every 250 ms; its HTTP API."""
    targets = ", ".join(f'"{url.removeprefix("http://")}"' for url in fleet)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 250ms, scrape_timeout: 200ms}\n"
        f"scrape_configs: [{{job_name: fishvoice, static_configs: [{{targets: [{targets}]}}]}}]\n"
    )
    port = free_port()
    with open(tmp_path / "prometheus.log", "w") as log:
        process = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/-/ready", process, timeout=60)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        stop(process)


def query(prometheus: httpx.Client, promql: str) -> list[dict]:
    answer = prometheus.get("/api/v1/query", params={"query": promql}).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def value(prometheus: httpx.Client, promql: str) -> float | None:
    found = query(prometheus, promql)
    return float(found[0]["value"][1]) if found else None


def eventually(prometheus: httpx.Client, promql: str, expected: float, timeout: float = 30.0) -> None:
    deadline, seen = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if (seen := value(prometheus, promql)) == expected:
            return
        time.sleep(0.25)
    raise AssertionError(f"{promql} = {seen}, expected {expected}")


def test_prometheus_sees_the_jobs_their_first_audio_and_one_queue_for_the_fleet(scraper, fleet):
    eventually(scraper, 'count(up{job="fishvoice"} == 1)', 2)
    first, second = (httpx.Client(base_url=url, timeout=120) for url in fleet)

    # Three short jobs: each ends COMPLETED with its first audio measured.
    done = [first.post("/runsync", json={"input": SHORT}).json() for _ in range(3)]
    assert [job["status"] for job in done] == ["COMPLETED"] * 3
    eventually(scraper, 'sum(fishvoice_jobs_total{outcome="COMPLETED"})', 3)
    eventually(scraper, 'sum(fishvoice_first_audio_seconds_count{route="job"})', 3)
    measured = value(scraper, 'sum(fishvoice_first_audio_seconds_sum{route="job"})')
    reported = sum(job["output"]["timings_ms"]["first_audio"] for job in done) / 1000
    assert measured == pytest.approx(reported, rel=0.25, abs=0.15)

    # Both servers busy, three jobs waiting: every server reports the fleet's queue of three.
    running = [client.post("/run", json={"input": STORY}).json()["id"] for client in (first, second)]
    for job_id in running:
        wait_status(first, job_id, "IN_PROGRESS")
    waiting = [second.post("/run", json={"input": STORY}).json()["id"] for _ in range(3)]
    assert all(first.get(f"/status/{job_id}").json()["status"] == "IN_QUEUE" for job_id in waiting)
    eventually(scraper, "count(fishvoice_job_queue_depth == 3)", 2)
    eventually(scraper, "sum(fishvoice_jobs_running)", 2)

    assert first.post("/purge-queue").json()["removed"] == 3
    for job_id in running:
        assert first.post(f"/cancel/{job_id}").json()["status"] == "CANCELLED"
    eventually(scraper, "max(fishvoice_job_queue_depth)", 0)
    eventually(scraper, 'sum(fishvoice_jobs_total{outcome="CANCELLED"})', 5)
    eventually(scraper, "sum(fishvoice_jobs_running)", 0)

    # The dashboard's queries in the README run as written; those about what these jobs did find data (the Fish
    # engine, realtime sessions and server errors are not part of it).
    for promql in readme_queries():
        found = query(scraper, promql)
        assert found or re.search(r"fish_|realtime|5\.\.", promql), promql


def readme_queries() -> list[str]:
    """The PromQL in the README's dashboard table (one query in backticks per row)."""
    section = (ROOT / "README.md").read_text().split("### Dashboard queries", 1)[1].split("\n## ", 1)[0]
    queries = re.findall(r"^\| [^|]+ \| `(.+?)` \|$", section, re.MULTILINE)
    assert len(queries) >= 6
    return [q.replace("\\|", "|") for q in queries]
