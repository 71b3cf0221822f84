"""Run blocking iterators (llama.cpp, ONNX) off the event loop, stoppable from the async side.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import TypeVar

from .errors import FishvoiceError

T = TypeVar("T")


class _Done:
    """The end of a worker thread's items."""


_DONE = _Done()


async def iterate_in_thread(make_iterator: Callable[[threading.Event], Iterator[T]]) -> AsyncGenerator[T, None]:
    """Drive a blocking iterator in a worker thread and yield its items on the event loop.

    `make_iterator` receives a stop event; when the consumer stops early (break, cancel, aclose)
    the event is set and the thread ends after its current item, so a cancelled job stops its
    generation for real instead of running on in the background.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[T | BaseException | _Done] = asyncio.Queue()
    stop = threading.Event()

    def put(item: T | BaseException | _Done) -> None:
        if stop.is_set():  # nobody is listening any more; the loop may even be closed
            return
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop closed while this thread was stuck in the backend
            stop.set()

    def run() -> None:
        iterator = make_iterator(stop)
        try:
            for item in iterator:
                if stop.is_set():
                    break
                put(item)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)
        finally:
            getattr(iterator, "close", lambda: None)()
            put(_DONE)

    thread = threading.Thread(target=run, name="fishvoice-iter", daemon=True)
    thread.start()
    try:
        while not isinstance(item := await queue.get(), _Done):
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


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
