"""Text to semantic codes for one request: prefill the prompt, then decode one frame at a time until
<|im_end|>, through the same prefill and frame step the batched engine runs (decode.py).

This is the engine's reference path, and the one tools use: the scheduler (scheduler.py) runs many
requests through the same step and must give each the codes this gives it alone (greedy decoding).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from .decode import FrameDecoder
from .model import DualAR
from .sampling import Sampling

__all__ = ["Sampling", "frame_limit", "generate_codes", "iterate_frames"]

FRAMES_PER_BYTE = 5  # speech runs near 1.5 frames (21.5 a second) per character; leave room
MIN_FRAMES = 20


def frame_limit(text: str, prompt_length: int, max_seq_len: int) -> int:
    """The most frames to generate for `text`: generous for slow speech, bounded by the context."""
    return max(1, min(max_seq_len - prompt_length, FRAMES_PER_BYTE * len(text.encode("utf-8")) + MIN_FRAMES))


@torch.inference_mode()
def iterate_frames(
    model: DualAR, prompt: Tensor, im_end_id: int, max_new_frames: int, sampling: Sampling | None = None
) -> Iterator[Tensor]:
    """Yield each frame's codes (num_codebooks,) as soon as it is known not to be the last frame.

    Like the reference, the last decoded frame is dropped whether or not it is <|im_end|>, so a
    frame is released only once the next one exists. Without `sampling`, Sampling()'s defaults.
    """
    sampling = sampling if sampling is not None else Sampling()
    length = prompt.shape[1]
    max_new_frames = max(1, min(max_new_frames, model.config.max_seq_len - length))
    decoder = FrameDecoder(model, im_end_id, slots=1, max_len=length + max_new_frames)
    frame = decoder.start(0, prompt, sampling)[0]  # (1 + num_codebooks,): the main token, then the codes
    for step in range(1, max_new_frames):
        if frame[0] == im_end_id:
            return
        decoder.draw_noise([0])
        decoder.decode_step(1, length + step)
        following = decoder.slots.frames[0].clone()
        yield frame[1:]
        frame = following


def generate_codes(
    model: DualAR, prompt: Tensor, im_end_id: int, max_new_frames: int, sampling: Sampling | None = None
) -> Tensor:
    """All frames at once: codes (num_codebooks, frames)."""
    frames = list(iterate_frames(model, prompt, im_end_id, max_new_frames, sampling))
    if not frames:
        return torch.zeros(model.config.num_codebooks, 0, dtype=torch.long)
    return torch.stack(frames, dim=1).cpu()
