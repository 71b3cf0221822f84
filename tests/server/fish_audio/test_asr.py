"""Fish's speech recognition, `POST /v1/asr`, on a real `fishvoice serve` with Whisper: Fish Audio's own SDK
(`fishaudio`) hears Piper's speech back, with and without segments; a multipart form and JSON as well;
bad requests answered in OpenAI's error shape, which the SDK raises as its errors."""

from __future__ import annotations

import base64
import re

import fishaudio
import httpx
import pytest
from fishaudio.exceptions import APIError, AuthenticationError

from fishvoice.audio import encode_bytes
from tests.servers import server

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

KEY = "fish-asr-key"
SAID = {"quick", "brown", "fox", "jumps", "lazy", "dog"}


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with server(tmp_path_factory.mktemp("fish-asr"), api_key=KEY, max_body_mb="2") as base:
        yield base


@pytest.fixture(scope="module")
def wav(speech) -> bytes:
    return encode_bytes(speech, "wav")[0]


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_the_sdk_hears_the_speech_with_its_segments(url, wav, speech):
    client = fishaudio.FishAudio(api_key=KEY, base_url=url)
    result = client.asr.transcribe(audio=wav, language="en")
    assert len(SAID & words(result.text)) >= 5, result.text
    assert result.duration == pytest.approx(speech.duration_s * 1000, abs=50)  # milliseconds, as the SDK reads it
    assert result.segments and " ".join(s.text for s in result.segments).strip() == result.text
    assert all(0 <= s.start < s.end <= speech.duration_s + 0.5 for s in result.segments), result.segments
    bare = client.asr.transcribe(audio=wav, include_timestamps=False)
    assert bare.segments == [] and words(bare.text) & SAID


async def test_the_async_sdk_too(url, wav):
    client = fishaudio.AsyncFishAudio(api_key=KEY, base_url=url)
    result = await client.asr.transcribe(audio=wav)
    assert len(SAID & words(result.text)) >= 5, result.text


def test_a_form_and_json_are_heard_as_well(url, wav):
    headers = {"Authorization": f"Bearer {KEY}"}
    form = httpx.post(
        f"{url}/v1/asr", files={"audio": ("a.wav", wav)}, data={"language": "en"}, headers=headers, timeout=120
    )
    assert form.status_code == 200, form.text
    assert len(SAID & words(form.json()["text"])) >= 5 and form.json()["language"] == "en"
    body = {"audio": base64.b64encode(wav).decode(), "ignore_timestamps": True}
    answer = httpx.post(f"{url}/v1/asr", json=body, headers=headers, timeout=120)
    assert answer.status_code == 200 and answer.json()["segments"] == [], answer.text


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"language": "english"}, 400, "invalid_input", "language"),
        ({"audio": b"not audio at all"}, 400, "invalid_audio", "audio"),
        ({"audio": "text"}, 400, "invalid_audio", "audio"),
        ({}, 400, "invalid_audio", "audio"),
        ({"beam_size": 5}, 400, "invalid_input", "beam_size"),
        ({"ignore_timestamps": "maybe"}, 400, "invalid_input", "ignore_timestamps"),
        ({"audio": b"\0" * (3 * 2**20)}, 413, "payload_too_large", "audio"),
    ],
)
def test_bad_requests_name_their_field(url, wav, body, status, code, param):
    import ormsgpack

    fields = {"audio": wav, **body}
    if not body:
        fields = {}
    reply = httpx.post(
        f"{url}/v1/asr",
        content=ormsgpack.packb(fields),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/msgpack"},
        timeout=60,
    )
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert (error["code"], error["param"]) == (code, param), error


def test_the_sdk_raises_the_servers_errors(url, wav):
    with pytest.raises(AuthenticationError):
        fishaudio.FishAudio(api_key="wrong", base_url=url).asr.transcribe(audio=wav)
    with pytest.raises(APIError) as caught:
        fishaudio.FishAudio(api_key=KEY, base_url=url).asr.transcribe(audio=b"nothing", language="en")
    assert caught.value.status == 400 and "audio" in str(caught.value)
