"""Text to semantic codes: prefill the prompt, then decode one frame at a time until <|im_end|>.

Sampling follows the reference sampler: top-k and top-p over the sorted distribution (the best
token always kept), temperature, and the reference's repetition-aware sampling on the main token
(a semantic token already among the last 10 is resampled at temperature 1.0, top-p 0.9). The main
token may only be a semantic token or <|im_end|>. The reference accepts a repetition penalty but
no longer applies it; neither do we.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .model import DualAR

RAS_WINDOW = 10
RAS_TEMPERATURE = 1.0
RAS_TOP_P = 0.9
FRAMES_PER_BYTE = 5  # speech runs near 1.5 frames (21.5 a second) per character; leave room
MIN_FRAMES = 20


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 30
    seed: int | None = None


def _probs(logits: Tensor, temperature: float, top_p: float, top_k: int) -> Tensor:
    sorted_logits, order = torch.sort(logits, descending=True)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    drop = (cumulative > top_p) | (torch.arange(logits.shape[-1], device=logits.device) >= top_k)
    drop[0] = False
    logits = torch.where(drop.scatter(-1, order, drop), float("-inf"), logits)
    return torch.softmax(logits / max(temperature, 1e-5), dim=-1)


def _draw(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    # argmax(p / E) with E ~ Exp(1) is a draw from p, without a device sync.
    noise = -torch.log(torch.rand(probs.shape, generator=generator, device=probs.device))
    return torch.argmax(probs / noise, dim=-1, keepdim=True)


def _sample(logits: Tensor, sampling: Sampling, generator: torch.Generator | None, temperature: float | None = None,
            top_p: float | None = None) -> Tensor:
    probs = _probs(logits.float(), temperature if temperature is not None else sampling.temperature,
                   top_p if top_p is not None else sampling.top_p, sampling.top_k)
    return _draw(probs, generator)


class FrameDecoder:
    """One frame: the main token from the slow transformer, then each codebook from the fast one."""

    def __init__(self, model: DualAR, im_end_id: int, sampling: Sampling):
        config = model.config
        self.model, self.sampling = model, sampling
        device = model.embeddings.weight.device
        self.bias = torch.full((config.vocab_size,), float("-inf"), device=device)
        self.bias[config.semantic_begin_id : config.semantic_end_id + 1] = 0.0
        self.bias[im_end_id] = 0.0
        self.generator = torch.Generator(device=device).manual_seed(sampling.seed) if sampling.seed is not None else None
        self.recent = torch.full((RAS_WINDOW,), -1, dtype=torch.long, device=device)

    def __call__(self, inp: Tensor, input_pos: Tensor) -> Tensor:
        """Decode the frame after `inp` (positions `input_pos`); returns a (1 + num_codebooks, 1) column."""
        config = self.model.config
        logits, hidden = self.model.forward_slow(inp, input_pos)
        biased = logits[0, -1] + self.bias
        token = _sample(biased, self.sampling, self.generator)
        fallback = _sample(biased, self.sampling, self.generator, RAS_TEMPERATURE, RAS_TOP_P)
        semantic = (token >= config.semantic_begin_id) & (token <= config.semantic_end_id)
        token = torch.where(semantic & (self.recent == token).any(), fallback, token)
        self.recent = torch.cat([self.recent[1:], token])

        self.model.forward_fast(hidden, 0)  # fills the fast cache at position 0 with the slow hidden state
        code = (token - config.semantic_begin_id).clamp(0, config.codebook_size - 1)
        column = [token, code]
        for codebook in range(1, config.num_codebooks):
            fast_logits = self.model.forward_fast(self.model.fast_embeddings(code), codebook)
            code = _sample(fast_logits[0, -1], self.sampling, self.generator)
            column.append(code)
        return torch.cat(column)[:, None]


def frame_limit(text: str, prompt_length: int, max_seq_len: int) -> int:
    """The most frames to generate for `text`: generous for slow speech, bounded by the context."""
    return max(1, min(max_seq_len - prompt_length, FRAMES_PER_BYTE * len(text.encode("utf-8")) + MIN_FRAMES))


@torch.inference_mode()
def iterate_frames(model: DualAR, prompt: Tensor, im_end_id: int, max_new_frames: int, sampling: Sampling = Sampling()) -> Iterator[Tensor]:
    """Yield each frame's codes (num_codebooks,) as soon as it is known not to be the last column.

    Like the reference, the last decoded column is dropped whether or not it is <|im_end|>, so a
    frame is released only once the next one exists.
    """
    device = model.embeddings.weight.device
    length = prompt.shape[1]
    max_new_frames = max(1, min(max_new_frames, model.config.max_seq_len - length))
    model.setup_caches(length + max_new_frames)
    decode = FrameDecoder(model, im_end_id, sampling)
    column = decode(prompt[None].to(device), torch.arange(length, device=device))
    for step in range(1, max_new_frames):
        if column[0, 0] == im_end_id:
            return
        following = decode(column[None], torch.tensor([length + step - 1], device=device))
        yield column[1:, 0]
        column = following


def generate_codes(model: DualAR, prompt: Tensor, im_end_id: int, max_new_frames: int, sampling: Sampling = Sampling()) -> Tensor:
    """All frames at once: codes (num_codebooks, frames)."""
    frames = list(iterate_frames(model, prompt, im_end_id, max_new_frames, sampling))
    if not frames:
        return torch.zeros(model.config.num_codebooks, 0, dtype=torch.long)
    return torch.stack(frames, dim=1)
