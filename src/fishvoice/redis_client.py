"""One way to reach Redis for everything that shares state through it (conversations, voices, jobs).

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import FishvoiceError

T = TypeVar("T")


def connect(url: str, *, decode_responses: bool = False) -> redis.Redis:
    """A client that retries a restarting Redis for a few seconds before its callers see the error."""
    retry = Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=6)
    return redis.Redis.from_url(
        url,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry=retry,
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        decode_responses=decode_responses,
    )


async def answered(call: Awaitable[T], store: str) -> T:
    """Await a Redis call; its failure is told as the contract's `backend_unavailable`, naming the `store`."""
    try:
        return await call
    except redis.RedisError as exc:
        raise FishvoiceError("backend_unavailable", f"the {store} failed: {exc}") from exc
