"""The `fish` voice backend on a tiny checkpoint written by the tests: streaming speech, voice
cloning with the encoded reference cached, settings, and the whole assistant end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

torch = pytest.importorskip("torch", reason="the Fish engine needs the `fish` extra (torch)")

from fishvoice.assistant import Assistant  # noqa: E402
from fishvoice.config import Settings  # noqa: E402
from fishvoice.errors import FishvoiceError  # noqa: E402
from fishvoice.factory import build_tts  # noqa: E402
from fishvoice.fish.checkpoints import locate_checkpoint  # noqa: E402
from fishvoice.fish.engine import FishEngine  # noqa: E402
from fishvoice.fish.errors import CheckpointError, EngineClosedError, StepFailedError  # noqa: E402
from fishvoice.fish.generate import Sampling  # noqa: E402
from fishvoice.tts.base import synthesize  # noqa: E402
from fishvoice.tts.fish import FishTTS, engine_error  # noqa: E402
from fishvoice.voices import load_reference  # noqa: E402
from fishvoice.worker import make_handler  # noqa: E402

from .conftest import SYSTEM, pcm16_samples, run_job, speech_b64  # noqa: E402
from .fish_tiny import write_checkpoint, write_codec, write_voice  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_voice(tmp_path_factory.mktemp("fish") / "tiny-s1")


@pytest.fixture(scope="module")
def fish_tts(checkpoint) -> FishTTS:
    return FishTTS(FishEngine.load(checkpoint, device="cpu", first_frames=4, chunk_frames=16), Sampling(seed=1))


def test_speech_streams_in_chunks_at_44_1_khz(fish_tts):
    pieces = list(fish_tts.stream("Hello world."))
    assert len(pieces) >= 2 and all(p.sample_rate == 44100 for p in pieces)
    assert len(pieces[0].samples) == 4 * 2048  # the first chunk leaves after four frames
    assert all(np.isfinite(p.samples).all() and np.abs(p.samples).max() <= 1.0 for p in pieces)


def test_a_clients_model_is_matched_with_the_checkpoints_family(fish_tts, tts):
    from fishvoice.server.fish_audio.tts import model_warning

    assert fish_tts.family == "s1-mini"  # the tiny checkpoint has S1-mini's layout
    assert [model_warning(fish_tts, model) for model in (None, "s1", "S1-mini", "openaudio-s1-mini")] == [None] * 4
    assert model_warning(fish_tts, "s2-pro") == "model 's2-pro': answered by the server's fish voice"
    assert model_warning(tts, "s1") == "model 's1': answered by the server's piper voice"


def test_a_fixed_seed_gives_the_same_audio(checkpoint):
    def speak(seed):
        return synthesize(FishTTS(FishEngine.load(checkpoint, device="cpu"), Sampling(seed=seed)), "Hi there.").samples

    first, again = speak(3), speak(3)
    assert np.array_equal(first, again) and not np.array_equal(first, speak(4))


def test_reference_voice_is_encoded_once_and_changes_the_prompt(fish_tts, speech):
    voice = load_reference(speech_b64(speech), "The quick brown fox")
    before = fish_tts.encodes
    cloned = synthesize(fish_tts, "Hello world.", voice)
    again = synthesize(fish_tts, "Hello again.", voice)
    assert fish_tts.encodes == before + 1  # the second request hit the cache
    plain = synthesize(fish_tts, "Hello world.")
    assert (
        len(cloned.samples) and len(again.samples) and not np.array_equal(cloned.samples[:8192], plain.samples[:8192])
    )


async def test_assistant_end_to_end_with_the_fish_voice_and_a_reference(llm, store, fish_tts, speech):
    handler = make_handler(Assistant(llm, fish_tts, store, default_system_message=SYSTEM))
    result = await run_job(
        handler,
        message="Say hello.",
        max_tokens=10,
        conversation_id="fish-1",
        audio_format="pcm16",
        sample_rate=24000,
        system_audio=speech_b64(speech, "flac"),
        reference_text="The quick brown fox",
    )
    assert "error" not in result, result
    assert result["voice"] == {"backend": "fish", "cloned": True} and not result["warnings"]
    assert len(pcm16_samples(result["audio"])) == pytest.approx(result["duration_s"] * 24000, abs=13)
    later = await run_job(handler, message="Again.", max_tokens=6, conversation_id="fish-1")
    assert later["voice"]["cloned"] is True  # the conversation kept its voice


def test_settings_build_the_fish_backend_and_explain_what_is_missing(checkpoint):
    tts = build_tts(Settings(voice="fish", fish_checkpoint=str(checkpoint), fish_device="cpu"))
    assert tts.name == "fish" and tts.can_clone and tts.sample_rate == 44100
    with pytest.raises(FishvoiceError, match="needs FISHVOICE_FISH_CHECKPOINT"):
        build_tts(Settings(voice="fish"))


def test_engine_errors_reach_the_caller_with_the_api_codes_and_messages(fish_tts, tmp_path):
    with pytest.raises(FishvoiceError) as refused:
        list(FishTTS(fish_tts.engine, Sampling(temperature=5.0)).stream("Hello."))
    assert (refused.value.code, refused.value.message) == (
        "invalid_input",
        "fish sampling: temperature must be in (0, 2); got 5.0",
    )
    with pytest.raises(FishvoiceError) as too_long:
        list(fish_tts.stream("Hello world. " * 1000))
    assert too_long.value.code == "invalid_input" and "(FISHVOICE_FISH_MAX_LEN)" in too_long.value.message
    with pytest.raises(FishvoiceError) as unloadable:  # CheckpointError at start-up
        build_tts(Settings(voice="fish", fish_checkpoint=str(tmp_path), fish_device="cpu"))
    assert unloadable.value.code == "backend_unavailable"
    assert unloadable.value.message == f"{tmp_path / 'config.json'}: missing; expected the model's config.json"
    for error in (EngineClosedError("the fish engine is shut down"), StepFailedError("the voice failed: X: y")):
        assert (engine_error(error).code, engine_error(error).message) == ("backend_unavailable", str(error))


def test_codec_that_does_not_fit_the_model_is_refused(tmp_path):
    write_checkpoint(tmp_path, "s1-mini")
    write_codec(tmp_path)
    (tmp_path / "codec.json").write_text(
        (tmp_path / "codec.json").read_text().replace('"n_codebooks": 3', '"n_codebooks": 2')
    )
    with pytest.raises(CheckpointError):
        FishEngine.load(tmp_path, device="cpu")


def test_hub_ids_download_once_and_fail_clearly_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no traffic from tests; an empty cache then cannot serve
    with pytest.raises(CheckpointError, match="could not be downloaded"):
        locate_checkpoint("fishaudio/openaudio-s1-mini", str(tmp_path))
    with pytest.raises(CheckpointError, match="not a directory, nor a model-hub repo id"):
        locate_checkpoint(str(tmp_path / "no" / "such" / "dir"))
    assert locate_checkpoint(str(tmp_path)) == tmp_path


def test_cuda_device_without_a_gpu_is_a_clear_error(checkpoint):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(CheckpointError, match="no CUDA device"):
        FishEngine.load(checkpoint, device="cuda")


def test_concurrent_callers_get_the_speech_they_would_get_alone(checkpoint):
    import threading

    engine = FishEngine.load(checkpoint, device="cpu", max_concurrency=4, first_frames=4, chunk_frames=16)
    tts = FishTTS(engine, Sampling(seed=9))
    texts = ["Hello world.", "This is a tiny voice test.", "Hello.", "Text Speech."]
    alone = [synthesize(tts, text).samples for text in texts]
    together: list[np.ndarray | None] = [None] * len(texts)
    chunks = [0] * len(texts)
    decodes = engine.stats()["codec_batches"]

    def speak(index: int) -> None:
        pieces = [piece.samples for piece in tts.stream(texts[index])]
        together[index], chunks[index] = np.concatenate(pieces), len(pieces)

    threads = [threading.Thread(target=speak, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for mine, reference in zip(together, alone, strict=True):
        assert mine is not None and mine.shape == reference.shape
        np.testing.assert_allclose(mine, reference, atol=1e-5)  # the same codes; the codec decoded them in batches
    assert engine.stats()["codec_batches"] - decodes < sum(chunks)  # chunks of several callers were decoded together
    engine.close()


def test_a_caller_that_stops_frees_its_slot(fish_tts):
    import threading

    stop = threading.Event()
    pieces = fish_tts.stream("Hello world. This is a tiny voice test.", None, stop)
    next(pieces)
    stop.set()
    assert list(pieces) == []
    engine = fish_tts.engine
    for _ in range(100):
        if engine.stats()["running"] == 0:
            break
        threading.Event().wait(0.05)
    assert engine.stats()["running"] == 0


def test_jobs_at_once_follow_the_fish_engine_unless_set(checkpoint, tts):
    from fishvoice.factory import jobs_at_once

    fish = build_tts(Settings(voice="fish", fish_checkpoint=str(checkpoint), fish_device="cpu", fish_max_batch=3))
    assert fish.capacity == 3 and fish.engine.max_concurrency == 3
    assert jobs_at_once(None, fish, 2) == 3 and jobs_at_once(None, fish, 1) == 3  # server, RunPod worker
    assert jobs_at_once(5, fish, 2) == 5
    assert jobs_at_once(None, tts, 2) == 2 and jobs_at_once(None, tts, 1) == 1  # Piper speaks one at a time


async def test_two_workers_sharing_a_store_encode_a_saved_voice_once(fish_tts, store, speech):
    """Two FishTTS instances (two workers) over one store: the first encodes the voice and stores its codes,
    the second loads them and speaks just the same."""
    voice = load_reference(speech_b64(speech), "The quick brown fox")
    await store.add_saved_voice("key-a", "fox", voice)
    saved = await store.saved_voice("key-a", "fox")
    assert saved is not None
    one = FishTTS(fish_tts.engine, Sampling(seed=2), codes=store, codec_id="fish:tiny")
    two = FishTTS(fish_tts.engine, Sampling(seed=2), codes=store, codec_id="fish:tiny")
    await one.prepare(saved)
    await one.prepare(saved)  # this process's cache
    await two.prepare(saved)  # the store's
    assert (one.encodes, two.encodes) == (1, 0)
    assert await store.voice_codes(f"fish:tiny:{saved.hash}") is not None
    first, second = synthesize(one, "Hello world.", saved), synthesize(two, "Hello world.", saved)
    assert np.array_equal(first.samples, second.samples)
    assert two.encodes == 0  # speaking used the loaded codes
    other_codec = FishTTS(fish_tts.engine, Sampling(seed=2), codes=store, codec_id="fish:other")
    await other_codec.prepare(saved)
    assert other_codec.encodes == 1  # another codec's codes are never taken for its own


async def test_unreadable_stored_codes_are_encoded_again(fish_tts, store, speech):
    voice = load_reference(speech_b64(speech))
    await store.put_voice_codes(f"fish:tiny:{voice.hash}", b"not numpy")
    tts = FishTTS(fish_tts.engine, Sampling(seed=2), codes=store, codec_id="fish:tiny")
    await tts.prepare(voice)
    assert tts.encodes == 1 and len(synthesize(tts, "Hi.", voice).samples)


async def test_a_job_with_a_saved_voice_clones_it_and_keeps_it_with_the_conversation(llm, store, speech, checkpoint):
    engine = FishEngine.load(checkpoint, device="cpu", first_frames=4, chunk_frames=16)
    tts = FishTTS(engine, Sampling(seed=1), codes=store, codec_id="fish:tiny")
    handler = make_handler(Assistant(llm, tts, store, default_system_message=SYSTEM))
    voice = load_reference(speech_b64(speech), "The quick brown fox")
    await store.add_saved_voice("", "fox", voice)
    result = await run_job(
        handler, message="Say hello.", max_tokens=6, conversation_id="saved-1", reference_id="fox", audio_format="wav"
    )
    assert "error" not in result, result
    assert result["voice"] == {"backend": "fish", "cloned": True} and tts.encodes == 1
    assert (await store.load("", "saved-1")).voice_hash == voice.hash
    later = await run_job(handler, message="Again.", max_tokens=4, conversation_id="saved-1", speak=False)
    assert later["voice"]["cloned"] is True and tts.encodes == 1
    engine.close()
