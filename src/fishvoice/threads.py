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


async def iterate_in_thread(
    make_iterator: Callable[[threading.Event], Iterator[T]], ahead: int | None = None
) -> AsyncGenerator[T, None]:
    """Drive a blocking iterator in a worker thread and yield its items on the event loop.

    `make_iterator` receives a stop event; when the consumer stops early (break, cancel, aclose)
    the event is set and the thread ends after its current item, so a cancelled job stops its
    generation for real instead of running on in the background. With `ahead`, the thread makes at
    most that many items the consumer has not taken yet: a consumer that stops reading for a while
    pauses the work (and frees the CPU) instead of letting it run on.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[T | BaseException | _Done] = asyncio.Queue()
    stop = threading.Event()
    credit = threading.Semaphore(ahead) if ahead is not None else None

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
            while credit is None or credit.acquire():
                if stop.is_set() or isinstance(item := next(iterator, _DONE), _Done):
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
            if credit is not None:
                credit.release()
            yield item
    finally:
        stop.set()
        if credit is not None:
            credit.release()  # a thread waiting for credit wakes, sees the stop and ends


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
