"""Codes to audio while they are generated.

Each request decodes through its own `DecodeState` (codec.py): every layer carries what the next
chunk needs, so a chunk is decoded from its own frames alone and the chunks joined are the one-shot
decode. `CodecWorker` is the one thread that runs the codec (on a GPU, on a CUDA stream of its own,
off the frame step's critical path); the chunks of several requests waiting at once are decoded as
one batch when they have the same number of frames.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from .codec import Codec, DecodeState
from .cuda import new_stream

log = logging.getLogger(__name__)

T = TypeVar("T")


def decode_streaming(codec: Codec, codes: Tensor, first_frames: int = 4, chunk_frames: int = 24) -> Iterator[Tensor]:
    """Yield the audio of codes (num_codebooks, frames) chunk by chunk: a short first chunk (time to
    first audio), then larger ones."""
    state = codec.start_decoding()
    start, size = 0, first_frames
    while start < codes.shape[1]:
        end = min(codes.shape[1], start + size)
        yield codec.decode_next(codes[None, :, start:end], state)[0]
        start, size = end, chunk_frames


def chunked(frames: Iterable[np.ndarray], first_frames: int, chunk_frames: int) -> Iterator[np.ndarray]:
    """Frames (num_codebooks,) gathered into chunks (num_codebooks, n): `first_frames`, then `chunk_frames`."""
    pending: list[np.ndarray] = []
    size = first_frames
    for frame in frames:
        pending.append(frame)
        if len(pending) == size:
            yield np.stack(pending, axis=1)
            pending, size = [], chunk_frames
    if pending:
        yield np.stack(pending, axis=1)


@dataclass
class AudioStream:
    """One request's place in the codec: its decode state, made on the codec's thread at the first chunk."""

    state: DecodeState | None = None


@dataclass
class _Decode:
    stream: AudioStream
    codes: np.ndarray
    result: Future[np.ndarray] = field(default_factory=Future)


@dataclass
class _Call:
    run: Callable[[], None]  # the work, settling its future


class CodecWorker:
    """The codec's own thread: decodes requests' chunks (batched where they have the same length) and
    runs other codec work (encoding references) in turn."""

    def __init__(self, codec: Codec):
        self.codec = codec
        device = next(codec.parameters()).device
        self._cuda = new_stream(device) if device.type == "cuda" else None
        self._jobs: queue.SimpleQueue[_Decode | _Call | None] = queue.SimpleQueue()
        self.batches = 0  # decode calls made, for the stats: fewer than chunks when requests share one
        self.chunks = 0  # requests' chunks decoded
        self._thread = threading.Thread(target=self._loop, name="fish-codec", daemon=True)
        self._thread.start()

    def decode(self, stream: AudioStream, codes: np.ndarray) -> Future[np.ndarray]:
        """The audio (float32, at the codec's rate) of the stream's next codes (num_codebooks, frames)."""
        job = _Decode(stream, codes)
        self._jobs.put(job)
        return job.result

    def call(self, work: Callable[[], T]) -> Future[T]:
        """Run `work` on the codec's thread (and CUDA stream)."""
        result: Future[T] = Future()

        def run() -> None:
            try:
                result.set_result(work())
            except Exception as exc:
                result.set_exception(exc)

        self._jobs.put(_Call(run))
        return result

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        with torch.inference_mode(), torch.cuda.stream(self._cuda) if self._cuda is not None else nullcontext():
            while True:
                jobs = [self._jobs.get()]
                while not self._jobs.empty():  # whatever else is waiting may share a batch
                    jobs.append(self._jobs.get())
                self._run([job for job in jobs if job is not None])
                if None in jobs:
                    return

    def _run(self, jobs: list[_Decode | _Call]) -> None:
        decodes: dict[int, list[_Decode]] = {}
        for job in jobs:
            if isinstance(job, _Call):
                job.run()
            else:
                decodes.setdefault(job.codes.shape[1], []).append(job)
        for group in decodes.values():
            self._decode(group)

    def _decode(self, group: list[_Decode]) -> None:
        try:
            state = DecodeState.stack([job.stream.state or self.codec.start_decoding() for job in group])
            audio = self.codec.decode_next(torch.from_numpy(np.stack([job.codes for job in group])), state)
            self.batches, self.chunks = self.batches + 1, self.chunks + len(group)
            for job, row, part in zip(group, audio.float().cpu().numpy(), state.split(), strict=True):
                job.stream.state = part
                job.result.set_result(row)
        except Exception as exc:
            log.exception("codec decode of %d chunk(s) failed", len(group))
            for job in group:
                if not job.result.done():
                    job.result.set_exception(exc)
