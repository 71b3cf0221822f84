"""The frame step measured inside (`bench/fish.py --profile`): for each published size and weight format, the
step as the engine serves it (CUDA graphs on a GPU) at 1, 16 and 64 streams, and each of its parts run alone
on the same buffers (slow transformer, its attention over the span, main sampling, each fast codebook with its
draw, the noise, the host's launch, the codec's chunk), the kernels one step launches, and the share of the
memory-bandwidth limit the step reaches (weights and KV cache read once a step); then first audio split into
prefill, first frames and the codec's first chunk. One table, printed as Markdown.

Parts are timed alone with the device synchronised around them (the mean of `REPEATS` runs), so they add up
to more than the captured step, which overlaps launches; the difference is what the graphs save.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from fishvoice.fish.decode import FrameDecoder
from fishvoice.fish.engine import FishEngine
from fishvoice.fish.model import CacheAccess
from fishvoice.fish.sampling import TOP_K_LIMIT, Sampling, sample, sample_main

REPEATS = 20
# Peak memory bandwidth by device name (bytes/s): the bound a decode step, reading every weight once, meets.
BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12, "L40S": 0.864e12, "L4": 0.3e12}


def timed(work: Callable[[], Any], device: torch.device, repeats: int = REPEATS) -> float:
    """Mean seconds of `work`, the device synchronised before and after."""
    work()
    sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        work()
    sync(device)
    return (time.perf_counter() - started) / repeats


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def kernels_per_step(engine: FishEngine, batch: int, length: int) -> int:
    """Kernels (on a CPU: operators) one eager step launches."""
    from torch.profiler import ProfilerActivity, profile

    cuda = engine.device.type == "cuda"
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as trace:
        engine.scheduler.decoder.decode_step(batch, length)
        sync(engine.device)
    kind = "cuda" if cuda else "cpu"
    return sum(1 for event in trace.events() if str(event.device_type).lower().endswith(kind))


def step_parts(engine: FishEngine, batch: int, length: int) -> dict[str, float]:
    """Each part of a step at `batch` rows over `length` positions, alone; and the whole step as served."""
    decoder: FrameDecoder = engine.scheduler.decoder
    model, s, device = decoder.model, decoder.slots, engine.device
    config = model.config
    rows = slice(0, batch)
    s.active[rows], s.positions[rows] = 0, length - 1  # inactive: repeated steps stay at this position
    cache = CacheAccess(0, s.positions[rows, None], length)
    frames = s.frames[rows, :, None]
    parts: dict[str, float] = {}
    with torch.inference_mode():
        parts["step, as served"] = timed(lambda: engine.scheduler.runner.run(batch, length), device)
        slow = timed(lambda: model.forward_slow(frames, cache, head=decoder.head), device)
        short = CacheAccess(0, torch.zeros_like(s.positions[rows, None]), 8)
        parts["slow transformer"] = slow
        parts["  its attention over the span"] = slow - timed(
            lambda: model.forward_slow(frames, short, head=decoder.head), device
        )
        logits, _ = model.forward_slow(frames, cache, head=decoder.head)
        uniform, params, vocab = s.uniform[rows], s.params.rows(rows), decoder.vocab
        parts["main sampling"] = timed(
            lambda: sample_main(
                logits[:, -1],
                uniform[:, :vocab][:, decoder.candidate_ids],
                uniform[:, vocab : 2 * vocab][:, decoder.candidate_ids],
                params,
                s.recent[rows],
                decoder.candidate_ids,
                decoder.semantic_count,
            ),
            device,
        )
        code = torch.zeros(batch, dtype=torch.long, device=device)
        k = min(TOP_K_LIMIT, decoder.codebook_size)
        fast = []
        for codebook in range(1, config.num_codebooks):
            position = decoder.fast_positions[codebook : codebook + 1]
            fast.append(
                timed(
                    lambda p=position: sample(
                        model.forward_fast(model.fast_embeddings(code), p),
                        uniform[:, : decoder.codebook_size],
                        params.temperature,
                        params.top_p,
                        params.top_k,
                        k,
                    ),
                    device,
                )
            )
        parts[f"fast codebooks ({len(fast)} x mean)"] = sum(fast)
        parts["  one fast codebook, mean"] = sum(fast) / len(fast)
        parts["noise (one draw a slot)"] = timed(lambda: decoder.draw_noise(range(batch)), device)
        parts["host: the step's launch"] = launch_time(engine, batch, length)
        parts["codec: a chunk of each stream"] = codec_chunk(engine, batch)
    decoder.reset()
    return parts


def launch_time(engine: FishEngine, batch: int, length: int) -> float:
    """Host seconds to launch a step (what the host spends while the device works)."""
    started = time.perf_counter()
    for _ in range(REPEATS):
        engine.scheduler.runner.run(batch, length)
    launched = (time.perf_counter() - started) / REPEATS
    sync(engine.device)
    return launched


def codec_chunk(engine: FishEngine, batch: int) -> float:
    codec, device = engine.codec, engine.device
    codes = torch.zeros(batch, codec.config.num_codebooks, engine.chunk_frames, dtype=torch.long, device=device)

    def chunk() -> None:
        codec.decode_next(codes, codec.start_decoding(batch))

    with torch.inference_mode():
        return timed(chunk, device, repeats=3)


def weight_bytes(engine: FishEngine) -> int:
    """Bytes a step reads of the weights: every linear layer and norm (the embeddings' few rows aside)."""
    model = engine.model
    skip = ("embeddings.weight",)
    return sum(t.numel() * t.element_size() for name, t in model.state_dict().items() if not name.endswith(skip))


def kv_bytes(engine: FishEngine, batch: int, length: int) -> int:
    config = engine.model.config
    element = engine.model.embeddings.weight.element_size()
    return batch * length * config.n_layer * 2 * config.n_local_heads * config.head_dim * element


def first_audio(engine: FishEngine, prompt: torch.Tensor) -> dict[str, float]:
    """One request's first audio, in parts: prefill (and its first frame), the frames of the first chunk,
    the codec's first chunk."""
    decoder, device = engine.scheduler.decoder, engine.device
    with torch.inference_mode():
        started = time.perf_counter()
        decoder.start(0, prompt, Sampling(seed=0))
        sync(device)
        prefill = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(engine.first_frames - 1):
            engine.scheduler.runner.run(1, prompt.shape[1] + engine.first_frames)
        sync(device)
        frames = time.perf_counter() - started
        decoder.reset()
        codes = torch.zeros(1, engine.codec.config.num_codebooks, engine.first_frames, dtype=torch.long, device=device)
        started = time.perf_counter()
        engine.codec.decode_next(codes, engine.codec.start_decoding(1))
        sync(device)
    return {"prefill": prefill, "first frames": frames, "codec": time.perf_counter() - started}


def profile_table(engine: FishEngine, name: str, prompt: torch.Tensor, streams: list[int]) -> list[str]:
    """The Markdown rows of one engine (a size in a weight format)."""
    span = prompt.shape[1] + 64
    parts = {batch: step_parts(engine, batch, span) for batch in streams}
    lines = [f"\n### {name}: time per step by part (ms), at a {span}-position span", ""]
    lines.append("| part | " + " | ".join(f"{batch} streams" for batch in streams) + " |")
    lines.append("|---|" + "---|" * len(streams))
    for part in parts[streams[0]]:
        lines.append(f"| {part} | " + " | ".join(f"{parts[b][part] * 1000:.2f}" for b in streams) + " |")
    kernels = [kernels_per_step(engine, batch, span) for batch in streams]
    lines.append("| kernels a step (eager) | " + " | ".join(str(k) for k in kernels) + " |")
    limit = next((rate for key, rate in BANDWIDTH.items() if key in device_name(engine.device)), None)
    if limit is not None:
        shares = [
            (weight_bytes(engine) + kv_bytes(engine, b, span)) / parts[b]["step, as served"] / limit for b in streams
        ]
        lines.append("| share of the bandwidth limit | " + " | ".join(f"{share:.0%}" for share in shares) + " |")
    first = first_audio(engine, prompt)
    lines.append("")
    lines.append(
        f"First audio of one stream: prefill {first['prefill'] * 1000:.0f} ms, first {engine.first_frames} frames "
        f"{first['first frames'] * 1000:.0f} ms, codec's first chunk {first['codec'] * 1000:.0f} ms "
        f"(total {sum(first.values()) * 1000:.0f} ms)"
    )
    return lines


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
