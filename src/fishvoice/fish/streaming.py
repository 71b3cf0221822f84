"""Streaming decode: codes to audio in chunks that join into what a one-shot decode gives.

The codec is causal, so a chunk's samples depend only on codes up to its end. Each chunk is
decoded with `context` earlier frames in front (covering the quantizer transformer's attention
window and the convolutions' reach) and only its own samples are kept.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor

from .codec import Codec

CONV_REACH_FRAMES = 8  # the decoder convolutions' and upsampling blocks' reach, in code frames, with margin


def context_frames(codec: Codec) -> int:
    return codec.config.quantizer_window + CONV_REACH_FRAMES


def decode_chunk(codec: Codec, codes: Tensor, start: int, end: int) -> Tensor:
    """Samples of frames [start, end) of `codes` (num_codebooks, frames), decoded with left context."""
    left = max(0, start - context_frames(codec))
    audio = codec.decode(codes[:, left:end])
    return audio[(start - left) * codec.config.frame_length :]


def decode_streaming(codec: Codec, codes: Tensor, first_frames: int = 10, chunk_frames: int = 40) -> Iterator[Tensor]:
    """Yield audio chunk by chunk: a short first chunk (time to first audio), then larger ones."""
    start, size = 0, first_frames
    total = codes.shape[1]
    while start < total:
        end = min(total, start + size)
        yield decode_chunk(codec, codes, start, end)
        start, size = end, chunk_frames
