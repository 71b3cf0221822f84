"""A store (conversations, jobs) with each of its operations timed and its failures counted, wrapped at the
edge: the stores themselves know nothing of metrics."""

from __future__ import annotations

import functools
import inspect
import time
from typing import Any, TypeVar, cast

from ... import metrics

Store = TypeVar("Store")


class _TimedStore:
    def __init__(self, store: Any, kind: str):
        self._store, self._kind, self._backend = store, kind, type(store).__name__

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._store, name)
        if not inspect.iscoroutinefunction(found):  # properties, and `watch` (a context manager): as they are
            return found
        labels = (self._kind, self._backend, name)

        @functools.wraps(found)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await found(*args, **kwargs)
            except Exception:
                metrics.STORE_ERRORS.labels(*labels).inc()
                raise
            finally:
                metrics.STORE_SECONDS.labels(*labels).observe(time.perf_counter() - started)

        return timed


def timed_store(store: Store, kind: str) -> Store:
    """`store`, its async operations measured as `kind`'s (`conversations`, `jobs`) under its class's name."""
    return store if isinstance(store, _TimedStore) else cast(Store, _TimedStore(store, kind))
