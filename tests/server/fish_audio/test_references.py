"""Saved voices: Fish's /v1/references/* routes through real HTTP (multipart uploads, Fish's bodies,
OpenAI's error shape, one key's voices apart from another's) and a job's `reference_id`."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from fishvoice.audio import Audio, encode_bytes
from fishvoice.voices import load_reference
from tests.conftest import run_job, speech_b64
from tests.servers import server

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

KEYS = "key-one,key-two"


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> Iterator[str]:
    with server(tmp_path_factory.mktemp("references"), concurrency="1", api_key=KEYS) as base:
        yield base


def client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120)


@pytest.fixture
def one(url) -> Iterator[httpx.Client]:
    with client(url, "key-one") as http:
        yield http


@pytest.fixture
def two(url) -> Iterator[httpx.Client]:
    with client(url, "key-two") as http:
        yield http


@pytest.fixture(scope="module")
def wav(speech) -> bytes:
    return encode_bytes(speech, "wav")[0]


def add(http: httpx.Client, voice_id: str, audio: bytes, text: str | None = "The quick brown fox") -> httpx.Response:
    data = {"id": voice_id} | ({"text": text} if text is not None else {})
    return http.post("/v1/references/add", data=data, files={"audio": ("voice.wav", audio, "audio/wav")})


def ids(http: httpx.Client) -> list[str]:
    reply = http.get("/v1/references/list")
    assert reply.status_code == 200, reply.text
    return reply.json()["reference_ids"]


def assert_openai_error(reply: httpx.Response, status: int, code: str, param: str | None) -> dict:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["param"]) == (code, param) and error["message"]
    return error


def test_add_list_rename_delete_in_fish_shapes(one, wav):
    added = add(one, "narrator", wav)
    assert added.status_code == 200
    assert added.json() == {"success": True, "message": "saved voice 'narrator' added", "reference_id": "narrator"}
    listed = one.get("/v1/references/list").json()
    assert listed["success"] is True and "narrator" in listed["reference_ids"] and listed["message"]
    renamed = one.post("/v1/references/update", json={"old_reference_id": "narrator", "new_reference_id": "teller"})
    assert renamed.status_code == 200
    assert renamed.json() == {
        "success": True,
        "message": "saved voice 'narrator' renamed to 'teller'",
        "old_reference_id": "narrator",
        "new_reference_id": "teller",
    }
    assert "teller" in ids(one) and "narrator" not in ids(one)
    deleted = one.request("DELETE", "/v1/references/delete", json={"reference_id": "teller"})
    assert deleted.status_code == 200
    assert deleted.json() == {"success": True, "message": "saved voice 'teller' deleted", "reference_id": "teller"}
    assert "teller" not in ids(one)
    assert_openai_error(
        one.request("DELETE", "/v1/references/delete", json={"reference_id": "teller"}),
        404,
        "not_found",
        "reference_id",
    )


def test_update_and_delete_take_forms_too(one, wav):
    assert add(one, "form-voice", wav, text=None).status_code == 200
    renamed = one.post("/v1/references/update", data={"old_reference_id": "form-voice", "new_reference_id": "form-2"})
    assert renamed.status_code == 200
    assert one.request("DELETE", "/v1/references/delete", params={"reference_id": "form-2"}).status_code == 200


def test_a_taken_id_is_409(one, wav):
    assert add(one, "twice", wav).status_code == 200
    assert_openai_error(add(one, "twice", wav), 409, "conflict", "id")
    assert add(one, "other", wav).status_code == 200
    taken = one.post("/v1/references/update", json={"old_reference_id": "other", "new_reference_id": "twice"})
    assert_openai_error(taken, 409, "conflict", "new_reference_id")
    unknown = one.post("/v1/references/update", json={"old_reference_id": "nobody", "new_reference_id": "x"})
    assert_openai_error(unknown, 404, "not_found", "old_reference_id")
    same = one.post("/v1/references/update", json={"old_reference_id": "other", "new_reference_id": "other"})
    assert_openai_error(same, 400, "invalid_input", "new_reference_id")


def silent_wav() -> bytes:
    return encode_bytes(Audio(np.zeros(44100 * 2, np.float32), 44100), "wav")[0]


@pytest.mark.parametrize(
    ("make", "code", "words"),
    [
        (lambda speech: b"this is not audio at all", "invalid_audio", "not a readable audio file"),
        (lambda speech: silent_wav(), "invalid_audio", "silent"),
        (
            lambda speech: encode_bytes(Audio(speech.samples[: speech.sample_rate // 2], speech.sample_rate), "wav")[0],
            "invalid_audio",
            "at least 1 s",
        ),
        (lambda speech: b"", "invalid_audio", "empty"),
    ],
)
def test_bad_audio_is_refused_naming_audio(one, speech, make, code, words):
    error = assert_openai_error(add(one, "bad-audio", make(speech)), 400, code, "audio")
    assert words in error["message"] and error["type"] == "invalid_request_error"
    assert "bad-audio" not in ids(one)


@pytest.mark.parametrize(
    ("data", "files", "param"),
    [
        ({"text": "hi"}, True, "id"),
        ({"id": "a b"}, True, "id"),
        ({"id": "x" * 129}, True, "id"),
        ({"id": "no-audio"}, False, "audio"),
        ({"id": "long-text", "text": "x" * 2001}, True, "text"),
    ],
)
def test_bad_fields_are_refused_naming_them(one, wav, data, files, param):
    reply = one.post(
        "/v1/references/add", data=data, files={"audio": ("v.wav", wav, "audio/wav")} if files else {"other": b"x"}
    )
    assert_openai_error(reply, 400, "invalid_audio" if param == "audio" else "invalid_input", param)


def test_a_broken_multipart_body_is_an_openai_error(one):
    reply = one.post(
        "/v1/references/add",
        content=b'--xyz\r\nContent-Disposition: form-data; name="id"\r\n\r\nabc',  # never closed
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert reply.status_code == 400 and reply.json()["error"]["code"] in ("invalid_input", "invalid_audio")


def test_without_a_valid_key_every_route_is_401_in_openai_shape(url, wav):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        with httpx.Client(base_url=url, headers=headers, timeout=60) as anon:
            error = assert_openai_error(anon.get("/v1/references/list"), 401, "unauthorized", None)
            assert error["type"] == "authentication_error"
            assert_openai_error(add(anon, "x", wav), 401, "unauthorized", None)
            deleted = anon.request("DELETE", "/v1/references/delete", json={"reference_id": "x"})
            assert_openai_error(deleted, 401, "unauthorized", None)


def test_another_key_can_neither_see_use_rename_nor_delete_a_voice(one, two, wav):
    assert add(one, "private", wav).status_code == 200
    assert "private" not in ids(two)
    renamed = two.post("/v1/references/update", json={"old_reference_id": "private", "new_reference_id": "mine"})
    assert_openai_error(renamed, 404, "not_found", "old_reference_id")
    deleted = two.request("DELETE", "/v1/references/delete", json={"reference_id": "private"})
    assert_openai_error(deleted, 404, "not_found", "reference_id")
    job = two.post(
        "/runsync", json={"input": {"message": "Hi", "reference_id": "private", "max_tokens": 3, "speak": False}}
    ).json()
    assert job["status"] == "FAILED"
    assert (job["output"]["error_code"], job["output"]["field"]) == ("not_found", "reference_id")
    assert add(two, "private", wav).status_code == 200  # its own voice by the same name
    assert "private" in ids(one)


def test_a_job_speaks_in_a_saved_voice_and_the_conversation_keeps_it(one, wav):
    assert add(one, "job-voice", wav).status_code == 200
    job = one.post(
        "/runsync",
        json={
            "input": {"message": "Say hi.", "reference_id": "job-voice", "conversation_id": "saved", "max_tokens": 6}
        },
    ).json()
    assert job["status"] == "COMPLETED", job
    output = job["output"]
    assert output["voice"] == {"backend": "piper", "cloned": False}  # Piper cannot clone: it says so
    assert any("voice cloning needs the fish voice backend" in w for w in output["warnings"])
    later = one.post(
        "/runsync", json={"input": {"message": "Again.", "conversation_id": "saved", "max_tokens": 4}}
    ).json()["output"]
    assert any("voice cloning" in w for w in later["warnings"])  # the conversation kept the voice


def test_a_job_with_reference_id_and_system_audio_is_refused_naming_both(one, wav):
    job = one.post(
        "/runsync",
        json={"input": {"message": "Hi", "reference_id": "job-voice", "system_audio": "UklGRg==", "speak": False}},
    ).json()
    assert job["status"] == "FAILED" and job["output"]["field"] == "reference_id"
    assert "reference_id" in job["error"] and "system_audio" in job["error"]


async def test_the_handler_resolves_reference_id_in_the_store(handler, store, speech):
    voice = load_reference(speech_b64(speech), "The quick brown fox")
    await store.add_saved_voice("", "fox", voice)
    result = await run_job(handler, message="Say hi.", max_tokens=4, reference_id="fox", conversation_id="h-1")
    assert "error" not in result, result
    assert result["voice"] == {"backend": "piper", "cloned": False} and result["warnings"]
    assert (await store.load("", "h-1")).voice_hash == voice.hash
    missing = await run_job(handler, message="Hi", reference_id="nobody", speak=False)
    assert (missing["error_code"], missing["field"]) == ("not_found", "reference_id")
    both = await run_job(handler, message="Hi", reference_id="fox", reference_text="hello", speak=False)
    assert both["field"] == "reference_id" and "reference_text" in both["error"]
