"""Run blocking work (llama.cpp, ONNX, Whisper) off the event loop, owned by its caller.

Every stream over a blocking backend has one owner that closes it on every path, cancellation included:
`iterate_in_thread` stops its thread when closed, pauses it when its reader falls behind (giving back
the backend it holds while it waits), and stops it on its own when nobody has read it for `unread_s`, so
a stream its owner lost still frees its thread and its backend within a bounded time. `run_in_thread` is
`asyncio.to_thread` for a caller that holds something: cancelled, it waits for its work to end before
the cancel goes on, so what the caller holds (a slot, a limit) is never given back while the work runs.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Any, TypeVar

from .errors import FishvoiceError
from .exclusive import Exclusive

log = logging.getLogger(__name__)

T = TypeVar("T")
THREAD_NAME = "fishvoice-iter"  # every stream's thread: /health counts the live ones
UNREAD_S = 120.0  # a stream nobody has read for this long is stopped
_POLL_S = 0.05


class _Done:
    """The end of a worker thread's items."""


_DONE = _Done()


class _Reader:
    """The consumer's side as its producer thread sees it: how far behind it is, and whether it is gone."""

    def __init__(self, ahead: int | None, unread_s: float):
        self.ahead, self.unread_s = ahead, unread_s
        self.made = self.taken = 0
        self.taken_at = time.monotonic()
        self.cond = threading.Condition()

    def took(self) -> None:
        with self.cond:
            self.taken += 1
            self.taken_at = time.monotonic()
            self.cond.notify()

    def produced(self) -> None:
        """One more item made; the first to wait since the reader last took one starts the unread clock
        (not the stream's start: a slow first item is not a gone reader)."""
        if self.made == self.taken:
            self.taken_at = time.monotonic()
        self.made += 1

    def behind(self) -> bool:
        return self.ahead is not None and self.made - self.taken >= self.ahead

    def gone(self) -> bool:
        """Items wait for a reader that has taken nothing for `unread_s`."""
        return self.made > self.taken and time.monotonic() - self.taken_at > self.unread_s

    def wait(self, stop: threading.Event) -> bool:
        """Until the reader catches up (True), or it is stopped or gone (False)."""
        with self.cond:
            while self.behind():
                if stop.is_set() or self.gone():
                    return False
                self.cond.wait(_POLL_S)
        return not stop.is_set()


class _Turn:
    """A stream thread's hold on its backend (None: it needs none), taken for its items and given back
    whenever it waits."""

    def __init__(self, backend: Exclusive[Any] | None, stop: threading.Event, what: str):
        self.backend, self.stop, self.what = backend, stop, what
        self.holding = False

    def take(self) -> bool:
        """Hold it (True), unless the stop came first (False)."""
        if self.backend is not None and not self.holding:
            self.holding = self.backend.take(self.stop, self.what)
            return self.holding
        return True

    def progressed(self) -> None:
        if self.backend is not None:
            self.backend.progressed()

    def give_back(self) -> None:
        if self.backend is not None and self.holding:
            self.backend.give_back()
            self.holding = False


def _produce(
    iterator: Iterator[T], reader: _Reader, turn: _Turn, stop: threading.Event, put: Callable[[T], None]
) -> None:
    """The stream's thread: items while the reader keeps up and nobody stops it, the backend taken for each
    and given back whenever the thread waits; the iterator closed and the backend free however it ends."""
    try:
        while not stop.is_set():
            if reader.behind():
                turn.give_back()  # paused: the backend is free for others until the reader catches up
                if not reader.wait(stop):
                    break
            if not turn.take():
                break
            item = next(iterator, _DONE)
            turn.progressed()
            if isinstance(item, _Done):
                break
            reader.produced()
            put(item)
            if reader.ahead is None and reader.gone():
                break
    finally:
        getattr(iterator, "close", lambda: None)()
        turn.give_back()


async def iterate_in_thread(
    make_iterator: Callable[[threading.Event], Iterator[T]],
    *,
    ahead: int | None = None,
    hold: Exclusive[Any] | None = None,
    unread_s: float = UNREAD_S,
    what: str = "a stream",
) -> AsyncGenerator[T, None]:
    """Drive a blocking iterator in a worker thread and yield its items on the event loop.

    `make_iterator` receives a stop event; once the consumer stops (break, cancel, aclose: the consumer
    must close this generator on every path), the event is set and the thread ends after its current
    item. With `ahead`, the thread makes at most that many items the consumer has not taken yet: a
    consumer that stops reading for a while pauses the work (and frees the CPU). With `hold`, the thread
    takes that backend before its first item (watching the stop event: a consumer gone by then costs no
    work) and gives it back whenever it waits for its reader, so a paused stream holds nothing others wait
    for: the iterator must expect, at any item, that another stream used the backend since its last one
    (`hold.handovers` tells). `what` names the stream in logs and /health."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[T | BaseException | _Done] = asyncio.Queue()
    stop = threading.Event()
    reader = _Reader(ahead, unread_s)

    def put(item: T | BaseException | _Done) -> None:
        if stop.is_set():  # nobody is listening any more; the loop may even be closed
            return
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop closed while this thread was stuck in the backend
            stop.set()

    def run() -> None:
        try:
            _produce(make_iterator(stop), reader, _Turn(hold, stop, what), stop, put)
            if reader.gone() and not stop.is_set():
                log.warning("%s: nobody read it for %.0f s; stopped", what, unread_s)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)
        finally:
            put(_DONE)

    thread = threading.Thread(target=run, name=THREAD_NAME, daemon=True)
    thread.start()
    try:
        while not isinstance(item := await queue.get(), _Done):
            if isinstance(item, BaseException):
                raise item
            reader.took()
            yield item
    finally:
        stop.set()
        with reader.cond:
            reader.cond.notify()  # a thread waiting for its reader wakes, sees the stop and ends


async def fail_on_stall(iterator: AsyncGenerator[T, None], stall_s: float, what: str) -> AsyncGenerator[T, None]:
    """Yield from `iterator`; when it produces nothing for `stall_s` seconds, stop it and fail with
    backend_unavailable, so a hung backend fails its own job instead of holding a worker forever."""
    try:
        while True:
            try:
                async with asyncio.timeout(stall_s):
                    item = await anext(iterator)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise FishvoiceError("backend_unavailable", f"{what} produced nothing for {stall_s:g} s") from None
            yield item
    finally:
        await iterator.aclose()


async def run_in_thread(work: Callable[..., T], /, *args: Any, stop: threading.Event | None = None, **kwargs: Any) -> T:
    """`work(*args, **kwargs)` in a worker thread (as asyncio.to_thread). Cancelled, it sets `stop` (work
    that watches it ends early) and waits for the work to end before the cancel goes on."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, work, *args, **kwargs)
    future = loop.run_in_executor(None, call)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if stop is not None:
            stop.set()
        while not future.done():
            try:
                await asyncio.wait([future])
            except asyncio.CancelledError:  # cancelled again: the work still has to end first
                continue
        if not future.cancelled():
            future.exception()  # retrieved: the caller is gone, so its failure is nobody's to raise
        raise


def stream_threads() -> int:
    """Streams' threads alive now (iterate_in_thread's)."""
    return sum(1 for thread in threading.enumerate() if thread.name == THREAD_NAME)
