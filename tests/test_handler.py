"""The RunPod handler end to end on the embedded models (SmolLM2 + Piper), no mocks."""

from __future__ import annotations

import asyncio
import base64
import io
import threading

import numpy as np
import pytest
import soundfile

from fishvoice.assistant import Assistant
from fishvoice.audio import decode_audio
from fishvoice.contract import AudioEvent, parse_request
from fishvoice.llm.llama_cpp import LlamaCppLLM
from fishvoice.llm.openai import OpenAICompatibleLLM
from fishvoice.memory.sqlite import SQLiteStore
from fishvoice.worker import make_handler, make_stream_handler

from .conftest import SYSTEM, free_port, pcm16_samples, run_job

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

RESPONSE_KEYS = {
    "text",
    "audio",
    "audio_format",
    "sample_rate",
    "duration_s",
    "history",
    "conversation_id",
    "voice",
    "usage",
    "timings_ms",
    "warnings",
}
STORY = {
    "message": "Tell me a short story about a robot who learns to paint.",
    "max_tokens": 90,
    "temperature": 0.2,
    "system_message": "You are a storyteller. Write several short sentences.",
}


async def test_reply_has_every_documented_key_and_float_audio_at_44_1_khz(handler):
    result = await run_job(handler, message="Say hello.", max_tokens=24)
    assert set(result) == RESPONSE_KEYS
    assert result["text"] and result["audio_format"] == "array" and result["sample_rate"] == 44100
    audio = np.asarray(result["audio"])
    assert audio.dtype == np.float64 and 0.05 < np.abs(audio).max() <= 1.0
    assert len(audio) / 44100 == pytest.approx(result["duration_s"], abs=0.01) and result["duration_s"] > 0.3
    assert result["history"] == [
        {"role": "user", "content": "Say hello."},
        {"role": "assistant", "content": result["text"]},
    ]
    assert result["conversation_id"] is None and result["voice"] == {"backend": "piper", "cloned": False}
    assert result["usage"]["prompt_tokens"] > 10 and 0 < result["usage"]["completion_tokens"] <= 24
    timings = result["timings_ms"]
    assert 0 < timings["first_audio"] <= timings["total"] and timings["llm"] > 0 and timings["tts"] > 0


async def test_max_tokens_bounds_the_reply(handler):
    short = await run_job(handler, message="Describe the ocean in detail.", max_tokens=5, speak=False)
    assert 1 <= short["usage"]["completion_tokens"] <= 6 and len(short["text"].split()) <= 6


async def test_speak_false_returns_text_only(handler):
    result = await run_job(handler, message="Say hi.", max_tokens=10, speak=False)
    assert result["text"] and result["audio"] is None and result["duration_s"] == 0
    assert result["timings_ms"]["first_audio"] is None and result["timings_ms"]["tts"] == 0


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus", "pcm16"])
async def test_every_audio_format_decodes_back_at_rate_and_length(handler, fmt):
    result = await run_job(handler, message="Say good morning.", max_tokens=16, audio_format=fmt, sample_rate=24000)
    data = base64.b64decode(result["audio"])
    if fmt == "pcm16":
        samples, rate = pcm16_samples(result["audio"]), 24000
    elif fmt in ("wav", "flac"):
        samples, rate = soundfile.read(io.BytesIO(data))
    else:
        decoded = decode_audio(data, "audio", max_seconds=600)
        samples, rate = decoded.samples, decoded.sample_rate
    assert rate == result["sample_rate"] == (48000 if fmt == "opus" else 24000)
    assert len(samples) / rate == pytest.approx(result["duration_s"], abs=0.06)
    assert result["duration_s"] > 0.3
    opus_warnings = ["opus audio always decodes at 48000 Hz; sample_rate 24000 was asked for"]
    assert [w for w in result["warnings"] if "Hz" in w] == (opus_warnings if fmt == "opus" else [])


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 48000])
async def test_audio_comes_at_the_requested_sample_rate(handler, rate):
    result = await run_job(handler, message="Say yes.", max_tokens=8, audio_format="pcm16", sample_rate=rate)
    assert result["sample_rate"] == rate
    assert len(pcm16_samples(result["audio"])) == pytest.approx(
        result["duration_s"] * rate, abs=rate * 0.0005 + 1
    )  # duration_s has 3 decimals


async def test_second_turn_sees_the_first(handler, store):
    # Both turns near-greedy: whether a 135M model recalls the name should not hang on a sampled first reply.
    first = await run_job(
        handler,
        message="My name is Zorblax. Remember it.",
        conversation_id="names-1",
        max_tokens=30,
        speak=False,
        temperature=0.1,
    )
    assert len(first["history"]) == 2
    second = await run_job(
        handler, message="What is my name?", conversation_id="names-1", max_tokens=30, speak=False, temperature=0.1
    )
    assert [t["content"] for t in second["history"][:3]] == [
        "My name is Zorblax. Remember it.",
        first["text"],
        "What is my name?",
    ]
    assert second["history"][3] == {"role": "assistant", "content": second["text"]}
    # the model saw the first turn: its prompt grew by at least that turn's tokens, and it answers with the name
    assert second["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    assert "zorblax" in second["text"].lower()


async def test_conversation_keeps_its_system_message(handler, store):
    await run_job(
        handler, message="Hi", conversation_id="sys-1", system_message="You are a pirate.", max_tokens=5, speak=False
    )
    await run_job(handler, message="Hi again", conversation_id="sys-1", max_tokens=5, speak=False)
    assert (await store.load("", "sys-1")).system_message == "You are a pirate."


async def test_invalid_request_fails_before_any_model_and_names_the_field(handler, store):
    result = await run_job(handler, message="Hello", temperature=3, conversation_id="bad-1")
    assert result == {
        "error": "temperature: must be between 0.1 and 1.0 (got 3.0)",
        "error_code": "invalid_input",
        "field": "temperature",
    }
    assert (await store.load("", "bad-1")).turns == []


async def test_failed_request_leaves_history_unchanged(handler, store, tts):
    await run_job(handler, message="Remember: blue.", conversation_id="keep-1", max_tokens=10, speak=False)
    before = (await store.load("", "keep-1")).turns
    bad_audio = await run_job(
        handler, message="Next", conversation_id="keep-1", system_audio=base64.b64encode(b"no audio" * 50).decode()
    )
    assert (bad_audio["error_code"], bad_audio["field"]) == ("invalid_audio", "system_audio")
    # a backend that cannot answer: an OpenAI-compatible LLM on a port nobody listens on
    dead = Assistant(
        OpenAICompatibleLLM(f"http://127.0.0.1:{free_port()}/v1", timeout=3), tts, store, default_system_message=SYSTEM
    )
    down = await run_job(make_handler(dead), message="Next", conversation_id="keep-1")
    assert down["error_code"] == "backend_unavailable"
    assert (await store.load("", "keep-1")).turns == before


async def test_cancelled_reply_is_not_stored(assistant, store):
    events = assistant.respond(parse_request({**STORY, "conversation_id": "cut-1"}))
    async for event in events:
        if isinstance(event, AudioEvent):
            break
    await events.aclose()
    assert (await store.load("", "cut-1")).turns == []


async def test_concurrent_turns_on_one_conversation_both_land(handler, store):
    results = await asyncio.gather(
        *(
            run_job(handler, message=f"Say the number {n}.", conversation_id="race-1", max_tokens=12, speak=False)
            for n in (1, 2, 3)
        )
    )
    turns = (await store.load("", "race-1")).turns
    assert len(turns) == 6
    assert sorted(t["content"] for t in turns if t["role"] == "user") == [
        "Say the number 1.",
        "Say the number 2.",
        "Say the number 3.",
    ]
    assert {r["text"] for r in results} == {t["content"] for t in turns if t["role"] == "assistant"}


async def test_reference_voice_is_validated_kept_and_warned_about(handler, store, reference_b64):
    result = await run_job(
        handler,
        message="Hello",
        conversation_id="voice-1",
        system_audio=reference_b64,
        reference_text="The quick brown fox",
        max_tokens=8,
    )
    assert result["voice"] == {"backend": "piper", "cloned": False} and result["duration_s"] > 0
    assert any("voice cloning needs the fish voice backend" in w for w in result["warnings"])
    conversation = await store.load("", "voice-1")
    voice = await store.get_voice(conversation.voice_hash)
    assert voice is not None and voice.reference_text == "The quick brown fox" and voice.audio.duration_s > 2
    later = await run_job(handler, message="Again", conversation_id="voice-1", max_tokens=8)
    assert any("voice cloning" in w for w in later["warnings"])


async def test_long_history_is_trimmed_to_fit_the_context(handler, store, llm):
    for i in range(16):
        await store.append_exchange(
            "",
            "long-1",
            [
                {"role": "user", "content": f"Question {i}: " + "tell me more " * 40},
                {"role": "assistant", "content": "Sure. " + "more words here " * 30},
            ],
            system_message=None,
            voice_hash=None,
        )
    result = await run_job(
        handler, message="What was my first question?", conversation_id="long-1", max_tokens=40, speak=False
    )
    assert "error" not in result
    assert result["usage"]["prompt_tokens"] + 40 <= llm.context_window
    assert len(result["history"]) == 34  # trimming touches only what the model sees, never the stored history


async def test_max_tokens_beyond_the_context_is_lowered_with_a_warning(handler):
    result = await run_job(handler, message="Hi", max_tokens=4096, speak=False, system_message="Reply with one word.")
    assert any("max_tokens lowered" in w for w in result["warnings"])


async def test_message_too_long_for_the_context_is_refused(handler):
    result = await run_job(handler, message="word " * 1500, system_message="rule " * 1500)
    assert (result["error_code"], result["field"]) == ("invalid_input", "message") and "context" in result["error"]


async def test_streaming_handler_speaks_the_first_sentence_while_the_llm_writes(assistant):
    events = [event async for event in make_stream_handler(assistant)({"id": "s", "input": STORY})]
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "done" and kinds.count("audio") >= 2
    assert kinds.index("audio") < len(kinds) - 1 - kinds[::-1].index(
        "text"
    )  # an audio event before the last text delta
    audio_events = [e for e in events if e["type"] == "audio"]
    assert [e["seq"] for e in audio_events] == list(range(len(audio_events)))
    assert all(e["audio_format"] == "pcm16" and e["sample_rate"] == 44100 for e in audio_events)
    done = events[-1]
    assert "".join(e["text"] for e in events if e["type"] == "text").strip() == done["text"]
    streamed = np.concatenate([pcm16_samples(e["audio"]) for e in audio_events])
    assert len(streamed) == len(done["audio"])  # the chunks join into the whole reply


async def test_streaming_handler_reports_bad_input_as_an_error_event(assistant):
    events = [event async for event in make_stream_handler(assistant)({"id": "s", "input": {"message": ""}})]
    assert events == [
        {"type": "error", "error": "message: must not be empty", "error_code": "invalid_input", "field": "message"}
    ]


async def test_openai_compatible_backend_against_a_real_llama_cpp_server(llama_server, tts, store):
    assistant = Assistant(OpenAICompatibleLLM(llama_server, model="smollm2"), tts, store, default_system_message=SYSTEM)
    result = await run_job(
        make_handler(assistant),
        message="Say hello in one sentence.",
        max_tokens=24,
        conversation_id="oa-1",
        audio_format="wav",
    )
    assert result["text"] and result["duration_s"] > 0.3
    assert result["usage"]["prompt_tokens"] > 0 and 0 < result["usage"]["completion_tokens"] <= 24
    second = await run_job(
        make_handler(assistant), message="And again?", max_tokens=8, conversation_id="oa-1", speak=False
    )
    assert len(second["history"]) == 4


async def test_unexpected_failure_is_internal_and_carries_its_trace_only_in_debug(llm, tts, tmp_path):
    path = tmp_path / "broken.sqlite3"
    store = SQLiteStore(path)
    path.write_bytes(b"this is no longer a database" * 200)  # a real fault below the assistant
    for debug in (False, True):
        assistant = Assistant(llm, tts, store, default_system_message=SYSTEM)
        result = await run_job(
            make_handler(assistant, debug=debug), message="Hi", conversation_id="broken", max_tokens=3
        )
        assert result["error_code"] == "internal" and result["error"] == "internal error: DatabaseError"
        assert ("trace" in result) == debug
        if debug:
            assert "sqlite3.DatabaseError" in result["trace"]


async def test_next_turn_on_another_worker_continues_the_conversation_through_redis(llm, tts, redis_url):
    import uuid

    from fishvoice.memory.redis import RedisStore

    prefix = f"workers-{uuid.uuid4().hex[:8]}"
    first, second = (
        make_handler(Assistant(llm, tts, RedisStore(redis_url, prefix=prefix), default_system_message=SYSTEM))
        for _ in range(2)
    )
    await run_job(first, message="My name is Zorblax.", conversation_id="shared-1", max_tokens=10, speak=False)
    result = await run_job(second, message="What is my name?", conversation_id="shared-1", max_tokens=10, speak=False)
    assert result["history"][0]["content"] == "My name is Zorblax." and len(result["history"]) == 4


class _OutOfMemoryVoice:
    """Stands in for a GPU voice that runs out of memory: no GPU here can be made to."""

    name, sample_rate, can_clone, renders_markers = "gpu-voice", 44100, False, False

    def stream(self, text, voice=None, stop=None):
        import torch

        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        yield  # a generator, like every voice


async def test_out_of_memory_fails_only_that_job_and_asks_for_a_fresh_worker(llm, tts, store):
    pytest.importorskip("torch")
    failing = await run_job(
        make_handler(Assistant(llm, _OutOfMemoryVoice(), store, default_system_message=SYSTEM)),
        message="Hi",
        max_tokens=5,
        conversation_id="oom-1",
    )
    assert failing["error_code"] == "backend_unavailable" and failing["refresh_worker"] is True
    assert (await store.load("", "oom-1")).turns == []
    healthy = await run_job(
        make_handler(Assistant(llm, tts, store, default_system_message=SYSTEM)), message="Hi", max_tokens=5
    )
    assert healthy["text"] and "error" not in healthy


def test_worker_concurrency_modifier_is_fixed_from_settings():
    from fishvoice.worker import fixed_concurrency

    assert [fixed_concurrency(4)(n) for n in (1, 4, 9)] == [4, 4, 4]


async def test_a_hanging_llm_server_fails_only_that_job_and_the_next_one_succeeds(llm, tts, store):
    """A real TCP server that accepts and never answers: the OpenAI client times out."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        hanging = Assistant(OpenAICompatibleLLM(url, timeout=1.0), tts, store, default_system_message=SYSTEM)
        failed = await asyncio.wait_for(
            run_job(make_handler(hanging), message="Hi", conversation_id="hang-1"), timeout=60
        )
        assert failed["error_code"] == "backend_unavailable"
        assert (await store.load("", "hang-1")).turns == []
    finally:
        listener.close()
    healthy = await run_job(
        make_handler(Assistant(llm, tts, store, default_system_message=SYSTEM)),
        message="Hi",
        conversation_id="hang-1",
        max_tokens=5,
        speak=False,
    )
    assert healthy["text"] and len(healthy["history"]) == 2


ASK_FOR_WORDS = "Please say good morning to me."


async def test_a_voice_that_raises_or_hangs_fails_only_that_job_and_the_next_one_succeeds(tts, store, monkeypatch):
    """Faults injected under our Piper adapter, into the real voice: onnxruntime raising, then a synthesis
    that never returns. The LLM is this test's own: its replies (drawn in order from a fixed seed) are then
    the same whatever ran before, and each one has words for the voice to speak."""
    llm = LlamaCppLLM(context=2048)
    real = tts._voice.synthesize
    release = threading.Event()

    def raising(text, *args, **kwargs):
        raise RuntimeError(
            "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running node"
        )

    def hanging(text, *args, **kwargs):
        release.wait(120)
        yield from real(text, *args, **kwargs)

    handler = make_handler(Assistant(llm, tts, store, default_system_message=SYSTEM, backend_timeout_s=2.0))
    try:
        for fault, words in (
            (raising, "the voice failed: [ONNXRuntimeError]"),
            (hanging, "the voice (piper) produced nothing for 2 s"),
        ):
            monkeypatch.setattr(tts._voice, "synthesize", fault)
            conversation = f"voice-{fault.__name__}"
            failed = await asyncio.wait_for(
                run_job(handler, message=ASK_FOR_WORDS, max_tokens=8, conversation_id=conversation), 60
            )
            assert failed["error_code"] == "backend_unavailable" and words in failed["error"], failed
            assert (await store.load("", conversation)).turns == []
            monkeypatch.setattr(tts._voice, "synthesize", real)
            healthy = await run_job(handler, message=ASK_FOR_WORDS, max_tokens=8, conversation_id=conversation)
            assert healthy["audio"] and len(healthy["history"]) == 2
    finally:
        release.set()
        await llm.close()
