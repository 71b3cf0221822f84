"""The Fish engine as the voice backend uses it: a checkpoint's text-to-semantic model and codec,
reference voices encoded to prompt codes, and speech streamed out in chunks as frames are generated."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .checkpoints import load_text_to_semantic
from .codec import CodecConfig, load_codec
from .errors import CheckpointError
from .generate import Sampling, frame_limit, iterate_frames
from .prompt import build_prompt
from .streaming import decode_chunk

log = logging.getLogger(__name__)


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
    """One loaded checkpoint. Generation is serialized: the static KV cache serves one sequence."""

    def __init__(self, checkpoint: str | Path, *, device: str = "auto", dtype: str = "auto", compile: bool = False,
                 first_frames: int = 10, chunk_frames: int = 40):
        path = Path(checkpoint)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.t2s = load_text_to_semantic(path, self.device, self.dtype)
        codec_config = CodecConfig.from_json(path / "codec.json") if (path / "codec.json").is_file() else CodecConfig()
        # The codec stays in fp32 off the GPU: its output is the audio itself.
        self.codec = load_codec(path / "codec.pth", codec_config, self.device, self.dtype if self.device.type == "cuda" else torch.float32)
        if codec_config.num_codebooks != self.t2s.model.config.num_codebooks:
            raise CheckpointError(f"{path / 'codec.pth'}: the codec has {codec_config.num_codebooks} codebooks; "
                                  f"the model expects {self.t2s.model.config.num_codebooks}")
        self.sample_rate = codec_config.sample_rate
        self.first_frames, self.chunk_frames = first_frames, chunk_frames
        self._lock = threading.Lock()
        if compile:
            self._compile()

    def _compile(self) -> None:
        if self.device.type != "cuda":
            log.info("fish: torch.compile is for GPUs; running eager on %s", self.device)
            return
        model = self.t2s.model
        model.forward_fast = torch.compile(model.forward_fast, mode="reduce-overhead", dynamic=False)  # CUDA graphs
        log.info("fish: fast transformer compiled with CUDA graphs")

    def release_memory(self) -> None:
        """Give cached GPU blocks back after an out-of-memory error."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def encode_reference(self, samples: np.ndarray) -> torch.Tensor:
        """Prompt codes of a reference voice: mono float samples at the codec's rate."""
        with self._lock:
            return self.codec.encode(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)).to(self.device)).cpu()

    def stream(self, text: str, reference: tuple[torch.Tensor, str] | None, sampling: Sampling,
               stop: threading.Event | None = None) -> Iterator[np.ndarray]:
        """Speech for `text` in chunks (float32 at `sample_rate`): a short first chunk, then longer ones."""
        codes_ref, text_ref = reference if reference is not None else (None, None)
        with self._lock:
            tokenizer, model = self.t2s.tokenizer, self.t2s.model
            prompt = build_prompt(tokenizer, model.config.num_codebooks, text, text_ref, codes_ref)
            limit = frame_limit(text, prompt.shape[1], model.config.max_seq_len)
            frames: list[torch.Tensor] = []
            emitted = 0
            for frame in iterate_frames(model, prompt, tokenizer.im_end_id, limit, sampling):
                if stop is not None and stop.is_set():
                    return
                frames.append(frame)
                if len(frames) - emitted >= (self.first_frames if emitted == 0 else self.chunk_frames):
                    yield self._decode(frames, emitted)
                    emitted = len(frames)
            if len(frames) > emitted:
                yield self._decode(frames, emitted)

    def _decode(self, frames: list[torch.Tensor], start: int) -> np.ndarray:
        codes = torch.stack(frames, dim=1)
        return decode_chunk(self.codec, codes, start, codes.shape[1]).float().cpu().numpy()
