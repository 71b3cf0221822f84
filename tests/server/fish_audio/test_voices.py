"""Fish's voice routes under `/model`, on a real `fishvoice serve`, through Fish Audio's own SDK
(`client.voices`): created from recordings, listed (paged, filtered), read, updated and deleted, each in
Fish's Voice shape; the same voices as `/v1/references/*`, usable by `reference_id`; another key sees none
of them; bad forms named by field in OpenAI's error shape."""

from __future__ import annotations

import fishaudio
import httpx
import pytest
from fishaudio.exceptions import APIError, NotFoundError

from fishvoice.audio import encode_bytes
from tests.servers import server

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

KEY, OTHER = "fish-voices-key", "another-key"
SAID = "The quick brown fox jumps over the lazy dog, and then it runs away."


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with server(tmp_path_factory.mktemp("fish-voices"), api_key=f"{KEY},{OTHER}", max_body_mb="4") as base:
        yield base


@pytest.fixture(scope="module")
def wav(speech) -> bytes:
    return encode_bytes(speech, "wav")[0]


def client(url: str, key: str = KEY) -> fishaudio.FishAudio:
    return fishaudio.FishAudio(api_key=key, base_url=url)


def test_a_voice_is_created_listed_read_updated_and_deleted(url, wav):
    voices = client(url).voices
    made = voices.create(
        title="Narrator",
        voices=[wav, wav],
        texts=[SAID, SAID],
        description="calm",
        tags=["calm", "english"],
        visibility="public",
    )
    assert (made.title, made.description, made.tags, made.visibility, made.type) == (
        "Narrator",
        "calm",
        ["calm", "english"],
        "public",
        "tts",
    )
    assert len(made.id) == 32 and [s.text for s in made.samples] == [SAID, SAID] and made.state == "trained"
    other = voices.create(title="Second", voices=[wav])
    listed = voices.list(page_size=10)
    assert listed.total == 2 and [v.id for v in listed.items] == [other.id, made.id]  # newest first
    assert [v.id for v in voices.list(title="narr").items] == [made.id]
    assert [v.id for v in voices.list(tags=["english"]).items] == [made.id]
    assert [v.id for v in voices.list(page_size=1, page_number=2).items] == [made.id]
    assert voices.get(made.id).created_at == made.created_at
    voices.update(made.id, title="Storyteller", tags=["warm"], visibility="private")
    updated = voices.get(made.id)
    assert (updated.title, updated.tags, updated.visibility, updated.description) == (
        "Storyteller",
        ["warm"],
        "private",
        "calm",
    )
    assert updated.updated_at > updated.created_at and [s.text for s in updated.samples] == [SAID, SAID]
    voices.delete(made.id)
    with pytest.raises(NotFoundError):
        voices.get(made.id)
    with pytest.raises(NotFoundError):
        voices.delete(made.id)
    voices.delete(other.id)
    assert voices.list().total == 0


def test_the_same_voices_as_the_references_routes(url, wav):
    headers = {"Authorization": f"Bearer {KEY}"}
    made = client(url).voices.create(title="Shared", voices=[wav], texts=[SAID])
    listed = httpx.get(f"{url}/v1/references/list", headers=headers, timeout=30).json()
    assert made.id in listed["reference_ids"]
    speech = httpx.post(
        f"{url}/v1/tts",
        json={"text": "Spoken in the shared voice.", "reference_id": made.id},
        headers=headers,
        timeout=120,
    )
    assert speech.status_code == 200 and speech.headers["content-type"] == "audio/wav"
    added = httpx.post(
        f"{url}/v1/references/add",
        data={"id": "old-style", "text": SAID},
        files={"audio": ("a.wav", wav)},
        headers=headers,
        timeout=60,
    )
    assert added.status_code == 200, added.text
    old_style = client(url).voices.get("old-style")  # a reference shows its id as its title, its text as a sample
    assert (old_style.title, [s.text for s in old_style.samples]) == ("old-style", [SAID])
    assert client(url, OTHER).voices.list().total == 0  # another key sees none of them
    with pytest.raises(NotFoundError):
        client(url, OTHER).voices.get(made.id)
    for voice_id in (made.id, "old-style"):
        client(url).voices.delete(voice_id)


@pytest.mark.parametrize(
    ("data", "files", "code", "param"),
    [
        ({}, {"voices": b"RIFF"}, "invalid_input", "title"),
        ({"title": "x"}, {}, "invalid_input", "voices"),
        ({"title": "x"}, {"voices": b"not audio"}, "invalid_audio", "voices.0"),
        ({"title": "x", "visibility": "everyone"}, {"voices": "wav"}, "invalid_input", "visibility"),
        ({"title": "x", "type": "svc"}, {"voices": "wav"}, "invalid_input", "type"),
        ({"title": "x", "texts": ["a", "b"]}, {"voices": "wav"}, "invalid_input", "texts"),
        ({"title": "x", "colour": "blue"}, {"voices": "wav"}, "invalid_input", "colour"),
        ({"title": "x", "voices": "text"}, {}, "invalid_audio", "voices"),
    ],
)
def test_a_bad_form_is_named_by_its_field(url, wav, data, files, code, param):
    uploads = [(name, ("a.wav", wav if value == "wav" else value)) for name, value in files.items()]
    reply = httpx.post(
        f"{url}/model", data=data, files=uploads or None, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
    )
    assert reply.status_code in (400, 415), reply.text
    error = reply.json()["error"]
    assert (error["code"], error["param"]) == (code, param), error


def test_the_sdk_raises_the_servers_errors(url, wav):
    with pytest.raises(APIError) as caught:
        client(url).voices.update("no-such-voice", title="x")
    assert caught.value.status == 404
    with pytest.raises(APIError) as caught:
        client(url, "wrong").voices.list()
    assert caught.value.status == 401
