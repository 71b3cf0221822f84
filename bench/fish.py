"""The Fish engine's speed: frames per second, real-time factor and time to first audio, with the
static KV cache against full recomputation of the sequence at every frame, in one run.

Random weights at the real sizes (S1-mini's slow and fast transformers and the published codec);
on a GPU both layouts, eager against compiled (CUDA graphs) decoding.

    python bench/fish.py [--frames 48] [--prompt 96] [--device cpu|cuda] [--layout s1-mini]
"""

from __future__ import annotations

import argparse
import time

import torch

from fishvoice.fish.codec import Codec, CodecConfig
from fishvoice.fish.config import DualARConfig
from fishvoice.fish.generate import FrameDecoder, Sampling
from fishvoice.fish.model import DualAR
from fishvoice.fish.streaming import decode_chunk

# Dimensions of the published checkpoints (Qwen3-0.6B-sized slow transformer for S1-mini; S2-Pro larger).
SIZES = {
    "s1-mini": dict(layout="s1-mini", vocab_size=155776, n_layer=28, n_head=16, n_local_heads=8, head_dim=128, dim=1024,
                    intermediate_size=3072, attention_qk_norm=True, max_seq_len=4096, codebook_size=4096, num_codebooks=10,
                    n_fast_layer=4, fast_dim=1024, fast_n_head=16, fast_n_local_heads=8, fast_head_dim=64, fast_intermediate_size=3072),
    "s2-pro": dict(layout="s2-pro", vocab_size=155776, n_layer=36, n_head=32, n_local_heads=8, head_dim=128, dim=2560,
                   intermediate_size=9728, attention_qk_norm=True, max_seq_len=4096, codebook_size=4096, num_codebooks=10,
                   n_fast_layer=4, fast_dim=1024, fast_n_head=16, fast_n_local_heads=8, fast_head_dim=64, fast_intermediate_size=3072,
                   scale_codebook_embeddings=True, norm_fastlayer_input=True),
}
FIRST_FRAMES = 10


def random_model(layout: str, device: torch.device, dtype: torch.dtype) -> DualAR:
    config = DualARConfig(**SIZES[layout])
    config.semantic_begin_id, config.semantic_end_id = 1000, 1000 + config.codebook_size - 1
    with torch.device(device):
        model = DualAR(config)
    return model.to(dtype).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def run(model: DualAR, codec: Codec, prompt: torch.Tensor, frames: int, cached: bool) -> dict[str, float]:
    """Generate `frames` frames (no early stop); time the first audio and the whole."""
    device = prompt.device
    model.setup_caches(prompt.shape[1] + frames + 1)
    decode = FrameDecoder(model, im_end_id=-1 % model.config.vocab_size, sampling=Sampling(seed=0))
    decode.bias[-1] = float("-inf")  # never end early: a fixed number of frames
    sequence, columns = prompt[None], []
    sync(device)
    started = time.perf_counter()
    first_audio = None
    for step in range(frames):
        length = sequence.shape[-1]
        if cached:
            inp, pos = (sequence, torch.arange(length, device=device)) if step == 0 else (sequence[..., -1:], torch.tensor([length - 1], device=device))
            column = decode(inp, pos)
        else:
            column = decode(sequence, None)  # the whole sequence again, no cache
        columns.append(column)
        sequence = torch.cat([sequence, column[None]], dim=-1)
        if step + 1 == FIRST_FRAMES:
            decode_chunk(codec, torch.cat(columns, dim=1)[1:], 0, FIRST_FRAMES)
            sync(device)
            first_audio = time.perf_counter() - started
    sync(device)
    generated = time.perf_counter() - started
    codes = torch.cat(columns, dim=1)[1:]
    codec.decode(codes)
    sync(device)
    total = time.perf_counter() - started
    audio_s = frames * codec.config.frame_length / codec.config.sample_rate
    return {"fps": frames / generated, "rtf": total / audio_s, "first_audio": first_audio or total, "total": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--prompt", type=int, default=96, help="prompt length in tokens")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--layout", nargs="+", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    layouts = args.layout or (["s1-mini", "s2-pro"] if device.type == "cuda" else ["s1-mini"])
    torch.manual_seed(0)
    codec = Codec(CodecConfig()).to(device).eval()
    print(f"device={device} dtype={dtype} threads={torch.get_num_threads()} frames={args.frames} prompt={args.prompt} tokens")
    for layout in layouts:
        model = random_model(layout, device, dtype)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        prompt = torch.randint(0, 900, (model.config.num_codebooks + 1, args.prompt), device=device)
        prompt[1:] = 0
        run(model, codec, prompt, 4, cached=True)  # warm-up
        rows = {"kv cache": run(model, codec, prompt, args.frames, cached=True),
                "full recompute": run(model, codec, prompt, args.frames, cached=False)}
        if device.type == "cuda":
            model.forward_fast = torch.compile(model.forward_fast, mode="reduce-overhead")
            run(model, codec, prompt, 8, cached=True)  # compile
            rows["compiled (CUDA graphs)"] = run(model, codec, prompt, args.frames, cached=True)
        print(f"\n{layout}: {params:.0f}M parameters (random weights), codec at published size")
        for name, row in rows.items():
            print(f"  {name:24} {row['fps']:7.2f} frames/s  RTF {row['rtf']:6.2f}  first audio {row['first_audio'] * 1000:7.0f} ms")
        base = rows["full recompute"]
        print(f"  kv cache speed-up: {rows['kv cache']['fps'] / base['fps']:.2f}x frames/s "
              f"(audio runs at {codec.config.sample_rate / codec.config.frame_length:.1f} frames/s)")


if __name__ == "__main__":
    main()
