"""The Fish engine as the voice backend uses it: a checkpoint's text-to-semantic model and codec,
reference voices encoded to prompt codes, and speech streamed out in chunks as frames are generated,
for many callers at once.

`stream` may be called from any number of threads: their requests are decoded together, one frame of
every request per step (scheduler.py), each request's audio decoded chunk by chunk on the codec's
thread (streaming.py). Everything is captured and warmed up in the constructor, so the first
caller does not pay for it. The engine is built from loaded parts (`FishEngine(model, codec, ...)`);
`FishEngine.load(checkpoint)` reads them from a checkpoint first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .checkpoints import load_text_to_semantic
from .codec import Codec, CodecConfig, load_codec
from .decode import FrameDecoder
from .errors import CheckpointError, InvalidRequestError
from .generate import Sampling, frame_limit
from .graphs import CapturedSteps, EagerSteps
from .model import DualAR
from .prefix_cache import PrefixCache
from .prompt import speech_turns, system_turn
from .scheduler import FrameRequest, Scheduler
from .streaming import AudioStream, CodecWorker, chunked
from .tokenizer import FishTokenizer

log = logging.getLogger(__name__)

DEFAULT_CONTEXT = 2048  # positions per slot: a 30 s reference voice (646 frames) and a long sentence


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("fish device 'cuda' asked for, but torch sees no CUDA device")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


class FishEngine:
    """One loaded checkpoint serving up to `max_concurrency` requests at once (more wait their turn).

    compile: on a GPU, compile the frame step (torch.compile, whole) before capturing it; the
    compiler's cache goes to `compile_cache`, where later workers start warm. cuda_graphs: on a GPU,
    capture the step as CUDA graphs (without compile: the quick start). On a CPU the step runs eagerly.
    prefill_chunk: prompt positions prefilled between two frame steps, at most (arrivals never stall the
    streams generating for longer).
    """

    def __init__(
        self,
        model: DualAR,
        codec: Codec,
        im_end_id: int,
        tokenizer: FishTokenizer | None = None,
        *,
        compile: bool = False,
        cuda_graphs: bool = True,
        compile_cache: str | None = None,
        max_concurrency: int | None = None,
        max_len: int | None = None,
        first_frames: int = 4,
        chunk_frames: int = 24,
        prefill_chunk: int = 256,
    ) -> None:
        """An engine over models already built (`load` reads them from a checkpoint; benchmarks build them
        with random weights at the published sizes), captured and warmed up before it returns."""
        started = time.perf_counter()
        self.model, self.codec, self.tokenizer = model.requires_grad_(False), codec.requires_grad_(False), tokenizer
        self.device = model.embeddings.weight.device
        cuda = self.device.type == "cuda"
        self.sample_rate = codec.config.sample_rate
        self.first_frames, self.chunk_frames = first_frames, chunk_frames
        self.max_concurrency = max_concurrency or (16 if cuda else 4)
        if compile and not cuda:
            log.info("fish: compiling is for GPUs; the frame step runs eagerly on %s", self.device)
        decoder = FrameDecoder(model, im_end_id, slots=self.max_concurrency, max_len=max_len or DEFAULT_CONTEXT)
        self.max_len = decoder.max_len
        runner = (
            CapturedSteps(decoder, self.max_concurrency, compile=compile, compile_cache=compile_cache)
            if cuda and (cuda_graphs or compile)
            else EagerSteps(decoder)
        )
        prefix_cache = PrefixCache(model, (4 if cuda else 1) * self.max_len)
        waiting = 2 * self.max_concurrency
        self.scheduler = Scheduler(
            decoder, runner, max_waiting=waiting, prefix_cache=prefix_cache, prefill_chunk=prefill_chunk
        )
        self.codec_worker = CodecWorker(codec)
        self._warm_up()
        self.warmup_s = time.perf_counter() - started
        log.info(
            "fish engine ready on %s: %d requests at once, %d positions each, %s, warm-up %.1f s",
            self.device,
            self.max_concurrency,
            self.max_len,
            "CUDA graphs" + (" (compiled)" if compile else "") if runner.captured else "eager",
            self.warmup_s,
        )

    @classmethod
    def load(
        cls, checkpoint: str | Path, *, device: str = "auto", dtype: str = "auto", quant: str = "none", **options: Any
    ) -> FishEngine:
        """The engine of a checkpoint directory (its model, tokenizer and codec), its weights int8 with
        `quant` "int8"; `options` are the constructor's."""
        path = Path(checkpoint)
        resolved = resolve_device(device)
        precision = resolve_dtype(dtype, resolved)
        text_to_semantic = load_text_to_semantic(path, resolved, precision, quant)
        codec_config = CodecConfig.from_json(path / "codec.json") if (path / "codec.json").is_file() else CodecConfig()
        # The codec stays in fp32 off the GPU: its output is the audio itself.
        codec = load_codec(
            path / "codec.pth", codec_config, resolved, precision if resolved.type == "cuda" else torch.float32
        )
        if codec_config.num_codebooks != text_to_semantic.model.config.num_codebooks:
            raise CheckpointError(
                f"{path / 'codec.pth'}: the codec has {codec_config.num_codebooks} codebooks; "
                f"the model expects {text_to_semantic.model.config.num_codebooks}"
            )
        tokenizer = text_to_semantic.tokenizer
        return cls(text_to_semantic.model, codec, tokenizer.im_end_id, tokenizer, **options)

    def _warm_up(self) -> None:
        """One short request through the whole path (prefill, steps, codec), so the first caller finds it warm."""
        config = self.model.config
        prompt = torch.zeros(1 + config.num_codebooks, 8, dtype=torch.long)
        for _ in self.speak(prompt, self.first_frames + 2, Sampling(seed=0)):
            pass

    # -- what the voice backend calls ---------------------------------------------------------

    def encode_reference(self, samples: np.ndarray) -> Tensor:
        """Prompt codes of a reference voice: mono float samples at the codec's rate."""
        audio = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
        return self.codec_worker.call(lambda: self.codec.encode(audio.to(self.device)).cpu()).result()

    def stream(
        self, text: str, reference: tuple[Tensor, str] | None, sampling: Sampling, stop: threading.Event | None = None
    ) -> Iterator[np.ndarray]:
        """Speech for `text` in chunks (float32 at `sample_rate`): a short first chunk, then longer ones.
        Safe to call from many threads at once."""
        if self.tokenizer is None:
            raise RuntimeError("this engine was built without a tokenizer; use speak() with a prompt")
        codes_ref, text_ref = reference if reference is not None else (None, None)
        num_codebooks = self.model.config.num_codebooks
        system = system_turn(self.tokenizer, num_codebooks, text_ref, codes_ref)
        prompt = torch.cat([system, speech_turns(self.tokenizer, num_codebooks, text)], dim=1)
        yield from self.speak(
            prompt, frame_limit(text, prompt.shape[1], self.max_len), sampling, prefix=system.shape[1], stop=stop
        )

    def speak(
        self,
        prompt: Tensor,
        max_frames: int,
        sampling: Sampling,
        *,
        prefix: int = 0,
        stop: threading.Event | None = None,
    ) -> Iterator[np.ndarray]:
        """Speech for a prompt matrix (1 + num_codebooks, T): at most max_frames - 1 frames, decoded in chunks."""
        try:
            sampling.check()
        except ValueError as exc:
            raise InvalidRequestError(f"fish sampling: {exc}") from None
        if prompt.shape[1] + 1 >= self.max_len:
            raise InvalidRequestError(
                f"the voice's prompt takes {prompt.shape[1]} positions; the engine holds "
                f"{self.max_len} (FISHVOICE_FISH_MAX_LEN): use a shorter reference voice or sentence",
            )
        frames = self.scheduler.submit(
            FrameRequest(prompt, min(max_frames, self.max_len - prompt.shape[1]), sampling, prefix, stop)
        )
        audio = AudioStream()
        try:
            for codes in chunked(frames, self.first_frames, self.chunk_frames):
                if stop is not None and stop.is_set():
                    return
                yield self.codec_worker.decode(audio, codes).result()
        finally:
            frames.cancel()  # a caller that stops reading frees the slot at once

    def release_memory(self) -> None:
        """Give cached GPU blocks back after an out-of-memory error."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def stats(self) -> dict[str, Any]:
        """What the engine has done so far (for logs, tests and benchmarks)."""
        scheduler = self.scheduler
        running, waiting = scheduler.load()
        cache = scheduler.prefix_cache
        return {
            "slots": self.max_concurrency,
            "running": running,
            "waiting": waiting,
            "since_progress_s": time.monotonic() - scheduler.progress_at,
            "steps": scheduler.steps_run,
            "failed_steps": scheduler.steps_failed,
            "prefills": scheduler.prefills,
            "longest_prefill_between_steps": scheduler.longest_prefill_between_steps,
            "prefix_hits": cache.hits if cache else 0,
            "prefix_misses": cache.misses if cache else 0,
            "graph_replays": scheduler.runner.replays,
            "codec_batches": self.codec_worker.batches,
            "codec_chunks": self.codec_worker.chunks,
            "frames": scheduler.frames_made,
            "step_s": scheduler.step_s,
            "prefill_s": scheduler.prefill_s,
            "prefill_positions": scheduler.prefill_positions,
            "out_of_memory": scheduler.out_of_memory,
            "warmup_s": self.warmup_s,
        }

    def close(self) -> None:
        self.scheduler.close()
        self.codec_worker.close()
