"""The Fish engine's speed on the path the server runs (FishEngine: scheduler, frame step, codec worker),
with random weights at the published sizes of both checkpoints and the published codec.

Prints, per layout: warm-up time; one stream's frames/s, real-time factor and time to first audio
(prefill plus the first chunk's audio); then the aggregate frames/s of N streams at once with the
slowest stream's frames/s, and the ratio of the largest N's aggregate to the smallest N's: for the
frames alone (the scheduler: prefill and frame steps) and with their audio (engine.speak: the codec
too, as the voice backend runs it). Real time is 21.5 frames/s. No stream ends early (<|im_end|> is
never sampled), so every stream makes --frames frames.

    python bench/fish.py                         # CPU: S1-mini size, fp32, 1 and 8 streams
    python bench/fish.py --device cuda           # GPU: both sizes, bf16, CUDA graphs, 1/4/16/64 streams
    python bench/fish.py --device cuda --compile --compile-cache /tmp/fish-cache   # compiled; warm-up cold and warm
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

import torch

from fishvoice.fish.codec import Codec, CodecConfig
from fishvoice.fish.config import PUBLISHED_IM_END, PUBLISHED_SIZES, published_config
from fishvoice.fish.engine import FishEngine
from fishvoice.fish.generate import Sampling
from fishvoice.fish.model import DualAR
from fishvoice.fish.quantize import quantize_model
from fishvoice.fish.scheduler import FrameRequest

FRAME_RATE = 44100 / 2048


def random_model(layout: str, device: torch.device, dtype: torch.dtype) -> DualAR:
    config = published_config(layout)
    torch.manual_seed(0)
    with torch.device(device):
        model = DualAR(config).to(dtype)
    with torch.no_grad():
        # Random logits spread over ~sqrt(dim): a zero row for <|im_end|> never makes the top 30,
        # so no stream ends early.
        model.embeddings.weight[PUBLISHED_IM_END] = 0
    return model.eval()


def build(
    layout: str, args: argparse.Namespace, slots: int, quant: str = "none", prefill_chunk: int | None = None
) -> FishEngine:
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = random_model(layout, device, dtype)
    if quant == "int8":
        quantize_model(model)
    torch.manual_seed(1)
    codec = Codec(CodecConfig()).to(device=device, dtype=dtype).eval()
    return FishEngine(
        model,
        codec,
        PUBLISHED_IM_END,
        max_concurrency=slots,
        max_len=args.prompt + args.frames + 64,
        compile=args.compile,
        cuda_graphs=not args.eager,
        compile_cache=args.compile_cache,
        prefill_chunk=prefill_chunk or args.prefill_chunk,
    )


def prompt(args: argparse.Namespace) -> torch.Tensor:
    matrix = torch.zeros(1 + PUBLISHED_SIZES["s1-mini"]["num_codebooks"], args.prompt, dtype=torch.long)
    matrix[0] = torch.randint(0, 150000, (args.prompt,), generator=torch.Generator().manual_seed(2))
    return matrix


def one_stream(engine: FishEngine, args: argparse.Namespace, audio: bool, seed: int = 0) -> dict[str, float]:
    """One request: with audio, through engine.speak (frames, codec, chunks: what the voice backend gets);
    without, its frames straight from the engine's scheduler (prefill and frame steps alone)."""
    started = time.perf_counter()
    first, frames = None, 0
    if audio:
        pieces = (
            len(chunk) // engine.codec.config.frame_length
            for chunk in engine.speak(prompt(args), args.frames + 1, Sampling(seed=seed))
        )
    else:
        pieces = (1 for _ in engine.scheduler.submit(FrameRequest(prompt(args), args.frames + 1, Sampling(seed=seed))))
    for count in pieces:
        first = first or time.perf_counter() - started
        frames += count
    total = time.perf_counter() - started
    return {"frames": frames, "fps": frames / total, "rtf": total * FRAME_RATE / frames, "first": first or total}


def many_streams(engine: FishEngine, args: argparse.Namespace, count: int, audio: bool) -> dict[str, float]:
    results: list[dict[str, float]] = [{} for _ in range(count)]

    def run(index: int) -> None:
        results[index] = one_stream(engine, args, audio, seed=index)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {
        "streams": count,
        "aggregate": sum(r["frames"] for r in results) / wall,
        "slowest": min(r["fps"] for r in results),
        "first_p50": sorted(r["first"] for r in results)[count // 2],
    }


def report(engine: FishEngine, args: argparse.Namespace) -> float:
    """Prints the engine's figures; returns one stream's frames/s with audio."""
    single = one_stream(engine, args, audio=True)
    print(
        f"  1 stream, with audio: {single['fps']:.1f} frames/s, RTF {single['rtf']:.3f}, "
        f"first audio {single['first'] * 1000:.0f} ms"
    )
    for audio in (False, True):
        rows = [many_streams(engine, args, n, audio) for n in args.streams]
        print(f"  {'with audio (engine.speak)' if audio else 'frames only (scheduler)'}:")
        for row in rows:
            print(
                f"    {row['streams']:3d} streams: aggregate {row['aggregate']:8.1f} frames/s, "
                f"slowest stream {row['slowest']:6.1f} frames/s ({row['slowest'] / FRAME_RATE:.2f}x real time), "
                f"first {'audio' if audio else 'frame'} p50 "
                f"{row['first_p50'] * 1000:.0f} ms"
            )
        print(
            f"    ratio: {rows[-1]['streams']} streams' aggregate / {rows[0]['streams']}'s = "
            f"{rows[-1]['aggregate'] / rows[0]['aggregate']:.2f}"
        )
    return single["fps"]


def burst(engine: FishEngine, args: argparse.Namespace, arrivals: int) -> dict[str, float]:
    """Two streams generating while `arrivals` requests come at once: the arrivals' first audio (p50, p95)
    and the longest wait between two frames of a running stream."""
    started = threading.Event()
    gaps: list[float] = []

    def run(seed: int) -> None:
        last = None
        stream = engine.scheduler.submit(FrameRequest(prompt(args), 4 * args.frames, Sampling(seed=seed)))
        for index, _ in enumerate(stream):
            now = time.perf_counter()
            if last is not None:
                gaps.append(now - last)
            last = now
            if index == 3:
                started.set()

    running = [threading.Thread(target=run, args=(seed,)) for seed in (100, 101)]
    for thread in running:
        thread.start()
    started.wait()
    firsts = [0.0] * arrivals

    def arrive(index: int) -> None:
        firsts[index] = one_stream(engine, args, audio=True, seed=index)["first"]

    threads = [threading.Thread(target=arrive, args=(i,)) for i in range(arrivals)]
    for thread in threads:
        thread.start()
    for thread in [*threads, *running]:
        thread.join()
    ordered = sorted(firsts)
    return {
        "p50": ordered[arrivals // 2],
        "p95": ordered[min(arrivals - 1, round(0.95 * (arrivals - 1)))],
        "gap": max(gaps),
    }


def burst_report(layout: str, args: argparse.Namespace) -> None:
    """A burst of arrivals with whole prompts prefilled at once between two steps (as before chunking) and
    with `--prefill-chunk` positions at most."""
    slots = args.burst + 2
    rows = {}
    for name, chunk in (
        ("whole prompts at once", args.prompt * slots),
        (f"chunks of {args.prefill_chunk}", args.prefill_chunk),
    ):
        engine = build(layout, args, slots, prefill_chunk=chunk)
        rows[name] = burst(engine, args, args.burst)
        engine.close()
    print(f"\n{layout}: {args.burst} requests arrive at once beside 2 generating ({args.prompt}-position prompts)")
    for name, row in rows.items():
        print(
            f"  {name:24s} burst first audio p50 {row['p50'] * 1000:6.0f} ms, p95 {row['p95'] * 1000:6.0f} ms; "
            f"running streams' longest gap {row['gap'] * 1000:6.0f} ms"
        )
    before, after = rows.values()
    print(f"  longest gap after / before: {after['gap'] / before['gap']:.2f}")


def profile(layouts: list[str], args: argparse.Namespace) -> None:
    """The step measured inside, for every size and weight format (fish_profile.py): one Markdown table each."""
    from fish_profile import profile_table

    quants = ["none", "int8"] if args.quant == ["none"] else args.quant
    for layout in layouts:
        for quant in quants:
            engine = build(layout, args, max(args.streams), quant)
            how = f"{'int8' if quant == 'int8' else 'bf16' if args.device.startswith('cuda') else 'fp32'} weights"
            name = f"{layout}, {how}, warm-up {engine.warmup_s:.1f} s{' (compiled)' if args.compile else ''}"
            print("\n".join(profile_table(engine, name, prompt(args), args.streams)), flush=True)
            engine.close()
            del engine
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()


def warmup_in_fresh_process(layout: str, args: argparse.Namespace) -> float:
    """Start-up time of a new worker process (what a RunPod cold start pays), given the compile cache as it is."""
    command = [
        sys.executable,
        __file__,
        "--device",
        args.device,
        "--layout",
        layout,
        "--warmup-only",
        "--frames",
        str(args.frames),
        "--prompt",
        str(args.prompt),
        "--slots",
        str(max(args.streams)),
        *(["--compile"] if args.compile else []),
        *(["--compile-cache", args.compile_cache] if args.compile_cache else []),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["warmup_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--layout", nargs="+", default=None, choices=list(PUBLISHED_SIZES))
    parser.add_argument(
        "--frames", type=int, default=None, help="frames per stream (default: 200 on a GPU, 24 on a CPU)"
    )
    parser.add_argument(
        "--prompt", type=int, default=None, help="prompt positions (default: 300 on a GPU, 96 on a CPU)"
    )
    parser.add_argument(
        "--streams", type=int, nargs="+", default=None, help="concurrent streams (default: 1 4 16 64; CPU: 1 8)"
    )
    parser.add_argument("--slots", type=int, default=None, help="engine slots (default: the most streams)")
    parser.add_argument("--eager", action="store_true", help="no CUDA graphs")
    parser.add_argument("--compile", action="store_true", help="torch.compile the step before capturing it")
    parser.add_argument("--compile-cache", default=None)
    parser.add_argument(
        "--quant", nargs="+", default=["none"], choices=["none", "int8"], help="weights: float, int8, or both"
    )
    parser.add_argument("--burst", type=int, default=0, help="only: this many requests arriving at once")
    parser.add_argument("--profile", action="store_true", help="only: the step measured inside (fish_profile.py)")
    parser.add_argument("--prefill-chunk", type=int, default=256, help="prompt positions between two steps, at most")
    parser.add_argument("--warmup-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    args.frames = args.frames or (200 if cuda else 24)
    args.prompt = args.prompt or (300 if cuda else 96)
    args.streams = args.streams or ([1, 16, 64] if cuda and args.profile else [1, 4, 16, 64] if cuda else [1, 8])
    layouts = args.layout or (["s1-mini", "s2-pro"] if cuda else ["s1-mini"])
    if args.warmup_only:
        engine = build(layouts[0], args, args.slots or max(args.streams))
        print(json.dumps({"warmup_s": engine.warmup_s}))
        return
    mode = "eager" if args.eager or not cuda else "compiled + CUDA graphs" if args.compile else "CUDA graphs"
    print(
        f"device={args.device} ({torch.cuda.get_device_name() if cuda else f'{torch.get_num_threads()} threads'}) "
        f"{mode}, prompt {args.prompt} positions, {args.frames} frames a stream; real time is {FRAME_RATE:.1f} frames/s"
    )
    if args.burst:
        for layout in layouts:
            burst_report(layout, args)
        return
    if args.profile:
        profile(layouts, args)
        return
    for layout in layouts:
        if cuda and args.compile:
            cold, warm = warmup_in_fresh_process(layout, args), warmup_in_fresh_process(layout, args)
            print(f"\n{layout}: warm-up in a fresh process, compile cache cold {cold:.1f} s, warm {warm:.1f} s")
        alone: dict[str, float] = {}
        for quant in args.quant:
            engine = build(layout, args, args.slots or max(args.streams), quant)
            weights = sum(t.numel() * t.element_size() for t in engine.model.state_dict().values()) / 1e9
            print(
                f"\n{layout} ({'int8 weights' if quant == 'int8' else 'float weights'}, {weights:.2f} GB, random), "
                f"published codec; engine warm-up {engine.warmup_s:.1f} s"
            )
            alone[quant] = report(engine, args)
            print(f"  engine: {engine.stats()}")
            engine.close()
            del engine
            if cuda:
                torch.cuda.empty_cache()
        if len(alone) == 2:
            print(f"  int8 / float, one stream with audio: {alone['int8'] / alone['none']:.2f}x the frames/s")


if __name__ == "__main__":
    main()
