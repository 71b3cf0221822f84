"""Speech in: Whisper (the embedded model, joined once from its packages) hears `user_audio` and references
without their text; silence and noise are refused; the CLI sends speech."""

from __future__ import annotations

import argparse
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from fishvoice.asr.whisper import WhisperASR, embedded_model_dir
from fishvoice.assistant import Assistant
from fishvoice.audio import Audio
from fishvoice.client import add_arguments, job_input
from fishvoice.tts.base import synthesize
from fishvoice.voices import load_reference
from fishvoice.worker import make_handler, make_stream_handler

from .conftest import SYSTEM, run_job, speech_b64
from .test_cli import fishvoice
from .test_handler import RESPONSE_KEYS

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

SENTENCE = "The quick brown fox jumps over the lazy dog, and then it runs away."


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between two sequences (of words or letters)."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def word_error_rate(reference: str, heard: str) -> float:
    """Word-level edit distance over the reference's length."""
    ref = words(reference)
    return edit_distance(ref, words(heard)) / max(len(ref), 1)


def letter_error_rate(reference: str, heard: str) -> float:
    """Edit distance over the letters alone, spaces dropped: homophones split or joined ("France is" heard as
    "Francis", as narrow-band speech often is) cost a letter, not two words."""
    ref, hyp = "".join(words(reference)), "".join(words(heard))
    return edit_distance(ref, hyp) / max(len(ref), 1)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return embedded_model_dir(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def asr(model_dir: Path) -> WhisperASR:
    return WhisperASR(model_dir, device="cpu")


@pytest.fixture
def hearing(llm, tts, store, asr) -> Assistant:
    return Assistant(llm, tts, store, default_system_message=SYSTEM, asr=asr)


def noise(seconds: float = 3.0) -> Audio:
    rng = np.random.default_rng(7)
    return Audio((rng.standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32), 16000)


def test_word_error_rate_helper():
    assert word_error_rate("a b c d", "a b c d") == 0 and word_error_rate("a b c d", "a x c") == 0.5


def test_the_embedded_model_is_joined_once_from_its_two_packages(model_dir: Path):
    model = model_dir / "model.bin"
    stamp = model.stat().st_mtime_ns
    assert embedded_model_dir(model_dir.parent) == model_dir and model.stat().st_mtime_ns == stamp
    assert model.stat().st_size > 100_000_000 and not list(model_dir.glob(".model.bin.*"))
    assert {"config.json", "tokenizer.json", "vocabulary.txt"} <= {p.name for p in model_dir.iterdir()}


def test_whisper_hears_the_sentence_and_segments_it(asr, speech):
    heard = asr.transcribe(speech)
    assert word_error_rate(SENTENCE, heard.text) < 0.15 and heard.language == "en"
    assert heard.segments and heard.segments[-1].end <= heard.duration_s + 0.5
    assert [s.text for s in asr.segments(speech, language="en")] == [s.text for s in heard.segments]


@pytest.mark.parametrize("audio", [Audio(np.zeros(48000, np.float32), 16000), noise()], ids=["silence", "noise"])
def test_silence_and_noise_give_no_segments(asr, audio):
    assert asr.transcribe(audio).text == "" and list(asr.segments(audio)) == []


@pytest.mark.parametrize("said", ["Yes.", "What is the capital of France?", SENTENCE])
def test_a_live_turn_is_heard_as_the_whole_window_hears_it(asr, tts, said):
    """hear_turn encodes the turn and 5 s of padding, not 30 s: the same words, a short one not repeated.
    Whisper base slips on a word now and then (Piper's speech differs a little each time: "capital of
    friends"), so one word in six may be amiss."""
    turn = synthesize(tts, said)
    heard = asr.hear_turn(turn)
    assert word_error_rate(said, heard) < 0.2, heard
    assert asr.hear_turn(turn, language="en") == heard
    assert word_error_rate(asr.transcribe(turn).text, heard) < 0.2


@pytest.mark.parametrize("audio", [Audio(np.zeros(48000, np.float32), 16000), noise()], ids=["silence", "noise"])
def test_a_live_turn_of_silence_or_noise_is_no_words(asr, audio):
    assert asr.hear_turn(audio) == ""


def test_a_live_turn_longer_than_the_window_is_heard_whole(asr, speech):
    long = Audio(np.tile(speech.samples, int(28 / speech.duration_s) + 1), speech.sample_rate)
    assert long.duration_s > 28
    assert words(asr.hear_turn(long)).count("fox") >= 6


def test_a_stopped_turn_is_skipped(asr, speech):
    stop = threading.Event()
    stop.set()
    assert asr.hear_turn(speech, stop=stop) == ""


async def test_a_job_with_user_audio_is_transcribed_and_answered(hearing, speech):
    result = await run_job(make_handler(hearing), user_audio=speech_b64(speech), max_tokens=24, audio_format="wav")
    assert set(result) == RESPONSE_KEYS | {"transcript"}, result.get("error")
    heard = result["transcript"]
    assert word_error_rate(SENTENCE, heard["text"]) < 0.15 and heard["language"] == "en"
    assert result["text"] and result["timings_ms"]["asr"] > 0
    assert result["history"][0] == {"role": "user", "content": heard["text"]}


async def test_a_text_job_has_no_transcript_nor_asr_timing(hearing):
    result = await run_job(make_handler(hearing), message="Say hi.", max_tokens=8, speak=False)
    assert set(result) == RESPONSE_KEYS and "asr" not in result["timings_ms"]


async def test_streaming_a_spoken_message_begins_with_the_transcript(hearing, speech):
    job = {"id": "s", "input": {"user_audio": speech_b64(speech, "mp3"), "max_tokens": 24}}
    events = [event async for event in make_stream_handler(hearing)(job)]
    assert events[0]["type"] == "transcript" and set(events[0]) == {"type", "text", "language"}
    assert word_error_rate(SENTENCE, events[0]["text"]) < 0.15
    assert events[1]["type"] == "text" and events[-1]["type"] == "done"
    assert events[-1]["transcript"] == {"text": events[0]["text"], "language": events[0]["language"]}


@pytest.mark.parametrize("audio", [Audio(np.zeros(48000, np.float32), 16000), noise()], ids=["silence", "noise"])
async def test_user_audio_without_words_is_invalid_audio(hearing, audio):
    result = await run_job(make_handler(hearing), user_audio=speech_b64(audio))
    assert (result["error_code"], result["field"]) == ("invalid_audio", "user_audio")
    assert "no speech" in result["error"]


async def test_message_and_user_audio_together_are_refused_naming_both(hearing, speech):
    result = await run_job(make_handler(hearing), message="Hi.", user_audio=speech_b64(speech))
    assert (result["error_code"], result["field"]) == ("invalid_input", "user_audio")
    assert "message" in result["error"] and "user_audio" in result["error"]


async def test_user_audio_with_recognition_off_is_backend_unavailable(assistant, speech):
    result = await run_job(make_handler(assistant), user_audio=speech_b64(speech))
    assert (result["error_code"], result["field"]) == ("backend_unavailable", "user_audio")
    assert "FISHVOICE_ASR" in result["error"]


@pytest.fixture(scope="module")
def fish_tts(tmp_path_factory):
    """The real Fish engine on the tiny checkpoint the tests write: a voice that clones."""
    pytest.importorskip("torch", reason="the Fish engine needs the `fish` extra (torch)")
    from fishvoice.fish.engine import FishEngine
    from fishvoice.fish.generate import Sampling
    from fishvoice.tts.fish import FishTTS

    from .fish_tiny import write_voice

    path = write_voice(tmp_path_factory.mktemp("fish") / "tiny-s1")
    return FishTTS(FishEngine.load(path, device="cpu", first_frames=4, chunk_frames=16), Sampling(seed=1))


async def test_a_reference_without_its_text_is_transcribed_once_and_stored_with_the_voice(
    llm, store, asr, speech, fish_tts, monkeypatch
):
    assistant = Assistant(llm, fish_tts, store, default_system_message=SYSTEM, asr=asr)
    calls: list[float] = []
    transcribe = asr.transcribe
    monkeypatch.setattr(
        asr, "transcribe", lambda audio, **kw: calls.append(audio.duration_s) or transcribe(audio, **kw)
    )
    prompted: list[str] = []  # the reference text the engine's prompt gets, for each text it speaks
    speak = fish_tts.engine.stream

    def spoken(text, reference, *args):
        prompted.append(reference[1] if reference is not None else "")
        return speak(text, reference, *args)

    monkeypatch.setattr(fish_tts.engine, "stream", spoken)
    for _turn in range(2):
        result = await run_job(
            make_handler(assistant),
            message="Say hi.",
            max_tokens=8,
            system_audio=speech_b64(speech),
            conversation_id="clone-1",
        )
        assert result["voice"] == {"backend": "fish", "cloned": True}, result.get("error")
        assert result["duration_s"] > 0
    assert len(calls) == 1  # once per voice
    assert prompted and len(set(prompted)) == 1 and word_error_rate(SENTENCE, prompted[0]) < 0.15
    voice_hash = load_reference(speech_b64(speech)).hash
    stored = await store.get_voice(voice_hash)
    assert stored is not None and stored.reference_text == prompted[0]


def test_client_sends_user_audio_instead_of_a_message(tmp_path, speech):
    path = tmp_path / "said.wav"
    path.write_bytes(__import__("base64").b64decode(speech_b64(speech)))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    fields = job_input(parser.parse_args(["--url", "http://x", "--user-audio", str(path)]))
    assert "message" not in fields and fields["user_audio"] == speech_b64(speech)
    with pytest.raises(SystemExit):
        parser.parse_args(["--url", "http://x", "--user-audio", str(path), "--message", "hi"])


def test_chat_speak_in_sends_speech_as_the_first_turn(tmp_path, speech, model_dir):
    path = tmp_path / "said.wav"
    path.write_bytes(__import__("base64").b64decode(speech_b64(speech)))
    done = fishvoice(
        "chat",
        "--speak-in",
        str(path),
        "--output-dir",
        str(tmp_path / "replies"),
        "--max-tokens",
        "16",
        stdin="/quit\n",
        env={"FISHVOICE_STORE": str(tmp_path / "db.sqlite3"), "FISHVOICE_CACHE_DIR": str(model_dir.parent)},
    )
    assert done.returncode == 0, done.stderr
    said = re.match(r"\(you said: (.*)\)\nassistant> \S", done.stdout)  # what was heard, then the reply
    assert said and word_error_rate(SENTENCE, said.group(1)) < 0.15, done.stdout
    assert done.stdout.count("assistant> ") == 1 and done.stdout.count("you> ") == 1, done.stdout
    assert (tmp_path / "replies" / "reply-001.wav").is_file()
