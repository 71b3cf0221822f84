"""Property-based fuzz (hypothesis) of the handler and of every server route: random JSON, random
bytes as base64 audio, truncated files, huge strings, wrong types. Every case gets a documented
error or a valid reply: no crash, no hang, no 500."""

from __future__ import annotations

import asyncio
import base64
import json
import string

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.servers import server

from .conftest import speech_b64
from .test_handler import RESPONSE_KEYS as REPLY_KEYS

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

CODES = {
    "invalid_input",
    "invalid_audio",
    "payload_too_large",
    "unauthorized",
    "not_found",
    "conflict",
    "cancelled",
    "timeout",
    "backend_unavailable",
    "internal",
}
FIELDS = [
    "message",
    "system_message",
    "system_audio",
    "reference_text",
    "conversation_id",
    "temperature",
    "max_tokens",
    "audio_format",
    "sample_rate",
    "speak",
    "speed",
    "user_audio",
    "voice_id",
    "reference_id",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
audio_values = (
    st.binary(max_size=3000).map(lambda b: base64.b64encode(b).decode())
    | st.text(alphabet=string.ascii_letters + "+/=", max_size=200)
    | st.just("data:audio/wav;base64,UklGRiQAAABXQVZF")
)
plausible = {
    "message": st.text(max_size=60) | st.just("x" * 9000) | st.just("Say hi."),
    "max_tokens": st.integers(-5, 6) | st.just(5000),
    "speak": st.booleans(),
    "speed": st.floats(0, 5) | st.sampled_from([0.25, 4.0, 1]),
    "temperature": st.floats(0, 2) | st.integers(0, 2),
    "audio_format": st.sampled_from(["array", "wav", "flac", "mp3", "opus", "pcm16", "ogg", ""]),
    "sample_rate": st.sampled_from([8000, 16000, 22050, 24000, 44100, 48000, 11025, 0]),
    "conversation_id": st.text(max_size=20) | st.just("fuzz-1"),
    "system_audio": audio_values,
    "user_audio": audio_values,
}
job_inputs = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"message": plausible["message"], "max_tokens": plausible["max_tokens"]},
        optional={k: v for k, v in plausible.items() if k not in ("message", "max_tokens")}
        | {k: json_values for k in FIELDS if k not in plausible},
    ),
    st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=12), json_values, max_size=6),
)


def check_result(result: dict) -> None:
    assert isinstance(result, dict)
    if "error" in result:
        assert result["error_code"] in CODES and isinstance(result["error"], str) and result["error"]
        assert result["error_code"] != "internal", result
    else:
        assert set(result) == REPLY_KEYS


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(job=job_inputs)
def test_handler_answers_any_input_with_a_reply_or_a_documented_error(handler, job):
    result = asyncio.run(asyncio.wait_for(handler({"id": "fuzz", "input": job}), timeout=120))
    check_result(result)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    cut=st.integers(0, 4000),
    noise=st.binary(min_size=0, max_size=64),
    fmt=st.sampled_from(["wav", "flac", "mp3", "opus"]),
)
def test_truncated_and_corrupted_reference_audio_is_refused_or_used(handler, speech, cut, noise, fmt):
    data = base64.b64decode(speech_b64(speech, fmt))
    broken = base64.b64encode(data[:cut] + noise + data[cut + len(noise) :][:cut]).decode()
    result = asyncio.run(
        handler({"id": "fuzz", "input": {"message": "Hi", "max_tokens": 2, "speak": False, "system_audio": broken}})
    )
    check_result(result)
    if "error" in result:
        assert result["field"] == "system_audio"


@pytest.fixture(scope="module", params=["memory", "redis"])
def fuzz_url(request, tmp_path_factory):
    """A server with its jobs in this process, then one with its jobs in Redis."""
    jobs = {} if request.param == "memory" else {"jobs": request.getfixturevalue("redis_url")}
    with server(tmp_path_factory.mktemp("fuzz"), concurrency="2", queue_size="256", api_key="fuzz-key", **jobs) as base:
        yield base


paths = st.sampled_from(
    [
        "/run",
        "/runsync",
        "/status/{id}",
        "/stream/{id}",
        "/cancel/{id}",
        "/purge-queue",
        "/health",
        "/v2/ep/run",
        "/v2/ep/status/{id}",
        "/nope",
        "/v1/realtime/client_secrets",
        "/metrics",
        "/ready",
        "/live",
    ]
)
job_ids = st.text(alphabet=string.ascii_letters + string.digits + "-._~%", max_size=40)
bodies = st.one_of(
    st.binary(max_size=300),
    job_inputs.map(lambda j: json.dumps({"input": j}, allow_nan=True).encode()),
    json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
)
auth = st.sampled_from([None, "Bearer fuzz-key", "Bearer wrong", "Basic abc", "Bearer", ""])


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(path=paths, job_id=job_ids, body=bodies, method=st.sampled_from(["GET", "POST"]), key=auth)
def test_every_route_answers_random_requests_without_a_500(fuzz_url, path, job_id, body, method, key):
    headers = {"Content-Type": "application/json"} | ({"Authorization": key} if key is not None else {})
    url = fuzz_url + path.replace("{id}", job_id or "x")
    if "/runsync" in url:
        url += "?wait=1000"
    reply = httpx.request(method, url, content=body if method == "POST" else None, headers=headers, timeout=60)
    if path == "/ready" and reply.status_code == 503:  # a probe's answer: why it is not ready
        assert reply.json()["reasons"]
        return
    assert reply.status_code < 500, (reply.status_code, reply.text[:300])
    if path in ("/metrics", "/live", "/ready") and reply.status_code == 200:
        return  # Prometheus' text, or the probes' own answers
    payload = reply.json()
    if reply.status_code >= 400 and path.startswith("/v1/"):  # OpenAI's error shape
        assert payload["error"]["code"] in CODES and payload["error"]["message"]
    elif reply.status_code >= 400:
        assert payload["error_code"] in CODES and payload["error"]
    elif payload.get("status") == "FAILED":
        assert payload["output"]["error_code"] in CODES


reference_ids = st.text(max_size=30) | st.sampled_from(["fuzz-voice", "a b", "x" * 129, ""])
form_values = st.text(max_size=40) | reference_ids | st.binary(max_size=2000)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    route=st.sampled_from(
        [
            ("POST", "/v1/references/add"),
            ("GET", "/v1/references/list"),
            ("POST", "/v1/references/update"),
            ("DELETE", "/v1/references/delete"),
        ]
    ),
    fields=st.dictionaries(
        st.sampled_from(["id", "text", "audio", "reference_id", "old_reference_id", "new_reference_id"])
        | st.text(max_size=8),
        form_values,
        max_size=5,
    ),
    shape=st.sampled_from(["multipart", "form", "json", "raw"]),
    raw=st.binary(max_size=300),
    key=auth,
)
def test_reference_routes_answer_random_forms_without_a_500(fuzz_url, speech, route, fields, shape, raw, key):
    method, path = route
    headers = {"Authorization": key} if key is not None else {}
    texts = {k: v for k, v in fields.items() if isinstance(v, str)}
    files = {k: ("f.wav", v) for k, v in fields.items() if isinstance(v, bytes)}
    if shape == "multipart":
        request = {"data": texts, "files": files or {"audio": ("f.wav", base64.b64decode(speech_b64(speech)))}}
    elif shape == "form":
        request = {"data": texts}
    elif shape == "json":
        request = {"json": {k: v if isinstance(v, str) else v.hex() for k, v in fields.items()}}
    else:
        request = {"content": raw, "headers": {"Content-Type": "multipart/form-data; boundary=b"} | headers}
    with httpx.Client(headers=headers, timeout=60) as http:
        reply = http.request(method, fuzz_url + path, **request)
    assert reply.status_code < 500, (reply.status_code, reply.text[:300])
    payload = reply.json()
    if reply.status_code >= 400:
        error = payload["error"]
        assert error["code"] in CODES and error["message"] and set(error) == {"message", "type", "param", "code"}
    else:
        assert payload["success"] is True
