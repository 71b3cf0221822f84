"""/metrics, /ready, /live and request tracing on a real `fishvoice serve`: the metrics count what was done,
the probes say why a server cannot take traffic, a trace id follows a job through the JSON logs."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from fishvoice import tracing
from tests.conftest import redis_server, speech_b64, stop
from tests.servers import sample, samples, server, start_server, wait_final

KEY = "operations-test-key-0123456789"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SHORT = {"message": "Say hello.", "max_tokens": 16, "temperature": 0.1}


@pytest.mark.parametrize(
    ("header", "valid"),
    [
        (f"00-{TRACE}-00f067aa0ba902b7-01", True),
        (f"  00-{TRACE}-00f067aa0ba902b7-00 ", True),
        (f"01-{TRACE}-00f067aa0ba902b7-01-future", True),
        (f"00-{TRACE}-00f067aa0ba902b7-01-extra", False),  # version 00 has four fields
        (f"ff-{TRACE}-00f067aa0ba902b7-01", False),
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", False),
        (f"00-{TRACE}-{'0' * 16}-01", False),
        (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", False),
        ("00-abc-def-01", False),
        ("", False),
        (None, False),
    ],
)
def test_traceparent_is_read_as_w3c_defines_it(header, valid):
    assert tracing.trace_id_from(header) == (TRACE if valid else None)


@pytest.mark.model
@pytest.mark.parametrize("processes", ["one", "multiprocess"])
def test_metrics_count_the_requests_jobs_and_speech_of_a_server(tmp_path: Path, speech, monkeypatch, processes):
    if processes == "multiprocess":  # prometheus-client's shared files, as several processes of a server use
        (tmp_path / "metrics").mkdir()
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    wav = base64.b64decode(speech_b64(speech))
    with server(tmp_path, api_key=KEY, metrics_auth="1", log_format="json") as base:
        auth = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=base, timeout=120, headers=auth) as http:
            assert httpx.get(f"{base}/metrics").status_code == 401  # FISHVOICE_METRICS_AUTH: the key is asked
            before = samples(http.get("/metrics").text)
            timed = {**SHORT, "conversation_id": "ops-1", "word_timestamps": True}
            assert http.post("/runsync", json={"input": timed}).json()["status"] == "COMPLETED"
            spoken = {"model": "tts-1", "input": "Two words.", "voice": "default"}
            assert http.post("/v1/audio/speech", json=spoken).status_code == 200
            assert http.post("/v1/tts", json={"text": "Hello.", "format": "wav"}).status_code == 200
            chat = {
                "model": "fishvoice",
                "messages": [{"role": "user", "content": "Say hi."}],
                "modalities": ["text", "audio"],
                "audio": {"voice": "default", "format": "wav"},
                "max_tokens": 16,
            }
            assert http.post("/v1/chat/completions", json=chat).status_code == 200
            heard = http.post("/v1/audio/transcriptions", files={"file": ("q.wav", wav)}, data={"model": "whisper-1"})
            assert heard.status_code == 200
            after = samples(http.get("/metrics").text)

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert grew("fishvoice_jobs_total", outcome="COMPLETED") == 1
    assert grew("fishvoice_job_duration_seconds_count", outcome="COMPLETED") == 1
    assert grew("fishvoice_job_queue_wait_seconds_count") == 1
    assert grew("fishvoice_http_requests_total", route="/runsync", method="POST", code="200") == 1
    assert grew("fishvoice_first_audio_seconds_count", route="job") == 1
    for route in ("/v1/audio/speech", "/v1/tts", "/v1/chat/completions"):
        assert grew("fishvoice_first_audio_seconds_count", route=route) == 1, route
    assert grew("fishvoice_asr_seconds_count", route="/v1/audio/transcriptions") == 1
    assert grew("fishvoice_alignment_seconds_count") >= 1  # the job's words
    assert grew("fishvoice_llm_first_token_seconds_count") == 2  # the job's and the chat's
    assert grew("fishvoice_llm_tokens_per_second_count") == 2
    assert grew("fishvoice_speech_audio_seconds_total", voice="piper") > 0.3
    assert grew("fishvoice_speech_realtime_factor_count", voice="piper") >= 2
    appended = ("fishvoice_store_operation_duration_seconds_count", "conversations", "append_exchange")
    assert grew(appended[0], store=appended[1], backend="SQLiteStore", operation=appended[2]) == 1
    assert sample(after, "fishvoice_job_queue_depth") == 0
    assert sample(after, "fishvoice_job_workers") >= 1
    assert sample(after, "fishvoice_job_store_up") == 1


@pytest.mark.model
def test_a_trace_follows_a_job_through_the_json_logs_and_comes_back_on_the_answer(tmp_path: Path):
    with server(tmp_path, log_format="json", api_key=KEY) as base:
        auth = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=base, timeout=120, headers=auth) as http:
            given = http.post("/run", json={"input": SHORT}, headers={"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"})
            assert given.headers["x-request-id"] == TRACE
            assert given.headers["traceparent"].split("-")[1] == TRACE
            assert "x-generation-id" not in given.headers
            job_id = given.json()["id"]
            assert wait_final(http, job_id)["status"] == "COMPLETED"
            fresh = http.get("/health", headers={"traceparent": "not a traceparent"})
            assert len(fresh.headers["x-request-id"]) == 32 and fresh.headers["x-request-id"] != TRACE
            fish = http.post("/v1/tts", json={"text": "Hi.", "format": "wav"})
            assert fish.status_code == 200 and fish.headers["x-generation-id"] == fish.headers["x-request-id"]
            httpx.get(f"{base}/health?api_key={KEY}")  # a key in a URL: never in a log line
    lines = [json.loads(line) for path in tmp_path.glob("server-*.log") for line in path.read_text().splitlines()]
    traced = [line for line in lines if line.get("trace_id") == TRACE]
    requests = [line for line in traced if line["logger"] == "fishvoice.requests"]
    assert requests and requests[0]["route"] == "/run" and requests[0]["status"] == 200 and "duration_ms" in requests[0]
    ran = [line for line in traced if line.get("job_id") == job_id]
    assert any("COMPLETED" in line["message"] and "duration_ms" in line for line in ran), ran
    assert any(line["logger"] == "fishvoice.assistant" for line in ran)  # the reply's own lines carry it too
    assert all(KEY not in json.dumps(line) for line in lines)
    assert {"time", "level", "logger", "message", "route", "job_id"} <= set(lines[-1])


@pytest.mark.model
def test_ready_says_why_the_server_cannot_take_traffic_while_live_still_answers(tmp_path: Path):
    with redis_server(tmp_path) as redis:
        url, process = start_server(tmp_path, jobs=redis)
        try:
            with httpx.Client(base_url=url, timeout=30) as http:
                assert http.get("/ready").json() == {"status": "ready"}
        except BaseException:
            stop(process)
            raise
    try:  # the job store's Redis is gone
        with httpx.Client(base_url=url, timeout=30) as http:
            unready = http.get("/ready")
            assert unready.status_code == 503
            assert any("job store does not answer" in reason for reason in unready.json()["reasons"]), unready.json()
            assert http.get("/live").json() == {"status": "alive"}
            assert sample(samples(http.get("/metrics").text), "fishvoice_job_store_up") == 0
    finally:
        stop(process)
