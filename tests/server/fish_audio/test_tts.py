"""Fish's TTS route, `POST /v1/tts`, on a real `fishvoice serve`: MessagePack and JSON clients as
fish-speech's and Fish Audio's send them, every format whole and streamed and decoded back, inline
voices with Piper and with the fish voice, and bad requests answered in OpenAI's error shape."""

from __future__ import annotations

import base64
import io
import json

import av
import httpx
import msgpack
import numpy as np
import pytest
import soundfile
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fishvoice.asr.whisper import WhisperASR
from fishvoice.audio import Audio
from tests.conftest import speech_b64
from tests.servers import server
from tests.test_asr import word_error_rate
from tests.test_fuzz import CODES

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

KEY = "fish-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXT = "Hello there. This is a test of the fish route."
RATES = {"wav": 44100, "pcm": 44100, "mp3": 44100, "opus": 48000}


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with server(tmp_path_factory.mktemp("fish-api"), api_key=KEY, max_body_mb="2", concurrency="2") as base:
        yield base


def post_msgpack(url: str, fields: dict, headers: dict | None = None, **kwargs) -> httpx.Response:
    """As fish-speech's client and Fish Audio's SDK send it: the fields packed, bytes as bytes."""
    return httpx.post(
        f"{url}/v1/tts",
        content=msgpack.packb(fields),
        headers={"Content-Type": "application/msgpack", **AUTH, **(headers or {})},
        timeout=120,
        **kwargs,
    )


def decode(data: bytes, fmt: str, rate: int) -> Audio:
    """The answer decoded back: raw 16-bit samples for pcm, else through FFmpeg (PyAV)."""
    if fmt == "pcm":
        return Audio(np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767, rate)
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(stream)])
        return Audio(samples.astype(np.float32), int(stream.rate))


def assert_error(reply: httpx.Response, status: int, code: str, param: str | None) -> dict:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["param"]) == (code, param), error
    return error


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("fmt", ["wav", "pcm", "mp3", "opus"])
def test_msgpack_client_gets_every_format_whole_and_streamed(url, fmt, streaming):
    reply = post_msgpack(url, {"text": TEXT, "format": fmt, "streaming": streaming})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == {"wav": "audio/wav", "pcm": "audio/pcm", "mp3": "audio/mpeg"}.get(
        fmt, "audio/ogg"
    )
    if streaming:
        assert reply.headers.get("transfer-encoding") == "chunked" and "content-length" not in reply.headers
    audio = decode(reply.content, fmt, RATES[fmt])
    assert audio.sample_rate == RATES[fmt]  # 44.1 kHz as fish-speech answers; Ogg Opus is 48 kHz
    assert 1.5 < audio.duration_s < 8 and np.abs(audio.samples).max() > 0.05
    if fmt == "wav" and streaming:  # a header of unknown length: libsndfile reads it too
        samples, rate = soundfile.read(io.BytesIO(reply.content))
        assert rate == 44100 and len(samples) == pytest.approx(audio.duration_s * 44100, abs=1)


def test_streamed_audio_arrives_sentence_by_sentence(url):
    fields = {"text": "One sentence here. Another one follows. And a third.", "format": "pcm", "streaming": True}
    with httpx.stream(
        "POST",
        f"{url}/v1/tts",
        content=msgpack.packb(fields),
        headers={"Content-Type": "application/msgpack", **AUTH},
        timeout=120,
    ) as reply:
        chunks = [chunk for chunk in reply.iter_raw() if chunk]
    assert reply.status_code == 200 and len(chunks) >= 3
    # The whole text spoken: heard back, as lengths cannot tell (Piper draws a pause now and then, 16% longer).
    samples = np.frombuffer(b"".join(chunks), "<i2").astype(np.float32) / 32768
    heard = WhisperASR().transcribe(Audio(samples, RATES["pcm"]), language="en").text
    assert word_error_rate(fields["text"], heard) < 0.3, heard


def test_sample_rate_and_bitrate_are_applied(url):
    reply = post_msgpack(url, {"text": TEXT, "format": "mp3", "sample_rate": 24000, "mp3_bitrate": 64})
    audio = decode(reply.content, "mp3", 24000)
    assert audio.sample_rate == 24000
    assert len(reply.content) * 8 / audio.duration_s == pytest.approx(64000, rel=0.2)
    pcm = post_msgpack(url, {"text": TEXT, "format": "pcm", "sample_rate": 16000}).content
    # Piper varies, by a long pause now and then (16% longer); a rate not applied would be 1.5x or more.
    assert len(pcm) / 2 / 16000 == pytest.approx(audio.duration_s, rel=0.25)


def test_opus_bitrate_is_taken_in_kbps_or_bps(url):
    """Fish's SDK sends kbps (24), LiveKit's plugin bps (24000), as Fish's API now documents it."""
    low, low_bps, high_bps = (
        post_msgpack(url, {"text": TEXT, "format": "opus", "opus_bitrate": n}) for n in (24, 24000, 64000)
    )
    assert low_bps.status_code == high_bps.status_code == 200, high_bps.text
    # Bits a second of audio: the voice draws its durations anew each time, so the files' lengths differ.
    low_rate, low_bps_rate, high_rate = (
        len(reply.content) * 8 / decode(reply.content, "opus", 48000).duration_s for reply in (low, low_bps, high_bps)
    )
    assert low_bps_rate == pytest.approx(low_rate, rel=0.15)
    assert high_rate > 1.5 * low_bps_rate


def test_json_client_with_a_base64_reference_is_answered_in_the_default_voice_with_a_warning(url, speech):
    fields = {"text": TEXT, "references": [{"audio": speech_b64(speech, "flac"), "text": "The quick brown fox"}]}
    reply = httpx.post(f"{url}/v1/tts", json=fields, headers=AUTH, timeout=120)
    assert reply.status_code == 200, reply.text
    assert reply.headers.get_list("x-fishvoice-warning") == [
        "voice cloning needs the fish voice backend; the default piper voice was used"
    ]
    assert decode(reply.content, "wav", 44100).duration_s > 1.5


def test_sdk_style_request_with_every_default_sent_works_and_names_what_piper_ignores(url):
    """Fish Audio's SDK packs its whole request model (defaults included) with ormsgpack."""
    ormsgpack = pytest.importorskip("ormsgpack")
    fields = {
        "text": TEXT,
        "chunk_length": 200,
        "format": "mp3",
        "mp3_bitrate": 128,
        "opus_bitrate": 32,
        "references": [],
        "normalize": True,
        "latency": "balanced",
        "prosody": {"speed": 1.0, "volume": 0.0},
        "top_p": 0.7,
        "temperature": 0.7,
        "max_new_tokens": 1024,
        "repetition_penalty": 1.2,
        "min_chunk_length": 50,
        "condition_on_previous_chunks": True,
        "early_stop_threshold": 1.0,
    }
    reply = httpx.post(
        f"{url}/v1/tts",
        content=ormsgpack.packb(fields),
        headers={"Content-Type": "application/msgpack", "model": "s1", **AUTH},
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers.get_list("x-fishvoice-warning") == [
        "temperature, top_p, repetition_penalty: the piper voice does not use this; ignored",
        "model 's1': answered by the server's piper voice",
    ]
    assert decode(reply.content, "mp3", 44100).duration_s > 1.5


def test_prosody_volume_is_applied_in_decibels(url):
    loud = decode(post_msgpack(url, {"text": TEXT, "format": "pcm"}).content, "pcm", 44100)
    quiet = decode(post_msgpack(url, {"text": TEXT, "format": "pcm", "prosody": {"volume": -12}}).content, "pcm", 44100)
    assert np.abs(quiet.samples).max() / np.abs(loud.samples).max() == pytest.approx(10 ** (-12 / 20), rel=0.05)


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"text": "   "}, "text", "must not be empty"),
        ({"text": "Hi", "format": "flac"}, "format", "must be one of wav, pcm, mp3, opus"),
        ({"text": "Hi", "sample_rate": 11025}, "sample_rate", "must be one of"),
        ({"text": "Hi", "format": "opus", "sample_rate": 24000}, "sample_rate", "48000 Hz"),
        ({"text": "Hi", "temperature": 1.5}, "temperature", "at most 1.0"),
        ({"text": "Hi", "streaming": "yes"}, "streaming", "must be a boolean"),
        ({"text": "Hi", "referense_id": "x"}, "referense_id", "did you mean reference_id?"),
        ({"text": "Hi", "references": [{"audio": b"RIFF"}]}, "references.0.text", "required"),
        (
            {"text": "Hi", "references": [{"audio": b"x" * 100, "text": "x"}], "reference_id": "v"},
            "reference_id",
            "not both",
        ),
        ({"text": "Hi", "message": "Hi"}, "message", "unknown field"),
        ({}, "text", "required"),
        ({"text": "Hi", "reference_id": []}, "reference_id", "at least 1"),
        ({"text": "Hi", "references": [[]]}, "references.0", "at least 1"),
        ({"text": "Hi", "references": [[{"audio": b"RIFF"}]]}, "references.0.0.text", "required"),
    ],
)
def test_bad_fields_are_refused_in_openais_shape_naming_the_field(url, fields, param, words):
    error = assert_error(post_msgpack(url, fields), 400, "invalid_input", param)
    assert words in error["message"] and error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("audio", "code", "words"),
    [
        (b"this is not audio at all" * 20, "invalid_audio", "not a readable audio file"),
        (b"", "invalid_audio", "empty audio"),
        ("not base64!", "invalid_audio", "not valid base64"),
    ],
)
def test_a_reference_that_is_not_audio_is_refused_naming_it(url, audio, code, words):
    error = assert_error(
        post_msgpack(url, {"text": "Hi", "references": [{"audio": audio, "text": "hi"}]}),
        400,
        code,
        "references.0.audio",
    )
    assert words in error["message"]


def test_a_silent_or_short_reference_is_refused(url):
    silent = Audio(np.zeros(44100 * 2, np.float32), 44100)
    short = Audio((0.3 * np.sin(np.arange(4410) / 5)).astype(np.float32), 44100)
    for audio, words in ((silent, "silent"), (short, "at least 1 s")):
        fields = {"text": "Hi", "references": [{"audio": base64.b64decode(speech_b64(audio)), "text": "x"}]}
        assert words in assert_error(post_msgpack(url, fields), 400, "invalid_audio", "references.0.audio")["message"]


def test_broken_bodies_and_missing_keys_are_refused_in_openais_shape(url):
    assert_error(
        post_msgpack(url, {"text": "Hi"}, headers={"Authorization": "Bearer wrong"}), 401, "unauthorized", None
    )
    no_key = httpx.post(f"{url}/v1/tts", json={"text": "Hi"}, timeout=30)
    assert assert_error(no_key, 401, "unauthorized", None) and no_key.json()["error"]["type"] == "authentication_error"
    bad = httpx.post(
        f"{url}/v1/tts", content=b"\xc1\xff\x00", headers={"Content-Type": "application/msgpack", **AUTH}, timeout=30
    )
    assert "not valid MessagePack" in assert_error(bad, 400, "invalid_input", "body")["message"]
    truncated = msgpack.packb({"text": "Hello"})[:-2]
    bad = httpx.post(f"{url}/v1/tts", content=truncated, headers={"Content-Type": "application/msgpack", **AUTH})
    assert_error(bad, 400, "invalid_input", "body")
    bad = httpx.post(f"{url}/v1/tts", content=b"{nope", headers={"Content-Type": "application/json", **AUTH})
    assert "not valid JSON" in assert_error(bad, 400, "invalid_input", "body")["message"]
    assert_error(post_msgpack(url, ["text", "Hi"]), 400, "invalid_input", "body")
    huge = {"text": "Hi", "references": [{"audio": b"\x00" * (3 * 2**20), "text": "x"}]}
    error = assert_error(post_msgpack(url, huge), 413, "payload_too_large", "body")
    assert "larger than 2 MB" in error["message"]


def test_reference_id_is_checked_before_any_store(url):
    assert_error(post_msgpack(url, {"text": "Hi", "reference_id": ""}), 400, "invalid_input", "reference_id")
    assert_error(post_msgpack(url, {"text": "Hi", "reference_id": 7}), 400, "invalid_input", "reference_id")


# The fish voice on the tiny checkpoint the fish tests build: cloning and sampling through the route.


@pytest.fixture(scope="module")
def fish_url(tmp_path_factory):
    pytest.importorskip("torch", reason="the fish voice needs the `fish` extra (torch)")
    from tests.fish_tiny import write_voice

    checkpoint = write_voice(tmp_path_factory.mktemp("fish") / "tiny-s1")
    settings = {"voice": "fish", "fish_checkpoint": str(checkpoint), "fish_device": "cpu", "fish_seed": "1"}
    with server(tmp_path_factory.mktemp("fish-api-fish"), **settings) as base:
        yield base


def fish_post(url: str, fields: dict) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/tts", content=msgpack.packb(fields), headers={"Content-Type": "application/msgpack"}, timeout=120
    )


def test_fish_voice_clones_an_inline_reference_through_the_route(fish_url, speech):
    reference = {"audio": base64.b64decode(speech_b64(speech, "wav")), "text": "The quick brown fox"}
    plain = fish_post(fish_url, {"text": "Hello world.", "format": "pcm", "seed": 3})
    cloned = fish_post(fish_url, {"text": "Hello world.", "format": "pcm", "seed": 3, "references": [reference]})
    streamed = fish_post(
        fish_url, {"text": "Hello world.", "format": "wav", "seed": 3, "references": [reference], "streaming": True}
    )
    for reply in (plain, cloned, streamed):
        assert reply.status_code == 200, reply.text
        assert "x-fishvoice-warning" not in reply.headers
    assert len(cloned.content) > 0 and cloned.content != plain.content  # the reference changed the speech
    streamed_audio = decode(streamed.content, "wav", 44100)
    assert streamed_audio.sample_rate == 44100
    assert len(streamed_audio.samples) * 2 == len(cloned.content)  # the same seeded speech, streamed as WAV


def test_fish_voice_takes_the_requests_seed_and_sampling(fish_url):
    def speak(**sampling):
        reply = fish_post(fish_url, {"text": "Hi there.", "format": "pcm", **sampling})
        assert reply.status_code == 200 and "x-fishvoice-warning" not in reply.headers, reply.text
        return reply.content

    assert speak(seed=7, temperature=0.5, top_p=0.9) == speak(seed=7, temperature=0.5, top_p=0.9)
    assert speak(seed=7) != speak(seed=8)
    reply = fish_post(fish_url, {"text": "Hi there.", "format": "pcm", "repetition_penalty": 1.3})
    assert reply.headers.get_list("x-fishvoice-warning") == [
        "repetition_penalty: the fish voice does not use this; ignored"
    ]


DIALOGUE = "<|speaker:0|>Hello there, how are you today? <|speaker:1|>Very well, thank you. <|speaker:0|>Good."


def test_fish_voice_speaks_a_dialogue_in_a_voice_per_speaker(fish_url, speech):
    first = {"audio": base64.b64decode(speech_b64(speech, "wav")), "text": "The quick brown fox"}
    reversed_speech = Audio(speech.samples[::-1].copy(), speech.sample_rate)
    second = {"audio": base64.b64decode(speech_b64(reversed_speech, "wav")), "text": "A second voice"}
    one = fish_post(fish_url, {"text": DIALOGUE, "format": "pcm", "seed": 3, "references": [first]})
    two = fish_post(fish_url, {"text": DIALOGUE, "format": "pcm", "seed": 3, "references": [[first], [second]]})
    again = fish_post(fish_url, {"text": DIALOGUE, "format": "pcm", "seed": 3, "references": [[first], [second]]})
    for reply in (one, two, again):
        assert reply.status_code == 200 and "x-fishvoice-warning" not in reply.headers, reply.text
    assert two.content and two.content != one.content and two.content == again.content  # the second voice heard


def test_piper_speaks_a_dialogue_in_its_one_voice_without_reading_the_tags(url, speech):
    reference = {"audio": base64.b64decode(speech_b64(speech, "wav")), "text": "The quick brown fox"}
    reply = post_msgpack(url, {"text": DIALOGUE, "format": "wav", "references": [[reference], [reference]]})
    assert reply.status_code == 200, reply.text
    assert "voice cloning needs the fish voice backend" in reply.headers["x-fishvoice-warning"]
    assert decode(reply.content, "wav", 44100).duration_s > 2
    unknown = post_msgpack(url, {"text": DIALOGUE, "reference_id": ["nobody", "nobody-else"]})
    assert_error(unknown, 404, "not_found", "reference_id.0")


def test_json_reference_is_decoded_like_system_audio(fish_url, speech):
    fields = {"text": "Hello.", "format": "wav", "references": [{"audio": speech_b64(speech, "mp3"), "text": ""}]}
    reply = httpx.post(f"{fish_url}/v1/tts", content=json.dumps(fields), headers={"Content-Type": "application/json"})
    assert reply.status_code == 200, reply.text
    assert decode(reply.content, "wav", 44100).sample_rate == 44100


# A fuzz of the route: random fields in JSON and MessagePack, random bytes, every key. No 500, ever.

_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
_plausible = {
    "text": st.sampled_from(["Hi.", "", "  ", "Hello there, friend.", "x" * 8001]) | st.text(max_size=12),
    "format": st.sampled_from(["wav", "pcm", "mp3", "opus", "flac", ""]),
    "streaming": st.booleans(),
    "sample_rate": st.sampled_from([None, 8000, 24000, 32000, 44100, 48000, 11025, 0]),
    "mp3_bitrate": st.sampled_from([64, 128, 192, 100]),
    "opus_bitrate": st.sampled_from([-1000, 24, 32, 64, 7, 64000, 64001]),
    "features": st.lists(st.sampled_from(["quality-guard", ""]) | st.integers(), max_size=2),
    "temperature": st.floats(0, 2) | st.booleans(),
    "top_p": st.floats(0, 2),
    "seed": st.integers(-5, 2**64),
    "references": st.lists(
        st.fixed_dictionaries(
            {"audio": st.binary(max_size=300) | st.text(max_size=40)}, optional={"text": st.text(max_size=10)}
        ),
        max_size=2,
    ),
    # Only ids refused before the store: a real id needs the stores' saved voices (tested with /v1/references).
    "reference_id": st.none() | st.just("") | st.integers(),
    "prosody": st.fixed_dictionaries({}, optional={"speed": st.floats(0, 3), "volume": st.floats(-30, 30)}),
    "latency": st.sampled_from(["normal", "balanced", "low", "fast"]),
    "chunk_length": st.integers(0, 2000),
}
_fields = st.one_of(
    _values,
    st.fixed_dictionaries({"text": _plausible["text"]}, optional={k: v for k, v in _plausible.items() if k != "text"}),
    st.dictionaries(
        st.sampled_from([k for k in _plausible if k != "reference_id"]) | st.text(max_size=8), _values, max_size=5
    ),
)


def _packed(fields) -> bytes:
    try:
        return msgpack.packb(fields)
    except (OverflowError, ValueError, TypeError):  # a number past 64 bits cannot be packed: send it as JSON
        return json.dumps(fields, default=repr).encode()  # (bytes, which JSON has not, as their repr)


_bodies = st.one_of(
    st.tuples(st.just("application/msgpack"), _fields.map(_packed)),
    st.tuples(st.just("application/json"), _fields.map(lambda f: json.dumps(f, allow_nan=True, default=repr).encode())),
    st.tuples(st.sampled_from(["application/msgpack", "application/json", "text/plain"]), st.binary(max_size=200)),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_bodies, key=st.sampled_from([KEY, KEY, KEY, "wrong", None]))
@example(body=("application/msgpack", b"\x81\xa4text\xa20\x00"), key=KEY)  # a NUL: Piper refused it
def test_the_route_answers_any_body_with_audio_or_a_documented_error(url, body, key):
    content_type, content = body
    headers = {"Content-Type": content_type} | ({"Authorization": f"Bearer {key}"} if key else {})
    reply = httpx.post(f"{url}/v1/tts", content=content, headers=headers, timeout=120)
    assert reply.status_code < 500, (reply.status_code, reply.text[:300])
    if reply.status_code == 200:
        assert reply.headers["content-type"] in ("audio/wav", "audio/pcm", "audio/mpeg", "audio/ogg")
    else:
        error = reply.json()["error"]
        assert error["code"] in CODES and error["code"] != "internal" and error["message"], error


def test_fish_voice_clones_a_saved_voice_through_fish_and_openai_routes(fish_url, speech):
    import openai

    wav = base64.b64decode(speech_b64(speech, "wav"))
    added = httpx.post(
        f"{fish_url}/v1/references/add",
        data={"id": "fox", "text": "The quick brown fox"},
        files={"audio": ("fox.wav", wav, "audio/wav")},
        timeout=120,
    )
    assert added.status_code == 200, added.text
    plain = fish_post(fish_url, {"text": "Hello world.", "format": "pcm", "seed": 3})
    saved = fish_post(fish_url, {"text": "Hello world.", "format": "pcm", "seed": 3, "reference_id": "fox"})
    assert saved.status_code == 200 and "x-fishvoice-warning" not in saved.headers
    assert len(saved.content) > 0 and saved.content != plain.content
    with openai.OpenAI(base_url=f"{fish_url}/v1", api_key="none", max_retries=0, timeout=120) as client:
        default = client.audio.speech.with_raw_response.create(model="tts-1", voice="default", input="Hello world.")
        cloned = client.audio.speech.with_raw_response.create(model="tts-1", voice="fox", input="Hello world.")
    assert "x-fishvoice-warning" not in cloned.headers
    assert len(cloned.content) > 0 and cloned.content != default.content
