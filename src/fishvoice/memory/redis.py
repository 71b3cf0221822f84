"""Redis conversation store: several workers share conversations and voices.

A conversation is a hash (system message, voice, updated time) and a list of turns, both with the
conversation TTL, refreshed on every append. A completed exchange is appended in one Lua step: the user
turn and its reply land together, racing workers never lose one, and a step the client sends again (its
connection dropped before the answer came, as when Redis restarts) lands once: each append carries an id,
kept in a set beside the turns.

A voice is a hash by content hash, with the TTL while conversations use it; a saved voice pins it
(a count of the saved voices naming it) so it stays until the last of them is deleted. Saved voices
are one hash per namespace (id -> JSON record); each change to them is one Lua step.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import redis.asyncio as redis
from redis.typing import EncodableT

from ..contract import ChatMessage
from ..errors import FishvoiceError
from ..redis_client import answered, connect
from ..voices import VoiceReference
from .base import Conversation, SavedVoice, VoiceDetails

log = logging.getLogger(__name__)
T = TypeVar("T")

# KEYS: voice, its pins. ARGV: ttl, then field, value pairs. A pinned (saved) voice keeps no TTL.
PUT_VOICE = """
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
"""
# KEYS: voice, its pins. ARGV: ttl. The voice's fields, flat; its TTL refreshed unless pinned.
GET_VOICE = """
local found = redis.call('HGETALL', KEYS[1])
if #found > 0 and redis.call('EXISTS', KEYS[2]) == 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return found
"""
# KEYS: saved voices of the namespace, the voice, its pins. ARGV: id, record, pcm16. 0 if the id is taken.
ADD_SAVED = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], 'pcm16', ARGV[3])
redis.call('PERSIST', KEYS[2])
redis.call('INCR', KEYS[3])
return 1
"""
# KEYS: saved voices. ARGV: id, voice key prefix. {record, pcm16}, or nil for an unknown id.
GET_SAVED = """
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return nil end
return {record, redis.call('HGET', ARGV[2] .. cjson.decode(record)['hash'], 'pcm16')}
"""
# KEYS: saved voices. ARGV: id, new id. 0 if the id is unknown or the new one taken.
RENAME_SAVED = """
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record or redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[2], record)
return 1
"""
# KEYS: saved voices. ARGV: id, voice key prefix, pins key prefix, ttl. The last pin gone, the voice
# expires like any other.
DELETE_SAVED = """
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
local hash = cjson.decode(record)['hash']
if redis.call('DECR', ARGV[3] .. hash) <= 0 then
  redis.call('DEL', ARGV[3] .. hash)
  redis.call('EXPIRE', ARGV[2] .. hash, ARGV[4])
end
return 1
"""
# KEYS: saved voices. ARGV: id, its record as read, the new record. 0 if the record changed meanwhile.
REPLACE_SAVED = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""
# KEYS: meta, turns, appended ids. ARGV: ttl, id, n, the exchange's n messages, meta field, value pairs.
# The whole history, after the exchange (or after the same id's earlier append).
APPEND_EXCHANGE = """
local n = tonumber(ARGV[3])
if redis.call('SADD', KEYS[3], ARGV[2]) == 1 then redis.call('RPUSH', KEYS[2], unpack(ARGV, 4, 3 + n)) end
redis.call('HSET', KEYS[1], unpack(ARGV, 4 + n))
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
return redis.call('LRANGE', KEYS[2], 0, -1)
"""
SCRIPTS = {
    "append_exchange": APPEND_EXCHANGE,
    "put_voice": PUT_VOICE,
    "get_voice": GET_VOICE,
    "add_saved": ADD_SAVED,
    "get_saved": GET_SAVED,
    "rename_saved": RENAME_SAVED,
    "delete_saved": DELETE_SAVED,
    "replace_saved": REPLACE_SAVED,
}


class RedisStore:
    def __init__(self, url: str, ttl_s: float = 30 * 24 * 3600, prefix: str = "fishvoice"):
        self.ttl_s = max(1, int(ttl_s))
        self.prefix = prefix
        self._redis = connect(url)
        self.url = url
        self._scripts = {name: self._redis.register_script(body) for name, body in SCRIPTS.items()}

    def _keys(self, namespace: str, conversation_id: str) -> tuple[str, str, str]:
        """The conversation's meta hash, its list of turns and the set of appends' ids."""
        base = f"{self.prefix}:{namespace or '-'}:{conversation_id}"
        return f"{base}:meta", f"{base}:turns", f"{base}:appended"

    def _voice_key(self, voice_hash: str) -> str:
        return f"{self.prefix}:voice:{voice_hash}"

    def _pins_key(self, voice_hash: str) -> str:
        return f"{self.prefix}:voice-pins:{voice_hash}"

    def _saved_key(self, namespace: str) -> str:
        return f"{self.prefix}:saved-voices:{namespace or '-'}"

    async def _call(self, what: Awaitable[T]) -> T:
        return await answered(what, "conversation store")

    async def _script(self, name: str, keys: Sequence[str], args: Sequence[EncodableT]) -> Any:
        return await self._call(self._scripts[name](keys=keys, args=args))

    async def load(self, namespace: str, conversation_id: str) -> Conversation:
        meta_key, turns_key, _ = self._keys(namespace, conversation_id)
        meta: dict[bytes, bytes]
        turns: list[bytes]
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(meta_key)
                pipe.lrange(turns_key, 0, -1)
                meta, turns = await pipe.execute()
        except redis.RedisError as exc:
            raise FishvoiceError("backend_unavailable", f"the conversation store failed: {exc}") from exc
        return Conversation(
            system_message=meta.get(b"system_message", b"").decode() or None,
            voice_hash=meta.get(b"voice_hash", b"").decode() or None,
            turns=[json.loads(turn) for turn in turns],
        )

    async def append_exchange(
        self,
        namespace: str,
        conversation_id: str,
        messages: list[ChatMessage],
        *,
        system_message: str | None,
        voice_hash: str | None,
    ) -> list[ChatMessage]:
        fields: list[EncodableT] = ["updated_at", str(time.time())]
        if system_message is not None:
            fields += ["system_message", system_message]
        if voice_hash is not None:
            fields += ["voice_hash", voice_hash]
        turns = [json.dumps(message) for message in messages]
        args = [self.ttl_s, uuid.uuid4().hex, len(turns), *turns, *fields]
        turns = await self._script("append_exchange", self._keys(namespace, conversation_id), args)
        return [json.loads(turn) for turn in turns]

    async def delete_turn(self, namespace: str, conversation_id: str, turn: ChatMessage) -> bool:
        _, turns_key, _ = self._keys(namespace, conversation_id)
        # the newest equal turn: each is stored as json.dumps writes it, the same text for the same message
        removed = await self._call(self._redis.lrem(turns_key, -1, json.dumps(turn)))
        return bool(removed)

    async def put_voice(self, voice: VoiceReference) -> None:
        fields: list[EncodableT] = ["pcm16", voice.pcm16()]
        if voice.reference_text:
            fields += ["reference_text", voice.reference_text]
        await self._script(
            "put_voice", [self._voice_key(voice.hash), self._pins_key(voice.hash)], [self.ttl_s, *fields]
        )

    async def get_voice(self, voice_hash: str) -> VoiceReference | None:
        keys = [self._voice_key(voice_hash), self._pins_key(voice_hash)]
        flat: list[bytes] = await self._script("get_voice", keys, [self.ttl_s])  # a voice in use stays
        found = dict(zip(flat[::2], flat[1::2], strict=True))
        if b"pcm16" not in found:
            return None
        text = found.get(b"reference_text")
        return VoiceReference.from_pcm16(voice_hash, found[b"pcm16"], text.decode() if text else None)

    async def purge_expired(self) -> int:
        return 0  # Redis expires keys itself

    async def close(self) -> None:
        await self._redis.aclose()

    async def add_saved_voice(
        self, namespace: str, voice_id: str, voice: VoiceReference, details: VoiceDetails | None = None
    ) -> bool:
        now = time.time()
        record = json.dumps(
            {
                "hash": voice.hash,
                "reference_text": voice.reference_text,
                "details": (details or VoiceDetails()).to_json(),
                "created_at": now,
                "updated_at": now,
            }
        )
        keys = [self._saved_key(namespace), self._voice_key(voice.hash), self._pins_key(voice.hash)]
        return bool(await self._script("add_saved", keys, [voice_id, record, voice.pcm16()]))

    async def saved_voice(self, namespace: str, voice_id: str) -> VoiceReference | None:
        found = await self._script("get_saved", [self._saved_key(namespace)], [voice_id, self._voice_key("")])
        if not found or len(found) < 2:  # unknown, or (never expected) its audio gone
            return None
        record = json.loads(found[0])
        return VoiceReference.from_pcm16(record["hash"], found[1], record["reference_text"])

    async def list_saved_voices(self, namespace: str) -> list[SavedVoice]:
        found = await self._call(self._redis.hgetall(self._saved_key(namespace)))
        records = sorted((_text(voice_id), json.loads(record)) for voice_id, record in found.items())
        return [_saved_voice(voice_id, record) for voice_id, record in records]

    async def update_saved_voice(self, namespace: str, voice_id: str, details: VoiceDetails) -> bool:
        key = self._saved_key(namespace)
        for _ in range(_RETRIES):  # another update, a rename or a delete may land between the read and the write
            found = await self._call(self._redis.hget(key, voice_id))
            if found is None:
                return False
            record = {**json.loads(found), "details": details.to_json(), "updated_at": time.time()}
            if await self._script("replace_saved", [key], [voice_id, found, json.dumps(record)]):
                return True
        raise FishvoiceError("backend_unavailable", f"the voice {voice_id!r} kept changing; try again")

    async def rename_saved_voice(self, namespace: str, voice_id: str, new_id: str) -> bool:
        return bool(await self._script("rename_saved", [self._saved_key(namespace)], [voice_id, new_id]))

    async def delete_saved_voice(self, namespace: str, voice_id: str) -> bool:
        args: list[EncodableT] = [voice_id, self._voice_key(""), self._pins_key(""), self.ttl_s]
        return bool(await self._script("delete_saved", [self._saved_key(namespace)], args))

    def _codes_key(self, key: str) -> str:
        return f"{self.prefix}:voice-codes:{key}"

    async def put_voice_codes(self, key: str, data: bytes) -> None:
        await self._call(self._redis.set(self._codes_key(key), data, ex=self.ttl_s))

    async def voice_codes(self, key: str) -> bytes | None:
        found = await self._call(self._redis.getex(self._codes_key(key), ex=self.ttl_s))
        return found.encode() if isinstance(found, str) else found


_RETRIES = 8


def _saved_voice(voice_id: str, record: dict[str, Any]) -> SavedVoice:
    """A saved voice's record; one saved before details and times were kept has none."""
    created = record.get("created_at", 0.0)
    details = VoiceDetails.from_json(record.get("details"))
    return SavedVoice(
        voice_id, record["reference_text"], record["hash"], details, created, record.get("updated_at", created)
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
