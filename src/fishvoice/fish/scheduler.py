"""Continuous batching at frame granularity: one thread owns the device and steps every request in
flight together.

Between two steps it drops what was stopped or cancelled, admits waiting requests into free slots,
prefills at most `prefill_chunk` prompt positions among them (several short prompts, or one chunk of a
long one: a running stream never waits longer than one chunk for its next frame, however many arrive),
launches the step over every generating slot, and only then reads the previous step's frames (copied to
the host without blocking): the host learns of an <|im_end|> one frame late while
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
class _Prefill:
    """A request admitted to a slot whose prompt is being prefilled: positions [0, done) are in the cache."""

    stream: FrameStream
    done: int = 0
    restored: bool | None = None  # its voice's prefix came from the prefix cache (None: not yet looked up)


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
        prefill_chunk: int = 256,
    ):
        self.decoder, self.runner, self.prefix_cache = decoder, runner, prefix_cache
        self.capacity, self.max_waiting, self.prefill_chunk = decoder.slots.count, max_waiting, prefill_chunk
        self.steps_run = self.steps_failed = self.prefills = 0
        self.longest_prefill_between_steps = 0  # prompt positions prefilled in one round, at most
        # What operators watch (the server's /metrics): totals since start.
        self.frames_made = self.prefill_positions = self.out_of_memory = 0
        self.step_s = self.prefill_s = 0.0  # the host's time in rounds that stepped (less prefill), in prefill
        self.progress_at = time.monotonic()  # when the loop last finished a round (idle counts as progress)
        self._waiting: deque[FrameStream] = deque()
        self._running: dict[int, FrameStream] = {}
        self._prefilling: dict[int, _Prefill] = {}  # slot -> request, in the order they were admitted
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
        """(requests generating, requests waiting: queued, or being prefilled)."""
        return len(self._running), len(self._waiting) + len(self._prefilling)

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
                    while not (self._closed or self._waiting or self._running or self._prefilling or pending):
                        self.progress_at = time.monotonic()
                        self._cond.wait(1.0)
                    if self._closed:
                        break
                try:
                    started = time.perf_counter()
                    self._drop_stopped()
                    self._admit()
                    fresh = self._prefill_round()
                    prefilled = time.perf_counter()
                    launched = self._launch() if self._running else None
                    if pending is not None:
                        self._deliver(pending)
                    self._deliver_first(fresh)
                    pending = launched
                    self._timed(started, prefilled, stepped=launched is not None)
                except Exception as exc:
                    pending = None
                    self._fail_running(exc)
                self.progress_at = time.monotonic()
        closed = EngineClosedError("the fish engine is shut down")
        for stream in [*self._running.values(), *(p.stream for p in self._prefilling.values()), *self._waiting]:
            stream.finish(closed)

    def _timed(self, started: float, prefilled: float, stepped: bool) -> None:
        """A round's time: its prefill's, and the rest where it stepped (the time between two frames)."""
        self.prefill_s += prefilled - started
        if stepped:
            self.step_s += time.perf_counter() - prefilled

    def _drop_stopped(self) -> None:
        for slot, stream in list(self._running.items()):
            if stream.stopped:
                self._release(slot)
        for slot, prefill in list(self._prefilling.items()):
            if prefill.stream.stopped:
                self._abandon(slot)
        with self._cond:
            for stream in [s for s in self._waiting if s.stopped]:
                self._waiting.remove(stream)
                stream.finish()
            self._cond.notify_all()

    def _admit(self) -> None:
        """Waiting requests into free slots."""
        while len(self._running) + len(self._prefilling) < self.capacity:
            with self._cond:
                if not self._waiting:
                    break
                stream = self._waiting.popleft()
                self._cond.notify_all()
            if stream.stopped:
                stream.finish()
                continue
            slot = min(set(range(self.capacity)) - set(self._running) - set(self._prefilling))
            self._prefilling[slot] = _Prefill(stream)

    def _prefill_round(self) -> list[tuple[int, FrameStream, HostCopy]]:
        """Prefill up to `prefill_chunk` positions among the admitted requests, oldest first: a prompt that
        fits is finished (its first frame sampled and on its way to the host), a longer one advances a chunk."""
        fresh, budget = [], self.prefill_chunk
        for slot, prefill in list(self._prefilling.items()):
            if budget <= 0:
                break
            request = prefill.stream.request
            if prefill.restored is None:  # looked up at its first chunk: one admitted with it may store it first
                prefill.restored = self._restore_prefix(slot, request)
                prefill.done = request.prefix if prefill.restored else 0
            end = min(prefill.done + budget, request.prompt.shape[1])
            try:
                if end < request.prompt.shape[1]:
                    self.decoder.extend(slot, request.prompt, prefill.done, end)
                else:
                    fresh.append((slot, prefill.stream, HostCopy(self._finish_prefill(slot, prefill)[0])))
            except Exception as exc:
                self._abandon(slot, self._failure(exc, "prefill", 1))
                continue
            budget -= end - prefill.done
            self.prefill_positions += end - prefill.done
            prefill.done = end
        self.longest_prefill_between_steps = max(self.longest_prefill_between_steps, self.prefill_chunk - budget)
        return fresh

    def _restore_prefix(self, slot: int, request: FrameRequest) -> bool:
        prefix = request.prompt[:, : request.prefix]
        return bool(request.prefix and self.prefix_cache and self.prefix_cache.restore(slot, prefix))

    def _finish_prefill(self, slot: int, prefill: _Prefill) -> Tensor:
        """The prompt's last positions, and its first frame: the request generates from the next step on."""
        request = prefill.stream.request
        frame = self.decoder.start(slot, request.prompt, request.sampling, prefill.done)
        self.prefills += 1
        if request.prefix and self.prefix_cache and not prefill.restored:
            self.prefix_cache.store(slot, request.prompt[:, : request.prefix])
        del self._prefilling[slot]
        self._running[slot] = prefill.stream
        self._positions[slot] = request.prompt.shape[1]
        return frame

    def _abandon(self, slot: int, error: BaseException | None = None) -> None:
        """A request stopped (or failed) while its prompt was prefilled: its slot is free."""
        prefill = self._prefilling.pop(slot)
        self.decoder.free(slot)
        prefill.stream.finish(error)

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
        self.frames_made += len(launched.owners)
        for slot, stream in launched.owners.items():
            if self._running.get(slot) is stream and stream.accept(frames[slot]):
                self._release(slot)

    def _deliver_first(self, fresh: list[tuple[int, FrameStream, HostCopy]]) -> None:
        self.frames_made += len(fresh)
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
        error = self._failure(exc, "frame step", len(self._running))
        for slot in list(self._running):
            self._release(slot, error)

    def _failure(self, exc: Exception, where: str, requests: int) -> StepFailedError:
        """The error `requests` requests fail with."""
        if _out_of_memory(exc):
            self.out_of_memory += requests
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
