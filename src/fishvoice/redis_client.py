"""One way to reach Redis for everything that shares state through it (conversations, voices, jobs).

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


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
