"""Redis conversation store: several workers share conversations and voices.

A conversation is a hash (system message, voice, updated time) and a list of turns, both with the
conversation TTL, refreshed on every append. A completed exchange is appended in one MULTI/EXEC
transaction: the user turn and its reply land together, and racing workers never lose one.
"""

from __future__ import annotations

import json
import logging
import time

import redis.asyncio as redis
from redis.typing import EncodableT, FieldT

from ..contract import ChatMessage
from ..errors import FishvoiceError
from ..redis_client import connect
from ..voices import VoiceReference
from .base import Conversation

log = logging.getLogger(__name__)


class RedisStore:
    def __init__(self, url: str, ttl_s: float = 30 * 24 * 3600, prefix: str = "fishvoice"):
        self.ttl_s = max(1, int(ttl_s))
        self.prefix = prefix
        self._redis = connect(url)
        self.url = url

    def _keys(self, namespace: str, conversation_id: str) -> tuple[str, str]:
        base = f"{self.prefix}:{namespace or '-'}:{conversation_id}"
        return f"{base}:meta", f"{base}:turns"

    def _voice_key(self, voice_hash: str) -> str:
        return f"{self.prefix}:voice:{voice_hash}"

    async def load(self, namespace: str, conversation_id: str) -> Conversation:
        meta_key, turns_key = self._keys(namespace, conversation_id)
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
        user: str,
        assistant: str,
        *,
        system_message: str | None,
        voice_hash: str | None,
    ) -> list[ChatMessage]:
        meta_key, turns_key = self._keys(namespace, conversation_id)
        fields: dict[FieldT, EncodableT] = {"updated_at": str(time.time())}
        if system_message is not None:
            fields["system_message"] = system_message
        if voice_hash is not None:
            fields["voice_hash"] = voice_hash
        exchange = [
            json.dumps({"role": "user", "content": user}),
            json.dumps({"role": "assistant", "content": assistant}),
        ]
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(turns_key, *exchange)
                pipe.hset(meta_key, mapping=fields)
                pipe.expire(turns_key, self.ttl_s)
                pipe.expire(meta_key, self.ttl_s)
                pipe.lrange(turns_key, 0, -1)
                results = await pipe.execute()
        except redis.RedisError as exc:
            raise FishvoiceError("backend_unavailable", f"the conversation store failed: {exc}") from exc
        return [json.loads(turn) for turn in results[-1]]

    async def put_voice(self, voice: VoiceReference) -> None:
        key = self._voice_key(voice.hash)
        fields: dict[FieldT, EncodableT] = {"pcm16": voice.pcm16()}
        if voice.reference_text:
            fields["reference_text"] = voice.reference_text
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=fields)
                pipe.expire(key, self.ttl_s)
                await pipe.execute()
        except redis.RedisError as exc:
            raise FishvoiceError("backend_unavailable", f"the conversation store failed: {exc}") from exc

    async def get_voice(self, voice_hash: str) -> VoiceReference | None:
        key = self._voice_key(voice_hash)
        found: dict[bytes, bytes]
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(key)
                pipe.expire(key, self.ttl_s)  # a voice in use stays
                found, _ = await pipe.execute()
        except redis.RedisError as exc:
            raise FishvoiceError("backend_unavailable", f"the conversation store failed: {exc}") from exc
        if not found:
            return None
        text = found.get(b"reference_text")
        return VoiceReference.from_pcm16(voice_hash, found[b"pcm16"], text.decode() if text else None)

    async def purge_expired(self) -> int:
        return 0  # Redis expires keys itself

    async def close(self) -> None:
        await self._redis.aclose()
