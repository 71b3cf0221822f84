"""`fishvoice serve` through real HTTP on a free port: the job lifecycle, streaming, cancel, limits, auth."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.servers import STORY, server, wait_final, wait_status

pytestmark = pytest.mark.model  # loads models (or starts a server that does)


@pytest.fixture(scope="module", params=["memory", "redis"])
def job_table(request) -> dict[str, str]:
    """Every server test runs against both job tables: in the process, and in Redis."""
    return {} if request.param == "memory" else {"jobs": request.getfixturevalue("redis_url")}


@pytest.fixture(scope="module")
def url(tmp_path_factory, job_table) -> Iterator[str]:
    with server(tmp_path_factory.mktemp("main"), concurrency="1", queue_size="8", **job_table) as base:
        yield base


@pytest.fixture
def http(url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=120) as client:
        yield client


def test_job_lifecycle_run_status_completed(http):
    submitted = http.post(
        "/run", json={"input": {"message": "Say hello.", "max_tokens": 16, "audio_format": "wav"}}
    ).json()
    assert submitted["status"] in ("IN_QUEUE", "IN_PROGRESS") and set(submitted) == {"id", "status"}
    job = wait_final(http, submitted["id"])
    assert job["status"] == "COMPLETED" and job["output"]["text"] and job["output"]["duration_s"] > 0.3
    assert job["delayTime"] >= 0 and job["executionTime"] > 0
    assert job["executionTime"] >= job["output"]["timings_ms"]["total"] - 5


def test_runsync_answers_with_the_output(http):
    job = http.post("/runsync", json={"input": {"message": "Say hi.", "max_tokens": 10, "speak": False}}).json()
    assert job["status"] == "COMPLETED" and job["output"]["audio"] is None


def test_runsync_past_its_wait_answers_in_progress_with_the_id(http):
    job = http.post("/runsync?wait=1000", json={"input": STORY}).json()
    assert job["status"] in ("IN_QUEUE", "IN_PROGRESS") and job["id"]
    assert wait_final(http, job["id"])["status"] == "COMPLETED"


def test_invalid_input_fails_the_job_with_the_documented_error(http):
    job = http.post("/run", json={"input": {"message": "Hi", "max_new_tokens": 5}}).json()
    assert job["status"] == "FAILED"
    assert job["output"] == {
        "error": "max_new_tokens: unknown field; did you mean max_tokens?",
        "error_code": "invalid_input",
        "field": "max_new_tokens",
    }
    assert job["error"] == job["output"]["error"]
    assert http.get(f"/status/{job['id']}").json()["status"] == "FAILED"


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"message": "no input wrapper"}', 400, "input: required"),
        (b"[1, 2]", 400, "input: required"),
    ],
)
def test_malformed_bodies_are_refused_clearly(http, body, status, words):
    reply = http.post("/run", content=body, headers={"Content-Type": "application/json"})
    assert reply.status_code == status and words in reply.json()["error"]


def test_oversized_body_is_refused_with_413(http):
    reply = http.post("/run", content=b'{"input": {"message": "' + b"x" * (26 * 2**20) + b'"}}')
    assert reply.status_code == 413 and reply.json()["error_code"] == "payload_too_large"


def test_unknown_job_is_404(http):
    reply = http.get("/status/no-such-job")
    assert reply.status_code == 404 and reply.json()["error_code"] == "not_found"


def test_stream_delivers_audio_before_the_job_has_finished(http):
    job_id = http.post("/run", json={"input": STORY}).json()["id"]
    events, first_audio_status = [], None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        part = http.get(f"/stream/{job_id}").json()
        for item in part["stream"]:
            events.append(item["output"])
            if item["output"]["type"] == "audio" and first_audio_status is None:
                first_audio_status = part["status"]
        if part["status"] == "COMPLETED" and not part["stream"]:
            break
        time.sleep(0.05)
    assert first_audio_status == "IN_PROGRESS"  # heard while the rest was still being generated
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "done" and kinds.count("audio") >= 2
    assert [e["seq"] for e in events if e["type"] == "audio"] == list(range(kinds.count("audio")))
    assert http.get(f"/stream/{job_id}").json()["stream"] == []  # each event is handed out once


def test_cancel_a_running_job_stops_it_and_stores_nothing(http):
    job_id = http.post("/run", json={"input": {**STORY, "conversation_id": "cancel-run"}}).json()["id"]
    wait_status(http, job_id, "IN_PROGRESS")
    started = time.monotonic()
    assert http.post(f"/cancel/{job_id}").json()["status"] == "CANCELLED"
    assert time.monotonic() - started < 5
    assert http.get("/health").json()["jobs"]["inProgress"] == 0  # the generation stopped, nothing runs on
    job = http.get(f"/status/{job_id}").json()
    assert job["status"] == "CANCELLED" and job["output"]["error_code"] == "cancelled"
    after = http.post(
        "/runsync", json={"input": {"message": "Hi", "conversation_id": "cancel-run", "max_tokens": 5, "speak": False}}
    )
    assert len(after.json()["output"]["history"]) == 2  # only this turn: the cancelled one left no trace


def test_cancel_a_queued_job(http):
    running = http.post("/run", json={"input": STORY}).json()["id"]
    queued = http.post("/run", json={"input": {**STORY, "conversation_id": "cancel-queued"}}).json()["id"]
    assert http.get(f"/status/{queued}").json()["status"] == "IN_QUEUE"  # one job runs at a time here
    assert http.post(f"/cancel/{queued}").json()["status"] == "CANCELLED"
    assert wait_final(http, running)["status"] == "COMPLETED"
    time.sleep(0.3)
    assert http.get(f"/status/{queued}").json()["status"] == "CANCELLED"  # never started after all
    history = http.post(
        "/runsync",
        json={"input": {"message": "Hi", "conversation_id": "cancel-queued", "max_tokens": 5, "speak": False}},
    ).json()["output"]["history"]
    assert len(history) == 2


def test_cancel_of_a_finished_job_changes_nothing(http):
    job = http.post("/runsync", json={"input": {"message": "Hi", "max_tokens": 5, "speak": False}}).json()
    assert http.post(f"/cancel/{job['id']}").json()["status"] == "COMPLETED"


def test_routes_are_served_under_v2_endpoint_id(http):
    job = http.post(
        "/v2/my-endpoint/runsync", json={"input": {"message": "Hi", "max_tokens": 5, "speak": False}}
    ).json()
    assert job["status"] == "COMPLETED"
    assert http.get(f"/v2/my-endpoint/status/{job['id']}").json()["status"] == "COMPLETED"
    assert http.get("/v2/my-endpoint/health").json()["status"] == "ok"


def test_health_reports_jobs_by_state_and_backends(http, job_table):
    http.post("/runsync", json={"input": {"message": "Hi", "max_tokens": 3, "speak": False}})
    http.post("/run", json={"input": {"message": ""}})
    health = http.get("/health").json()
    assert health["backends"] == {
        "llm": "llama_cpp:SmolLM2-135M-Instruct.Q4_1",
        "voice": "piper",
        "store": "SQLiteStore",
        "jobs": "RedisJobTable" if job_table else "MemoryJobTable",
    }
    assert set(health["jobs"]) == {"inQueue", "inProgress", "completed", "failed", "cancelled", "timedOut"}
    assert (
        health["jobs"]["completed"] >= 1
        and health["jobs"]["failed"] >= 1
        and health["workers"]["idle"] + health["workers"]["running"] == 1
    )


def test_full_queue_answers_429_and_jobs_expire_and_time_out(tmp_path, job_table):
    with (
        server(tmp_path, concurrency="1", queue_size="1", job_ttl="2", job_timeout="5", **job_table) as base,
        httpx.Client(base_url=base) as http,
    ):
        long = {**STORY, "max_tokens": 2000, "system_message": "Write an endless story. Never stop."}
        running = http.post("/run", json={"input": long}).json()["id"]
        wait_status(http, running, "IN_PROGRESS")
        started = time.monotonic()
        queued = http.post("/run", json={"input": {"message": "Hi", "max_tokens": 5, "speak": False}}).json()["id"]
        full = http.post("/run", json={"input": {"message": "Hi"}})
        assert full.status_code == 429 and "queue is full" in full.json()["error"]
        timed_out = wait_final(http, running, timeout=90)
        took = f"TIMED_OUT seen {time.monotonic() - started:.1f} s after the 5 s job started"
        assert timed_out["status"] == "TIMED_OUT" and timed_out["output"]["error_code"] == "timeout", took
        assert wait_final(http, queued)["status"] == "COMPLETED"
        time.sleep(3.5)  # past the TTL and one expiry sweep
        assert http.get(f"/status/{queued}").status_code == 404
        assert http.get("/health").json()["jobs"]["completed"] == 0


def test_auth_on_needs_a_key_and_keeps_conversations_apart(tmp_path, job_table):
    with server(tmp_path, api_key="key-one,key-two", **job_table) as base:
        anonymous = httpx.post(f"{base}/runsync", json={"input": {"message": "Hi"}})
        assert anonymous.status_code == 401 and anonymous.json()["error_code"] == "unauthorized"
        wrong = httpx.post(
            f"{base}/runsync", json={"input": {"message": "Hi"}}, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401
        assert httpx.get(f"{base}/health").status_code == 200  # health stays open for probes
        one = httpx.Client(base_url=base, headers={"Authorization": "Bearer key-one"}, timeout=120)
        two = httpx.Client(base_url=base, headers={"Authorization": "Bearer key-two"}, timeout=120)
        turn = {
            "message": "My secret word is pineapple.",
            "conversation_id": "shared-id",
            "max_tokens": 8,
            "speak": False,
        }
        job = one.post("/runsync", json={"input": turn}).json()
        assert job["status"] == "COMPLETED"
        assert two.get(f"/status/{job['id']}").status_code == 404  # another key's job is invisible
        other = two.post("/runsync", json={"input": {**turn, "message": "What is my secret word?"}}).json()["output"]
        assert other["history"][0]["content"] == "What is my secret word?"  # key two started its own
        again = one.post("/runsync", json={"input": {**turn, "message": "Again?"}}).json()["output"]
        assert len(again["history"]) == 4 and again["history"][0]["content"] == "My secret word is pineapple."
        one.close()
        two.close()


def test_auth_off_accepts_calls_without_a_key(http):
    assert (
        http.post("/runsync", json={"input": {"message": "Hi", "max_tokens": 3, "speak": False}}).json()["status"]
        == "COMPLETED"
    )


def test_official_runpod_sdk_runs_a_job_against_our_server(url):
    code = f"""
import runpod
runpod.api_key = "unused-locally"
runpod.endpoint_url_base = "{url}/v2"
endpoint = runpod.Endpoint("fishvoice")
output = endpoint.run_sync({{"message": "Say hello.", "max_tokens": 12, "speak": False}}, timeout=120)
print("TEXT:", output["text"])
job = endpoint.run({{"message": "Say hi.", "max_tokens": 8, "speak": False}})
print("STATUS:", job.output(timeout=120)["text"] != "", job.status())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "TEXT: " in done.stdout and "STATUS: True COMPLETED" in done.stdout
