"""One store suite, run against SQLite and a real Redis: atomic appends, races, expiry,
namespaces, voices. Then what is SQLite's own (WAL, the file) and Redis's own (workers sharing)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid

import numpy as np
import pytest

from fishvoice.audio import Audio
from fishvoice.contract import ChatMessage, ToolCall
from fishvoice.memory.base import VoiceDetails
from fishvoice.memory.redis import RedisStore
from fishvoice.memory.sqlite import SQLiteStore, sqlite_path
from fishvoice.voices import VoiceReference


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request, tmp_path):
    """Build a fresh store of the parametrized kind, with a given TTL."""
    made = []

    def make(ttl_s: float = 3600):
        if request.param == "sqlite":
            store = SQLiteStore(tmp_path / f"db-{len(made)}.sqlite3", ttl_s=ttl_s)
        else:
            store = RedisStore(request.getfixturevalue("redis_url"), ttl_s=ttl_s, prefix=f"test-{uuid.uuid4().hex[:8]}")
        made.append(store)
        return store

    return make


@pytest.fixture
def any_store(make_store):
    return make_store()


def said(user: str, assistant: str) -> list[ChatMessage]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


async def test_appends_build_the_history_in_order(any_store):
    await any_store.append_exchange("", "c", said("hi", "hello"), system_message="be kind", voice_hash=None)
    history = await any_store.append_exchange(
        "", "c", said("how are you", "fine"), system_message=None, voice_hash=None
    )
    assert [t["content"] for t in history] == ["hi", "hello", "how are you", "fine"]
    conversation = await any_store.load("", "c")
    assert conversation.turns == history and conversation.system_message == "be kind"


async def test_an_exchange_with_function_calls_is_kept_whole(any_store):
    call: ToolCall = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    exchange: list[ChatMessage] = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "snow, -3 C", "tool_call_id": "call_1"},
        {"role": "assistant", "content": "It snows in Oslo."},
    ]
    await any_store.append_exchange("", "c", said("hi", "hello"), system_message=None, voice_hash=None)
    history = await any_store.append_exchange("", "c", exchange, system_message=None, voice_hash=None)
    assert history[2:] == exchange and (await any_store.load("", "c")).turns == history


async def test_a_turn_deleted_is_the_newest_equal_one(any_store):
    for exchange in (said("hi", "hello"), said("hi", "hello again")):
        await any_store.append_exchange("", "c", exchange, system_message=None, voice_hash=None)
    result: ChatMessage = {"role": "tool", "content": "22 C", "tool_call_id": "call_1"}
    await any_store.append_exchange("", "c", [*said("hot?", "")[:1], result], system_message=None, voice_hash=None)
    assert await any_store.delete_turn("", "c", {"role": "user", "content": "hi"})
    assert await any_store.delete_turn("", "c", result)
    assert not await any_store.delete_turn("", "c", {"role": "tool", "content": "22 C", "tool_call_id": "other"})
    assert not await any_store.delete_turn("", "elsewhere", {"role": "user", "content": "hi"})
    turns = (await any_store.load("", "c")).turns
    assert [t["content"] for t in turns] == ["hi", "hello", "hello again", "hot?"]


async def test_a_new_conversation_is_empty(any_store):
    conversation = await any_store.load("", "never-seen")
    assert (conversation.turns, conversation.system_message, conversation.voice_hash) == ([], None, None)


async def test_latest_system_message_and_voice_are_kept(any_store):
    await any_store.append_exchange("", "c", said("a", "b"), system_message="first", voice_hash="v1")
    await any_store.append_exchange("", "c", said("c", "d"), system_message="second", voice_hash=None)
    conversation = await any_store.load("", "c")
    assert (conversation.system_message, conversation.voice_hash) == ("second", "v1")


async def test_racing_appends_on_one_conversation_all_land(any_store):
    await asyncio.gather(
        *(
            any_store.append_exchange("", "c", said(f"q{i}", f"a{i}"), system_message=None, voice_hash=None)
            for i in range(20)
        )
    )
    turns = (await any_store.load("", "c")).turns
    assert len(turns) == 40
    assert sorted(t["content"] for t in turns if t["role"] == "user") == sorted(f"q{i}" for i in range(20))
    # each question is directly followed by its own answer
    assert all(turns[i + 1]["content"] == "a" + turns[i]["content"][1:] for i in range(0, 40, 2))


async def test_namespaces_keep_conversations_apart(any_store):
    await any_store.append_exchange("key-a", "c", said("secret", "ok"), system_message=None, voice_hash=None)
    assert (await any_store.load("key-b", "c")).turns == []
    assert (await any_store.load("", "c")).turns == []
    assert len((await any_store.load("key-a", "c")).turns) == 2


async def test_idle_conversations_expire(make_store):
    store = make_store(ttl_s=1)
    await store.append_exchange("", "old", said("a", "b"), system_message="s", voice_hash=None)
    await asyncio.sleep(1.3)
    assert (await store.load("", "old")).turns == []
    history = await store.append_exchange("", "old", said("new", "start"), system_message=None, voice_hash=None)
    assert [t["content"] for t in history] == ["new", "start"]


async def test_voices_round_trip_by_hash(any_store):
    samples = (0.5 * np.sin(np.arange(44100) / 10)).astype(np.float32)
    await any_store.put_voice(VoiceReference("abc", Audio(samples, 44100), "what it says"))
    back = await any_store.get_voice("abc")
    assert back is not None and back.reference_text == "what it says"
    assert np.allclose(back.audio.samples, samples, atol=1 / 32767)
    assert await any_store.get_voice("missing") is None


def a_voice(seed: int = 0, text: str | None = "what it says") -> VoiceReference:
    samples = (0.5 * np.sin(np.arange(44100) / (10 + seed))).astype(np.float32)
    return VoiceReference(f"hash-{seed}", Audio(samples, 44100), text)


async def test_a_saved_voice_round_trips_and_lists(any_store):
    voice = a_voice()
    assert await any_store.add_saved_voice("k", "alice", voice) is True
    assert await any_store.add_saved_voice("k", "bob", a_voice(1, None)) is True
    back = await any_store.saved_voice("k", "alice")
    assert back is not None and (back.hash, back.reference_text) == ("hash-0", "what it says")
    assert np.allclose(back.audio.samples, voice.audio.samples, atol=1 / 32767)
    listed = await any_store.list_saved_voices("k")
    assert [(v.id, v.reference_text, v.hash, v.details) for v in listed] == [
        ("alice", "what it says", "hash-0", VoiceDetails()),
        ("bob", None, "hash-1", VoiceDetails()),
    ]
    assert all(time.time() - 60 < v.created_at == v.updated_at <= time.time() for v in listed)
    assert await any_store.get_voice("hash-0") is not None  # stored by content hash, as conversations store voices


async def test_adding_a_taken_id_changes_nothing(any_store):
    assert await any_store.add_saved_voice("k", "alice", a_voice(0, "first")) is True
    assert await any_store.add_saved_voice("k", "alice", a_voice(1, "second")) is False
    back = await any_store.saved_voice("k", "alice")
    assert back is not None and (back.hash, back.reference_text) == ("hash-0", "first")


async def test_racing_adds_of_one_id_let_exactly_one_win(any_store):
    results = await asyncio.gather(*(any_store.add_saved_voice("k", "same", a_voice(i)) for i in range(8)))
    assert sorted(results) == [False] * 7 + [True]
    assert len(await any_store.list_saved_voices("k")) == 1


async def test_saved_voices_are_per_namespace(any_store):
    await any_store.add_saved_voice("key-a", "alice", a_voice())
    assert await any_store.saved_voice("key-b", "alice") is None
    assert await any_store.list_saved_voices("key-b") == []
    assert await any_store.rename_saved_voice("key-b", "alice", "mine") is False
    assert await any_store.delete_saved_voice("key-b", "alice") is False
    assert await any_store.add_saved_voice("key-b", "alice", a_voice(1)) is True  # the same id, another key's
    assert [v.id for v in await any_store.list_saved_voices("key-a")] == ["alice"]


async def test_rename_moves_a_voice_and_refuses_a_taken_or_unknown_id(any_store):
    await any_store.add_saved_voice("k", "alice", a_voice(0))
    await any_store.add_saved_voice("k", "bob", a_voice(1))
    assert await any_store.rename_saved_voice("k", "alice", "bob") is False  # taken
    assert await any_store.rename_saved_voice("k", "nobody", "carol") is False  # unknown
    assert await any_store.rename_saved_voice("k", "alice", "carol") is True
    assert await any_store.saved_voice("k", "alice") is None
    moved = await any_store.saved_voice("k", "carol")
    assert moved is not None and moved.hash == "hash-0" and moved.reference_text == "what it says"
    assert [v.id for v in await any_store.list_saved_voices("k")] == ["bob", "carol"]


async def test_delete_forgets_a_saved_voice(any_store):
    await any_store.add_saved_voice("k", "alice", a_voice())
    assert await any_store.delete_saved_voice("k", "alice") is True
    assert await any_store.delete_saved_voice("k", "alice") is False
    assert await any_store.saved_voice("k", "alice") is None and await any_store.list_saved_voices("k") == []
    assert await any_store.add_saved_voice("k", "alice", a_voice()) is True  # the id is free again


async def test_a_saved_voice_outlives_the_conversation_ttl(make_store):
    store = make_store(ttl_s=1)
    await store.put_voice(a_voice())  # a conversation's use first, then saved: it must not expire
    await store.add_saved_voice("k", "alice", a_voice())
    await store.put_voice(a_voice())  # and a later conversation's use must not give it a TTL again
    await asyncio.sleep(1.3)
    await store.purge_expired()
    assert await store.saved_voice("k", "alice") is not None


async def test_voice_codes_round_trip_by_key(any_store):
    assert await any_store.voice_codes("fish:x:abc") is None
    await any_store.put_voice_codes("fish:x:abc", b"\x00\x01codes")
    assert await any_store.voice_codes("fish:x:abc") == b"\x00\x01codes"


async def test_sqlite_purges_what_expired(tmp_path):
    store = SQLiteStore(tmp_path / "db.sqlite3", ttl_s=0.3)
    await store.append_exchange("", "old", said("a", "b"), system_message=None, voice_hash=None)
    time.sleep(0.4)
    assert await store.purge_expired() == 1


async def test_two_sqlite_stores_on_one_file_share_conversations_in_wal_mode(tmp_path):
    first, second = SQLiteStore(tmp_path / "db.sqlite3"), SQLiteStore(tmp_path / "db.sqlite3")
    await first.append_exchange("", "c", said("a", "b"), system_message=None, voice_hash=None)
    assert len((await second.load("", "c")).turns) == 2
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_two_redis_workers_share_conversations_and_voices(redis_url):
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    one, two = RedisStore(redis_url, prefix=prefix), RedisStore(redis_url, prefix=prefix)
    await asyncio.gather(
        *(
            store.append_exchange("", "c", said(f"q{i}", f"a{i}"), system_message=None, voice_hash=None)
            for i in range(10)
            for store in (one, two)
        )
    )
    assert len((await two.load("", "c")).turns) == 40
    await one.put_voice(VoiceReference("v", Audio(np.full(100, 0.25, np.float32), 44100), None))
    assert (await two.get_voice("v")) is not None


async def test_an_append_sent_again_after_its_answer_was_lost_lands_once(lossy_redis):
    """Redis ran the append, but the connection dropped before its answer came (as when Redis restarts
    under load): the client sends the append again, and the exchange is stored once."""
    store = RedisStore(await lossy_redis.start(), prefix=f"test-{uuid.uuid4().hex[:8]}")
    await store.append_exchange("", "warm-up", said("q", "a"), system_message=None, voice_hash=None)  # scripts loaded
    lossy_redis.lose_next_answer()
    history = await store.append_exchange("", "c", said("the only time", "once"), system_message=None, voice_hash=None)
    assert lossy_redis.lost.is_set()  # the answer was lost and the append sent again
    assert history == (await store.load("", "c")).turns
    assert history == [{"role": "user", "content": "the only time"}, {"role": "assistant", "content": "once"}]
    await store.close()


async def test_redis_down_is_backend_unavailable():
    from fishvoice.errors import FishvoiceError

    from .conftest import free_port

    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(FishvoiceError) as caught:
        await store.load("", "c")
    assert caught.value.code == "backend_unavailable"


def test_store_setting_accepts_urls_and_paths():
    assert str(sqlite_path("sqlite:////var/db/x.sqlite3")) == "/var/db/x.sqlite3"
    assert str(sqlite_path("sqlite:///data/x.sqlite3")) == "data/x.sqlite3"
    assert str(sqlite_path("/tmp/x.sqlite3")) == "/tmp/x.sqlite3"


async def test_a_voices_details_are_kept_and_replaced(any_store):
    details = VoiceDetails("Narrator", "calm and slow", ("calm", "english"), "public", ("first sample", None))
    assert await any_store.add_saved_voice("k", "narrator", a_voice(), details) is True
    (saved,) = await any_store.list_saved_voices("k")
    assert saved.details == details
    await asyncio.sleep(0.01)
    changed = VoiceDetails("Storyteller", "", (), "private", details.samples)
    assert await any_store.update_saved_voice("k", "narrator", changed) is True
    (updated,) = await any_store.list_saved_voices("k")
    assert updated.details == changed and updated.created_at == saved.created_at < updated.updated_at
    assert (await any_store.saved_voice("k", "narrator")).hash == "hash-0"  # the audio is kept
    assert await any_store.update_saved_voice("k", "nobody", changed) is False
    assert await any_store.update_saved_voice("other-key", "narrator", changed) is False
    assert await any_store.rename_saved_voice("k", "narrator", "teller") is True
    assert (await any_store.list_saved_voices("k"))[0].details == changed  # a rename keeps them


async def test_racing_updates_of_one_voice_all_land_whole(any_store):
    await any_store.add_saved_voice("k", "v", a_voice())
    versions = [VoiceDetails(f"title {n}", f"description {n}") for n in range(6)]
    assert all(await asyncio.gather(*(any_store.update_saved_voice("k", "v", d) for d in versions)))
    assert (await any_store.list_saved_voices("k"))[0].details in versions  # one of them, not a mix


async def test_a_voice_saved_before_details_were_kept_lists_with_defaults(make_store, tmp_path, request):
    store = make_store()
    voice = a_voice()
    if isinstance(store, SQLiteStore):  # a file made before the columns existed
        path = tmp_path / "old.sqlite3"
        with sqlite3.connect(path) as db:
            db.execute(
                "CREATE TABLE saved_voices (namespace TEXT NOT NULL, id TEXT NOT NULL, voice_hash TEXT NOT NULL,"
                " reference_text TEXT, created_at REAL NOT NULL, PRIMARY KEY (namespace, id))"
            )
            db.execute("INSERT INTO saved_voices VALUES ('k', 'old', 'hash-0', 'what it says', 1000.0)")
        store = SQLiteStore(path)
        await store.put_voice(voice)
    else:  # a record written before they were kept
        record = '{"hash": "hash-0", "reference_text": "what it says"}'
        await store._redis.hset(store._saved_key("k"), "old", record)
    (old,) = await store.list_saved_voices("k")
    assert (old.id, old.details, old.updated_at) == ("old", VoiceDetails(), old.created_at)
    assert await store.update_saved_voice("k", "old", VoiceDetails("Old voice")) is True
    assert (await store.list_saved_voices("k"))[0].details.title == "Old voice"
