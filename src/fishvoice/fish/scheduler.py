"""Continuous batching at frame granularity: one thread owns the device and steps every request in
flight together.

Between two steps it drops what was stopped or cancelled, prefills waiting requests into free slots
(one at a time), launches the step over every occupied slot, and only then reads the previous step's
frames (copied to the host without blocking): the host learns of an <|im_end|> one frame late while
the device is already computing the next one, so nothing waits on the device inside a frame. A
request's frames go to its `FrameStream` as they are known; its slot is free for the next request as
soon as it ends. A step that fails (out of memory) fails the requests in it; the rest go on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from queue import SimpleQueue

import numpy as np
import torch
from torch import Tensor

from .cuda import new_event
from .decode import FrameDecoder
from .errors import EngineClosedError, StepFailedError
from .graphs import CapturedSteps, EagerSteps
from .prefix_cache import PrefixCache
from .sampling import Sampling

log = logging.getLogger(__name__)


@dataclass
class FrameRequest:
    """One utterance to generate. `max_frames` counts the frames decoded (the reference's
    max_new_tokens): at most max_frames - 1 come out, the last one decoded is dropped as the
    reference drops it. The first `prefix` prompt positions are shared by requests in the same voice."""

    prompt: Tensor  # (1 + num_codebooks, T), on the CPU
    max_frames: int
    sampling: Sampling = field(default_factory=Sampling)
    prefix: int = 0
    stop: threading.Event | None = None


class FrameStream:
    """A submitted request, seen from both sides: its caller iterates the codes of each frame
    (num_codebooks,) as they are generated; the scheduler feeds it and ends it."""

    def __init__(self, request: FrameRequest, im_end_id: int, scheduler: Scheduler):
        self.request, self.im_end_id, self._scheduler = request, im_end_id, scheduler
        self._items: SimpleQueue[np.ndarray | BaseException | None] = SimpleQueue()  # None: the end
        self._cancelled = threading.Event()
        self.decoded = 0  # frames seen, the prefill's included
        self.done = False
        self.stopped_at_step: int | None = None  # the scheduler's step count when the caller stopped it
        self.ended_at_step: int | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        while (item := self._items.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def cancel(self) -> None:
        """Stop generating: the slot is free within a frame. Frames not yet read are dropped."""
        if not self._cancelled.is_set():
            self.stopped_at_step = self._scheduler.steps_run
            self._cancelled.set()

    @property
    def stopped(self) -> bool:
        """The caller cancelled it or set the request's stop event (the step it was first seen is noted)."""
        if self.request.stop is not None and self.request.stop.is_set() and self.stopped_at_step is None:
            self.stopped_at_step = self._scheduler.steps_run
        return self._cancelled.is_set() or self.stopped_at_step is not None

    # -- the scheduler's side -----------------------------------------------------------------

    def accept(self, frame: np.ndarray) -> bool:
        """Take the next decoded frame (1 + num_codebooks,) and hand its codes on; True when the request
        has ended (<|im_end|>, or the frame limit)."""
        index, self.decoded = self.decoded, self.decoded + 1
        if frame[0] == self.im_end_id or index >= self.request.max_frames - 1:
            return True
        self._items.put(frame[1:].copy())
        return index + 1 >= self.request.max_frames - 1  # the next frame would be the dropped last one

    def finish(self, error: BaseException | None = None) -> None:
        if self.done:
            return
        self.done, self.ended_at_step = True, self._scheduler.steps_run
        if error is not None:
            self._items.put(error)
        self._items.put(None)


class HostCopy:
    """A device tensor copied to host memory without waiting; `numpy()` waits for that copy only."""

    def __init__(self, source: Tensor, into: Tensor | None = None):
        cuda = source.device.type == "cuda"
        self.host = into if into is not None else torch.empty(source.shape, dtype=source.dtype, pin_memory=cuda)
        self.host.copy_(source, non_blocking=cuda)
        self.event = new_event() if cuda else None
        if self.event is not None:
            self.event.record()

    def numpy(self) -> np.ndarray:
        if self.event is not None:
            self.event.synchronize()
        return self.host.numpy()


@dataclass
class _Launched:
    owners: dict[int, FrameStream]  # slot -> request, as they were when the step was launched
    frames: HostCopy


class Scheduler:
    """Owns the decoder (model, caches, slots) on its own thread; `submit` from any thread."""

    def __init__(
        self,
        decoder: FrameDecoder,
        runner: EagerSteps | CapturedSteps,
        *,
        max_waiting: int,
        prefix_cache: PrefixCache | None = None,
    ):
        self.decoder, self.runner, self.prefix_cache = decoder, runner, prefix_cache
        self.capacity, self.max_waiting = decoder.slots.count, max_waiting
        self.steps_run = self.steps_failed = self.prefills = 0
        self.progress_at = time.monotonic()  # when the loop last finished a round (idle counts as progress)
        self._waiting: deque[FrameStream] = deque()
        self._running: dict[int, FrameStream] = {}
        self._positions = [0] * self.capacity  # the host's mirror of each slot's next position
        self._cond = threading.Condition()
        self._closed = False
        cuda = decoder.device.type == "cuda"
        self._host = [torch.empty(decoder.slots.frames.shape, dtype=torch.long, pin_memory=cuda) for _ in range(2)]
        self._thread = threading.Thread(target=self._loop, name="fish-scheduler", daemon=True)
        self._thread.start()

    def submit(self, request: FrameRequest) -> FrameStream:
        """Queue a request; blocks while `max_waiting` requests already wait (it is never dropped)."""
        stream = FrameStream(request, self.decoder.im_end_id, self)
        with self._cond:
            while len(self._waiting) >= self.max_waiting and not self._closed and not stream.stopped:
                self._cond.wait(timeout=0.1)
            if self._closed:
                raise EngineClosedError("the fish engine is shut down")
            self._waiting.append(stream)
            self._cond.notify_all()
        return stream

    def load(self) -> tuple[int, int]:
        """(requests generating, requests waiting)."""
        return len(self._running), len(self._waiting)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    # -- the loop -----------------------------------------------------------------------------

    def _loop(self) -> None:
        pending: _Launched | None = None
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not (self._closed or self._waiting or self._running or pending):
                        self.progress_at = time.monotonic()
                        self._cond.wait(1.0)
                    if self._closed:
                        break
                try:
                    self._drop_stopped()
                    fresh = self._admit()
                    launched = self._launch() if self._running else None
                    if pending is not None:
                        self._deliver(pending)
                    self._deliver_first(fresh)
                    pending = launched
                except Exception as exc:
                    pending = None
                    self._fail_running(exc)
                self.progress_at = time.monotonic()
        closed = EngineClosedError("the fish engine is shut down")
        for stream in [*self._running.values(), *self._waiting]:
            stream.finish(closed)

    def _drop_stopped(self) -> None:
        for slot, stream in list(self._running.items()):
            if stream.stopped:
                self._release(slot)
        with self._cond:
            for stream in [s for s in self._waiting if s.stopped]:
                self._waiting.remove(stream)
                stream.finish()
            self._cond.notify_all()

    def _admit(self) -> list[tuple[int, FrameStream, HostCopy]]:
        """Prefill waiting requests into free slots; their first frames, on their way to the host."""
        fresh = []
        while len(self._running) < self.capacity:
            with self._cond:
                if not self._waiting:
                    break
                stream = self._waiting.popleft()
                self._cond.notify_all()
            if stream.stopped:
                stream.finish()
                continue
            slot = min(set(range(self.capacity)) - set(self._running))
            try:
                frame = self._prefill(slot, stream.request)
            except Exception as exc:
                self.decoder.free(slot)
                stream.finish(self._failure(exc, "prefill"))
                continue
            self._running[slot] = stream
            self._positions[slot] = stream.request.prompt.shape[1]
            fresh.append((slot, stream, HostCopy(frame[0])))
        return fresh

    def _prefill(self, slot: int, request: FrameRequest) -> Tensor:
        self.prefills += 1
        prefix = request.prompt[:, : request.prefix]
        cached = (
            request.prefix if request.prefix and self.prefix_cache and self.prefix_cache.restore(slot, prefix) else 0
        )
        frame = self.decoder.start(slot, request.prompt, request.sampling, cached)
        if request.prefix and self.prefix_cache and not cached:
            self.prefix_cache.store(slot, prefix)
        return frame

    def _launch(self) -> _Launched:
        """One step over every occupied slot; its frames start their copy to the host."""
        owners = dict(self._running)
        batch = max(owners) + 1
        length = min(self.decoder.max_len, max(self._positions[slot] for slot in owners) + 1)
        self.decoder.draw_noise(owners)
        self.runner.run(batch, length)
        self.steps_run += 1
        for slot in owners:
            self._positions[slot] += 1
        host = self._host[self.steps_run % 2]  # the other buffer may still be read: it holds the previous step
        return _Launched(owners, HostCopy(self.decoder.slots.frames[:batch], host[:batch]))

    def _deliver(self, launched: _Launched) -> None:
        frames = launched.frames.numpy()
        for slot, stream in launched.owners.items():
            if self._running.get(slot) is stream and stream.accept(frames[slot]):
                self._release(slot)

    def _deliver_first(self, fresh: list[tuple[int, FrameStream, HostCopy]]) -> None:
        for slot, stream, frame in fresh:
            if self._running.get(slot) is stream and stream.accept(frame.numpy()):
                self._release(slot)

    def _release(self, slot: int, error: BaseException | None = None) -> None:
        stream = self._running.pop(slot)
        self.decoder.free(slot)
        self._positions[slot] = 0
        stream.finish(error)

    def _fail_running(self, exc: Exception) -> None:
        """A step failed: every request in it fails; the engine goes on with the next ones."""
        self.steps_failed += 1
        error = self._failure(exc, "frame step")
        for slot in list(self._running):
            self._release(slot, error)

    def _failure(self, exc: Exception, where: str) -> StepFailedError:
        if _out_of_memory(exc):
            log.error("fish %s ran out of memory; its requests fail, the engine goes on", where)
            if self.decoder.device.type == "cuda":
                torch.cuda.empty_cache()
            error = StepFailedError("the voice ran out of GPU memory for this request; send it again")
        else:
            log.exception("fish %s failed", where)
            error = StepFailedError(f"the voice failed: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error


def _out_of_memory(exc: BaseException) -> bool:
    """A GPU (or allocator) out-of-memory error: torch's OutOfMemoryError, or a message that says so."""
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()
