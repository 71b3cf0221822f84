"""SQLite conversation store (WAL mode): the default, for one machine."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ..contract import ChatMessage
from ..threads import run_in_thread
from ..voices import VoiceReference
from .base import Conversation, SavedVoice, VoiceDetails

log = logging.getLogger(__name__)
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    namespace TEXT NOT NULL, id TEXT NOT NULL, system_message TEXT, voice_hash TEXT,
    updated_at REAL NOT NULL, PRIMARY KEY (namespace, id));
CREATE TABLE IF NOT EXISTS turns (
    namespace TEXT NOT NULL, conversation_id TEXT NOT NULL, seq INTEGER NOT NULL,
    role TEXT NOT NULL, content TEXT NOT NULL, PRIMARY KEY (namespace, conversation_id, seq));
CREATE TABLE IF NOT EXISTS voices (
    hash TEXT PRIMARY KEY, pcm16 BLOB NOT NULL, reference_text TEXT, used_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS saved_voices (
    namespace TEXT NOT NULL, id TEXT NOT NULL, voice_hash TEXT NOT NULL, reference_text TEXT,
    created_at REAL NOT NULL, details TEXT, updated_at REAL, PRIMARY KEY (namespace, id));
CREATE TABLE IF NOT EXISTS voice_codes (key TEXT PRIMARY KEY, data BLOB NOT NULL, used_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS conversations_updated ON conversations (updated_at);
"""


# Columns added since a store was first made: (table, column, type); an older file gains them at start-up.
# turns.calls: a message's function calls or the call it answers, as JSON (null for plain text).
_ADDED_COLUMNS = (
    ("saved_voices", "details", "TEXT"),
    ("saved_voices", "updated_at", "REAL"),
    ("turns", "calls", "TEXT"),
)


def _add_missing_columns(db: sqlite3.Connection) -> None:
    for table, column, kind in _ADDED_COLUMNS:
        if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def sqlite_path(store: str) -> Path:
    """A file path from `sqlite:///relative/path`, `sqlite:////absolute/path` or a bare path."""
    return Path(store.removeprefix("sqlite:///"))


class SQLiteStore:
    """Each call opens its own connection in a worker thread: safe across threads and processes."""

    def __init__(self, path: str | Path, ttl_s: float = 30 * 24 * 3600):
        self.path = Path(path)
        self.ttl_s = ttl_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            _add_missing_columns(db)
        self._purge()  # start-up is a quiet moment to drop what expired while we were down

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("PRAGMA synchronous=NORMAL")
            yield db
        finally:
            db.close()

    def _cutoff(self) -> float:
        return time.time() - self.ttl_s

    async def load(self, namespace: str, conversation_id: str) -> Conversation:
        return await run_in_thread(self._load, namespace, conversation_id)

    def _load(self, namespace: str, conversation_id: str) -> Conversation:
        with self._connect() as db:
            row = db.execute(
                "SELECT system_message, voice_hash, updated_at FROM conversations WHERE namespace=? AND id=?",
                (namespace, conversation_id),
            ).fetchone()
            if row is None or row[2] < self._cutoff():
                return Conversation()
            return Conversation(row[0], row[1], self._turns(db, namespace, conversation_id))

    @staticmethod
    def _turns(db: sqlite3.Connection, namespace: str, conversation_id: str) -> list[ChatMessage]:
        rows = db.execute(
            "SELECT role, content, calls FROM turns WHERE namespace=? AND conversation_id=? ORDER BY seq",
            (namespace, conversation_id),
        )
        return [_message(role, content, calls) for role, content, calls in rows]

    async def append_exchange(
        self,
        namespace: str,
        conversation_id: str,
        messages: list[ChatMessage],
        *,
        system_message: str | None,
        voice_hash: str | None,
    ) -> list[ChatMessage]:
        return await run_in_thread(self._append, namespace, conversation_id, messages, system_message, voice_hash)

    def _append(
        self,
        namespace: str,
        conversation_id: str,
        messages: list[ChatMessage],
        system_message: str | None,
        voice_hash: str | None,
    ) -> list[ChatMessage]:
        now = time.time()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # the write lock up front: racing appends queue, none is lost
            try:
                expired = db.execute(
                    "SELECT 1 FROM conversations WHERE namespace=? AND id=? AND updated_at<?",
                    (namespace, conversation_id, self._cutoff()),
                ).fetchone()
                if expired:
                    self._delete(db, namespace, conversation_id)
                db.execute(
                    """INSERT INTO conversations (namespace, id, system_message, voice_hash, updated_at)
                       VALUES (?, ?, ?, ?, ?)
                       ON CONFLICT (namespace, id) DO UPDATE SET
                         system_message=coalesce(excluded.system_message, system_message),
                         voice_hash=coalesce(excluded.voice_hash, voice_hash), updated_at=excluded.updated_at""",
                    (namespace, conversation_id, system_message, voice_hash, now),
                )
                (last,) = db.execute(
                    "SELECT coalesce(max(seq), 0) FROM turns WHERE namespace=? AND conversation_id=?",
                    (namespace, conversation_id),
                ).fetchone()
                db.executemany(
                    "INSERT INTO turns (namespace, conversation_id, seq, role, content, calls)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (namespace, conversation_id, last + n, m["role"], m["content"], _calls(m))
                        for n, m in enumerate(messages, 1)
                    ],
                )
                history = self._turns(db, namespace, conversation_id)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return history

    async def delete_turn(self, namespace: str, conversation_id: str, turn: ChatMessage) -> bool:
        return await run_in_thread(self._delete_turn, namespace, conversation_id, turn)

    def _delete_turn(self, namespace: str, conversation_id: str, turn: ChatMessage) -> bool:
        with self._connect() as db:
            deleted = db.execute(
                """DELETE FROM turns WHERE rowid = (SELECT rowid FROM turns WHERE namespace=? AND conversation_id=?
                   AND role=? AND content=? AND calls IS ? ORDER BY seq DESC LIMIT 1)""",
                (namespace, conversation_id, turn["role"], turn["content"], _calls(turn)),
            )
            return deleted.rowcount > 0

    @staticmethod
    def _delete(db: sqlite3.Connection, namespace: str, conversation_id: str) -> None:
        db.execute("DELETE FROM turns WHERE namespace=? AND conversation_id=?", (namespace, conversation_id))
        db.execute("DELETE FROM conversations WHERE namespace=? AND id=?", (namespace, conversation_id))

    async def put_voice(self, voice: VoiceReference) -> None:
        await run_in_thread(self._put_voice, voice)

    def _put_voice(self, voice: VoiceReference) -> None:
        with self._connect() as db:
            self._insert_voice(db, voice)

    @staticmethod
    def _insert_voice(db: sqlite3.Connection, voice: VoiceReference) -> None:
        db.execute(
            """INSERT INTO voices (hash, pcm16, reference_text, used_at) VALUES (?, ?, ?, ?)
               ON CONFLICT (hash) DO UPDATE SET used_at=excluded.used_at,
                 reference_text=coalesce(excluded.reference_text, reference_text)""",
            (voice.hash, voice.pcm16(), voice.reference_text, time.time()),
        )

    async def get_voice(self, voice_hash: str) -> VoiceReference | None:
        return await run_in_thread(self._get_voice, voice_hash)

    def _get_voice(self, voice_hash: str) -> VoiceReference | None:
        with self._connect() as db:
            row = db.execute("SELECT pcm16, reference_text FROM voices WHERE hash=?", (voice_hash,)).fetchone()
        return VoiceReference.from_pcm16(voice_hash, row[0], row[1]) if row else None

    async def purge_expired(self) -> int:
        return await run_in_thread(self._purge)

    def _purge(self) -> int:
        cutoff = self._cutoff()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            old = db.execute("SELECT namespace, id FROM conversations WHERE updated_at<?", (cutoff,)).fetchall()
            for namespace, conversation_id in old:
                self._delete(db, namespace, conversation_id)
            db.execute(
                "DELETE FROM voices WHERE used_at<? AND hash NOT IN"
                " (SELECT voice_hash FROM conversations WHERE voice_hash IS NOT NULL)"
                " AND hash NOT IN (SELECT voice_hash FROM saved_voices)",  # a saved voice stays until deleted
                (cutoff,),
            )
            db.execute("DELETE FROM voice_codes WHERE used_at<?", (cutoff,))  # re-encoded if wanted again
            db.execute("COMMIT")
        if old:
            log.info("forgot %d expired conversations", len(old))
        return len(old)

    async def close(self) -> None:
        return None

    # Saved voices: a row per (namespace, id) naming a voice by hash; the audio is in `voices`, shared.

    async def add_saved_voice(
        self, namespace: str, voice_id: str, voice: VoiceReference, details: VoiceDetails | None = None
    ) -> bool:
        return await run_in_thread(self._add_saved_voice, namespace, voice_id, voice, details or VoiceDetails())

    def _add_saved_voice(self, namespace: str, voice_id: str, voice: VoiceReference, details: VoiceDetails) -> bool:
        now = time.time()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                added = db.execute(
                    """INSERT INTO saved_voices (namespace, id, voice_hash, reference_text, created_at, details,
                       updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (namespace, id) DO NOTHING""",
                    (namespace, voice_id, voice.hash, voice.reference_text, now, details.to_json(), now),
                ).rowcount
                if added:
                    self._insert_voice(db, voice)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return bool(added)

    async def saved_voice(self, namespace: str, voice_id: str) -> VoiceReference | None:
        return await run_in_thread(self._saved_voice, namespace, voice_id)

    def _saved_voice(self, namespace: str, voice_id: str) -> VoiceReference | None:
        with self._connect() as db:
            row = db.execute(
                """SELECT s.voice_hash, v.pcm16, s.reference_text FROM saved_voices s
                   JOIN voices v ON v.hash = s.voice_hash WHERE s.namespace=? AND s.id=?""",
                (namespace, voice_id),
            ).fetchone()
            if row is not None:
                db.execute("UPDATE voices SET used_at=? WHERE hash=?", (time.time(), row[0]))
        return VoiceReference.from_pcm16(row[0], row[1], row[2]) if row else None

    async def list_saved_voices(self, namespace: str) -> list[SavedVoice]:
        return await self._run(_list_saved_voices, namespace)

    async def update_saved_voice(self, namespace: str, voice_id: str, details: VoiceDetails) -> bool:
        return await self._run(_update_saved_voice, namespace, voice_id, details)

    async def rename_saved_voice(self, namespace: str, voice_id: str, new_id: str) -> bool:
        return await self._run(_rename_saved_voice, namespace, voice_id, new_id)

    async def delete_saved_voice(self, namespace: str, voice_id: str) -> bool:
        return await self._run(_delete_saved_voice, namespace, voice_id)

    async def _run(self, work: Callable[..., T], *args: Any) -> T:
        """`work(db, *args)` in a worker thread, on a connection of its own."""

        def call() -> T:
            with self._connect() as db:
                return work(db, *args)

        return await run_in_thread(call)

    async def put_voice_codes(self, key: str, data: bytes) -> None:
        await run_in_thread(self._put_voice_codes, key, data)

    def _put_voice_codes(self, key: str, data: bytes) -> None:
        with self._connect() as db:
            db.execute(
                """INSERT INTO voice_codes (key, data, used_at) VALUES (?, ?, ?)
                   ON CONFLICT (key) DO UPDATE SET data=excluded.data, used_at=excluded.used_at""",
                (key, data, time.time()),
            )

    async def voice_codes(self, key: str) -> bytes | None:
        return await run_in_thread(self._voice_codes, key)

    def _voice_codes(self, key: str) -> bytes | None:
        with self._connect() as db:
            row = db.execute("SELECT data FROM voice_codes WHERE key=?", (key,)).fetchone()
            if row is not None:
                db.execute("UPDATE voice_codes SET used_at=? WHERE key=?", (time.time(), key))
        return bytes(row[0]) if row else None


# Saved voices' steps on a connection (SQLiteStore._run gives them one).


def _list_saved_voices(db: sqlite3.Connection, namespace: str) -> list[SavedVoice]:
    rows = db.execute(
        """SELECT id, reference_text, voice_hash, details, created_at, updated_at FROM saved_voices
           WHERE namespace=? ORDER BY id""",
        (namespace,),
    ).fetchall()
    return [
        SavedVoice(voice_id, text, voice_hash, VoiceDetails.from_json(details), created, updated or created)
        for voice_id, text, voice_hash, details, created, updated in rows
    ]


def _update_saved_voice(db: sqlite3.Connection, namespace: str, voice_id: str, details: VoiceDetails) -> bool:
    return bool(
        db.execute(
            "UPDATE saved_voices SET details=?, updated_at=? WHERE namespace=? AND id=?",
            (details.to_json(), time.time(), namespace, voice_id),
        ).rowcount
    )


def _rename_saved_voice(db: sqlite3.Connection, namespace: str, voice_id: str, new_id: str) -> bool:
    try:  # one statement: atomic; the primary key refuses a taken id
        return bool(
            db.execute(
                "UPDATE saved_voices SET id=? WHERE namespace=? AND id=?", (new_id, namespace, voice_id)
            ).rowcount
        )
    except sqlite3.IntegrityError:
        return False


def _delete_saved_voice(db: sqlite3.Connection, namespace: str, voice_id: str) -> bool:
    return bool(db.execute("DELETE FROM saved_voices WHERE namespace=? AND id=?", (namespace, voice_id)).rowcount)


def _calls(message: ChatMessage) -> str | None:
    """A message's function-call fields as stored (None for a plain message)."""
    fields = {k: message[k] for k in ("tool_calls", "tool_call_id") if k in message}
    return json.dumps(fields) if fields else None


def _message(role: Any, content: str, calls: str | None) -> ChatMessage:
    message: ChatMessage = {"role": role, "content": content}
    message.update(json.loads(calls) if calls else {})
    return message
