"""Blocking work off the event loop, owned by its caller: a stream's thread pauses without holding its
backend, a stream nobody reads stops on its own, a caller gone before its turn costs no work, a stalled
holder is reported and its backend rebuilt, and a cancelled caller waits out its thread."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator

import pytest

from fishvoice.errors import FishvoiceError
from fishvoice.exclusive import Exclusive
from fishvoice.threads import THREAD_NAME, iterate_in_thread, run_in_thread


def counting(made: list[int], hold: Exclusive[list[str]] | None = None, label: str = "") -> Iterator[int]:
    for n in range(1000):
        if hold is not None:
            hold.held().append(label)  # what used the backend, in order
        made.append(n)
        yield n


async def eventually(condition, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        await asyncio.sleep(0.01)


def exclusive(stall_s: float = 60.0) -> Exclusive[list[str]]:
    return Exclusive("a test backend", list, stall_s=stall_s)


async def test_a_paused_stream_gives_its_backend_back_and_resumes_after_another():
    backend = exclusive()
    first, second = [], []
    paused = iterate_in_thread(lambda stop: counting(first, backend, "a"), ahead=2, hold=backend)
    assert await anext(paused) == 0
    await eventually(lambda: len(first) == 3)  # two past the one taken, then it waits for its reader
    await eventually(lambda: backend.report()["held_by"] is None)  # and holds nothing while it waits
    handovers = backend.handovers
    other = iterate_in_thread(lambda stop: counting(second, backend, "b"), ahead=2, hold=backend)
    assert [await anext(other) for _ in range(5)] == [0, 1, 2, 3, 4]
    await other.aclose()
    assert [await anext(paused) for _ in range(5)] == [1, 2, 3, 4, 5]
    assert backend.handovers >= handovers + 2  # to the other stream and back: the first can tell
    await paused.aclose()
    used = backend.resource
    assert used[:3] == ["a"] * 3 and "b" in used and used[-1] == "a"


async def test_a_stream_nobody_reads_stops_and_gives_its_backend_back():
    backend = exclusive()
    made: list[int] = []
    before = own_threads()
    lost = iterate_in_thread(lambda stop: counting(made, backend), ahead=2, hold=backend, unread_s=1.0)
    assert await anext(lost) == 0  # then its reader forgets it, without closing it
    thread = own_threads() - before
    await eventually(lambda: not any(t.is_alive() for t in thread), within=3)
    assert len(thread) == 1 and len(made) == 3 and backend.report()["held_by"] is None
    unbounded: list[int] = []
    forgotten = iterate_in_thread(lambda stop: slow(unbounded), unread_s=0.3)
    assert await anext(forgotten) == 0
    thread = own_threads() - before
    await eventually(lambda: not any(t.is_alive() for t in thread), within=3)
    assert len(unbounded) < 100  # it stopped once nothing had been taken for 0.3 s
    await lost.aclose()
    await forgotten.aclose()


def own_threads() -> set[threading.Thread]:
    """Streams' threads alive now, themselves: a count can be met by another test's thread ending as this one's runs."""
    return {thread for thread in threading.enumerate() if thread.name == THREAD_NAME}


def slow(made: list[int]) -> Iterator[int]:
    for n in range(100):
        time.sleep(0.01)
        made.append(n)
        yield n


async def test_a_caller_gone_before_its_turn_costs_no_work():
    backend = exclusive()
    taken = threading.Event()
    release = threading.Event()

    def occupy() -> None:
        assert backend.take(None, "the test")
        taken.set()
        release.wait(10)
        backend.give_back()

    holder = threading.Thread(target=occupy)
    holder.start()
    taken.wait(5)
    made: list[int] = []
    waiting = iterate_in_thread(lambda stop: counting(made, backend), ahead=2, hold=backend)
    reading = asyncio.create_task(anext(waiting))
    await eventually(lambda: backend.report()["waiting"] == 1)
    reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)
    await eventually(lambda: backend.report()["waiting"] == 0)  # it left the queue while the backend was busy
    release.set()
    holder.join(5)
    await asyncio.sleep(0.1)
    assert made == [] and backend.resource == []  # its first item (an LLM's prefill) never ran


async def test_a_stalled_holder_is_reported_and_the_backend_rebuilt(caplog):
    loads: list[int] = []

    def load() -> list[str]:
        loads.append(1)
        return []

    backend = Exclusive("the test model", load, stall_s=0.3)
    stuck, unstick = threading.Event(), threading.Event()
    refused: list[BaseException] = []

    def hang() -> None:  # holds it and never moves: a native call that does not return
        backend.take(None, "a stuck reply")
        stuck.set()
        unstick.wait(10)
        try:
            backend.held()
        except FishvoiceError as exc:
            refused.append(exc)
        backend.give_back()

    threading.Thread(target=hang).start()
    stuck.wait(5)
    await asyncio.sleep(0.4)
    assert backend.report()["stalled"] and backend.report()["held_by"] == "a stuck reply"
    with caplog.at_level(logging.ERROR, logger="fishvoice.exclusive"):
        assert await run_in_thread(backend.take, None, "the next reply")  # not left waiting behind it
    assert len(loads) == 2 and backend.rebuilds == 1 and "a stuck reply" in caplog.text
    assert backend.report()["held_by"] == "the next reply"
    unstick.set()
    await eventually(lambda: bool(refused))  # the stuck holder, woken, may not touch the new one
    assert backend.report()["held_by"] == "the next reply"


async def test_a_cancelled_caller_waits_for_its_thread_and_stops_it():
    stop = threading.Event()
    running, ended = threading.Event(), threading.Event()

    def work() -> None:
        running.set()
        stop.wait(10)
        time.sleep(0.2)  # the work winds down after it is told
        ended.set()

    caller = asyncio.create_task(run_in_thread(work, stop=stop))
    await asyncio.to_thread(running.wait, 5)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert stop.is_set() and ended.is_set()  # the cancel went on only once the work had ended


async def test_a_work_limit_around_cancelled_work_is_free_only_once_the_work_ended():
    from fishvoice.speech_service import WorkLimit

    work, stop, ended = WorkLimit(1), threading.Event(), threading.Event()

    def recognise() -> None:  # a recogniser that notices the stop only after its current step
        stop.wait(10)
        time.sleep(0.3)
        ended.set()

    async def caller() -> None:
        async with work:
            await run_in_thread(recognise, stop=stop)

    task = asyncio.create_task(caller())
    await eventually(lambda: work.in_use == 1)
    task.cancel()
    await asyncio.sleep(0.1)
    assert work.in_use == 1 and not ended.is_set()  # still working: its place is still taken
    await asyncio.gather(task, return_exceptions=True)
    assert work.in_use == 0 and ended.is_set()
