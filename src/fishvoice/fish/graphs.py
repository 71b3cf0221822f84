"""Running the frame step: eagerly (on a CPU, or a GPU without graphs), or replaying CUDA graphs
captured at start-up, one per (batch, length) bucket, optionally of the step compiled first.

A captured graph replays the whole frame (slow step, sampling, every fast codebook) as one launch;
its inputs and outputs are the slots' static buffers, so nothing is copied in or out. Graphs are
captured largest first into one memory pool: they never run at once and keep nothing between runs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .cuda import new_stream
from .decode import FrameDecoder

log = logging.getLogger(__name__)

SMALLEST_LENGTH = 256  # the shortest attention span a graph is captured for; spans double up to the context
EAGER_LENGTH_STEP = 16  # eager steps attend over the positions in use, rounded up to this


def buckets(largest: int, smallest: int = 1) -> list[int]:
    """Powers of two from `smallest` up to (and always including) `largest`."""
    sizes, size = [], smallest
    while size < largest:
        sizes.append(size)
        size *= 2
    return [*sizes, largest]


def step_batches(max_batch: int, compiled: bool) -> list[int]:
    """The batch buckets graphs are captured for. A compiled step starts at 2: the compiler specialises a
    size of 1 (a second compilation, about as long as the first), and a frame of two rows costs what one does."""
    return buckets(max_batch, min(2, max_batch) if compiled else 1)


def _fit(sizes: list[int], needed: int) -> int:
    return next(size for size in sizes if size >= needed)


class EagerSteps:
    """The step as it is, at the exact batch and the positions in use."""

    captured = False
    replays = 0  # graphs replayed: none here

    def __init__(self, decoder: FrameDecoder):
        self.decoder = decoder

    def run(self, batch: int, length: int) -> None:
        self.decoder.decode_step(batch, min(self.decoder.max_len, -(-length // EAGER_LENGTH_STEP) * EAGER_LENGTH_STEP))


class CapturedSteps:
    """One CUDA graph per (batch bucket, length bucket), captured at start-up; `run` replays the
    smallest graph that covers the batch and the longest position."""

    captured = True

    def __init__(self, decoder: FrameDecoder, max_batch: int, *, compile: bool, compile_cache: str | None = None):
        self.decoder = decoder
        self.batches = step_batches(max_batch, compile)
        self.lengths = buckets(decoder.max_len, min(SMALLEST_LENGTH, decoder.max_len))
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self.replays = 0
        started = time.perf_counter()
        step = _compiled(decoder.decode_step, compile_cache) if compile else decoder.decode_step
        self._capture(step)
        self.warmup_s = time.perf_counter() - started
        log.info(
            "fish: %d CUDA graphs captured (batches %s, lengths %s, %s) in %.1f s",
            len(self.graphs),
            self.batches,
            self.lengths,
            "compiled" if compile else "not compiled",
            self.warmup_s,
        )

    def run(self, batch: int, length: int) -> None:
        self.graphs[(_fit(self.batches, batch), _fit(self.lengths, length))].replay()
        self.replays += 1

    @torch.inference_mode()
    def _capture(self, step: Callable[[int, int], None]) -> None:
        shapes = [(b, n) for b in reversed(self.batches) for n in reversed(self.lengths)]
        side = new_stream(None)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # compile, autotune and allocate before any capture
            for shape in shapes:
                step(*shape)
                step(*shape)
        torch.cuda.current_stream().wait_stream(side)
        pool = torch.cuda.graph_pool_handle()
        for shape in shapes:
            graph = torch.cuda.CUDAGraph()
            # thread_local: work other threads do meanwhile (an LLM on the same GPU) does not spoil the capture
            with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
                step(*shape)
            self.graphs[shape] = graph
        self.decoder.reset()  # the warm-up stepped every slot on nothing


def _compiled(step: Callable[[int, int], None], cache_dir: str | None) -> Callable[[int, int], None]:
    """The step compiled whole (no graph breaks), with the compiler's cache where later workers find it."""
    if cache_dir:
        path = Path(cache_dir).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path / "inductor")
        os.environ["TRITON_CACHE_DIR"] = str(path / "triton")
    import torch._dynamo.config as dynamo_config

    # Sizes are symbols (one graph serves every bucket; batch 1 may get its own): stay clear of the limit anyway.
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, 64)
    return torch.compile(step, fullgraph=True, dynamic=True)
