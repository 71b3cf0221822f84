"""The SQLite conversation store: atomic appends, races, expiry, namespaces, voices."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import numpy as np

from fishvoice.audio import Audio
from fishvoice.memory.sqlite import SQLiteStore, sqlite_path
from fishvoice.voices import VoiceReference


async def test_appends_build_the_history_in_order(store: SQLiteStore):
    await store.append_exchange("", "c", "hi", "hello", system_message="be kind", voice_hash=None)
    history = await store.append_exchange("", "c", "how are you", "fine", system_message=None, voice_hash=None)
    assert [t["content"] for t in history] == ["hi", "hello", "how are you", "fine"]
    conversation = await store.load("", "c")
    assert conversation.turns == history and conversation.system_message == "be kind"


async def test_latest_system_message_and_voice_are_kept(store: SQLiteStore):
    await store.append_exchange("", "c", "a", "b", system_message="first", voice_hash="v1")
    await store.append_exchange("", "c", "c", "d", system_message="second", voice_hash=None)
    conversation = await store.load("", "c")
    assert (conversation.system_message, conversation.voice_hash) == ("second", "v1")


async def test_racing_appends_on_one_conversation_all_land(store: SQLiteStore):
    await asyncio.gather(*(store.append_exchange("", "c", f"q{i}", f"a{i}", system_message=None, voice_hash=None) for i in range(20)))
    turns = (await store.load("", "c")).turns
    assert len(turns) == 40
    assert sorted(t["content"] for t in turns if t["role"] == "user") == sorted(f"q{i}" for i in range(20))
    # each question is directly followed by its own answer
    assert all(turns[i + 1]["content"] == "a" + turns[i]["content"][1:] for i in range(0, 40, 2))


async def test_two_store_objects_on_one_file_share_conversations(tmp_path):
    first, second = SQLiteStore(tmp_path / "db.sqlite3"), SQLiteStore(tmp_path / "db.sqlite3")
    await first.append_exchange("", "c", "a", "b", system_message=None, voice_hash=None)
    assert len((await second.load("", "c")).turns) == 2
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_namespaces_keep_conversations_apart(store: SQLiteStore):
    await store.append_exchange("key-a", "c", "secret", "ok", system_message=None, voice_hash=None)
    assert (await store.load("key-b", "c")).turns == []
    assert len((await store.load("key-a", "c")).turns) == 2


async def test_idle_conversations_expire(tmp_path):
    store = SQLiteStore(tmp_path / "db.sqlite3", ttl_s=0.3)
    await store.append_exchange("", "old", "a", "b", system_message="s", voice_hash=None)
    time.sleep(0.4)
    assert (await store.load("", "old")).turns == []
    history = await store.append_exchange("", "old", "new", "start", system_message=None, voice_hash=None)
    assert [t["content"] for t in history] == ["new", "start"]
    time.sleep(0.4)
    assert await store.purge_expired() == 1


async def test_voices_round_trip_by_hash(store: SQLiteStore):
    samples = (0.5 * np.sin(np.arange(44100) / 10)).astype(np.float32)
    voice = VoiceReference("abc", Audio(samples, 44100), "what it says")
    await store.put_voice(voice)
    back = await store.get_voice("abc")
    assert back is not None and back.reference_text == "what it says"
    assert np.allclose(back.audio.samples, samples, atol=1 / 32767)
    assert await store.get_voice("missing") is None


def test_store_setting_accepts_urls_and_paths():
    assert str(sqlite_path("sqlite:////var/db/x.sqlite3")) == "/var/db/x.sqlite3"
    assert str(sqlite_path("sqlite:///data/x.sqlite3")) == "data/x.sqlite3"
    assert str(sqlite_path("/tmp/x.sqlite3")) == "/tmp/x.sqlite3"
