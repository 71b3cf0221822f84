"""Prefill and the frame step: text-and-voice prompt in, one frame of codes per step out, for many
requests at once.

Every request in flight owns a slot: a row of the model's KV caches and of the static buffers in
`Slots` (its last frame, its position, its sampling settings, its repetition window and its noise).
`FrameDecoder.start` prefills one request's prompt into a free slot and samples its first frame;
`FrameDecoder.decode_step` then produces the next frame of every slot in rows [0, batch) at once: the
slow transformer over the last frame, the main token (restricted to the semantic tokens and
<|im_end|>, repetition-aware), then each codebook from the fast transformer, sampled in turn. Its
shapes depend only on (batch, length), it reads and writes only the static buffers, and it never
syncs with the host, so on a GPU it is compiled and captured as a CUDA graph per bucket (graphs.py).

The noise a frame consumes is drawn before the step, per slot from the slot's own generator, in the
reference's order and sizes (a uniform per vocabulary token for the main draw, again for the
repetition-aware draw, then one per code for each fast codebook), so a seed gives the reference's draws.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import torch
from torch import Tensor

from .model import CacheAccess, DualAR
from .quantize import candidate_head
from .sampling import RAS_WINDOW, TOP_K_LIMIT, RowParams, Sampling, sample, sample_main

CACHE_SPARE = 8  # cache positions past the last a request may use


class Slots:
    """The device-side state of every slot: static buffers the frame step reads and updates in place."""

    def __init__(self, count: int, num_codebooks: int, noise_width: int, device: torch.device):
        self.count = count
        # (count, 1 + num_codebooks): each slot's last frame, its main token then one code per codebook; the next input
        self.frames = torch.zeros(count, 1 + num_codebooks, dtype=torch.long, device=device)
        self.positions = torch.zeros(count, dtype=torch.long, device=device)  # where that frame goes
        self.active = torch.zeros(count, dtype=torch.long, device=device)  # 1 while a request owns the slot
        self.recent = torch.full((count, RAS_WINDOW), -1, dtype=torch.long, device=device)  # last main tokens, for RAS
        self.params = RowParams.allocate(count, device)
        self.uniform = torch.zeros(count, noise_width, device=device)  # the noise of the slot's next frame
        self.generators = [torch.Generator(device=device) for _ in range(count)]


class FrameDecoder:
    """Prefill into a slot, and the frame step over every slot, for one loaded model."""

    def __init__(self, model: DualAR, im_end_id: int, slots: int = 1, max_len: int | None = None):
        config = model.config
        self.model, self.im_end_id = model, im_end_id
        self.device = model.embeddings.weight.device
        # Positions a request may use. The cache holds a few more: a step's span is then never the whole cache,
        # which the compiler would specialise (one more compiled graph for the longest bucket).
        self.max_len = min(max_len or config.max_seq_len, config.max_seq_len - CACHE_SPARE)
        model.setup_caches(self.max_len + CACHE_SPARE, slots)
        semantic = torch.arange(config.semantic_begin_id, config.semantic_end_id + 1, device=self.device)
        self.candidate_ids = torch.cat([semantic, torch.tensor([im_end_id], device=self.device)])
        self.semantic_count = len(semantic)
        # Only the candidates' rows of the output projection: the same logits, a fraction of the work.
        self.head = candidate_head(model, self.candidate_ids)
        self.fast_positions = torch.arange(config.num_codebooks, device=self.device)
        self.vocab, self.codebook_size = config.vocab_size, config.codebook_size
        noise_width = 2 * config.vocab_size + (config.num_codebooks - 1) * config.codebook_size
        self.slots = Slots(slots, config.num_codebooks, noise_width, self.device)

    # -- host side: between steps -------------------------------------------------------------

    def draw_noise(self, slots: Iterable[int]) -> None:
        """The uniforms of each slot's next frame, from its own generator."""
        for slot in slots:
            self.slots.uniform[slot].uniform_(0, 1, generator=self.slots.generators[slot])

    def extend(self, slot: int, prompt: Tensor, begin: int, end: int) -> None:
        """Prefill positions [begin, end) of `prompt` into `slot`'s cache (a chunk of a long prompt; `start`
        does the last one and samples). Until then the slot is inactive at position `end`: a frame step
        over it writes only there, where the next chunk writes again."""
        if end >= self.max_len:
            raise ValueError(f"the prompt has {end}+ positions; the engine's context holds {self.max_len}")
        positions = torch.arange(begin, end, device=self.device)[None]
        inp = prompt[None, :, begin:end].to(self.device)
        self.model.forward_slow(inp, CacheAccess(slot, positions, end), head=self.head)
        self.slots.active[slot] = 0
        self.slots.positions[slot] = end

    def start(self, slot: int, prompt: Tensor, sampling: Sampling, cached: int = 0) -> Tensor:
        """Prefill `prompt` (1 + num_codebooks, T) into `slot` and sample its first frame; returns that
        frame (1, 1 + num_codebooks) on the device. The first `cached` positions are already in the
        slot's cache (a prefix restored from the prefix cache) and are not computed again."""
        length = prompt.shape[1]
        if length >= self.max_len:
            raise ValueError(f"the prompt has {length} positions; the engine's context holds {self.max_len}")
        s = self.slots
        s.params.set(slot, sampling)
        s.recent[slot] = -1  # the reference's window starts empty: the prefill's token does not enter it
        s.generators[slot].manual_seed(sampling.seed if sampling.seed is not None else random.getrandbits(63))
        self.draw_noise([slot])
        rows = slice(slot, slot + 1)
        positions = torch.arange(cached, length, device=self.device)[None]
        inp = prompt[None, :, cached:].to(self.device)
        logits, hidden = self.model.forward_slow(inp, CacheAccess(slot, positions, length), head=self.head)
        frame = self.sample_frame(logits[:, -1], hidden[:, -1], rows, repetition_aware=False)
        s.frames[slot] = frame[0]
        s.positions[slot] = length
        s.active[slot] = 1
        return frame

    def reset(self) -> None:
        """Every slot free and empty."""
        self.slots.active.zero_()
        self.slots.positions.zero_()
        self.slots.frames.zero_()
        self.slots.recent.fill_(-1)

    def free(self, slot: int) -> None:
        """The slot no longer steps forward: its position stays at 0, inside every cache bucket."""
        self.slots.active[slot] = 0
        self.slots.positions[slot] = 0

    # -- device side: the step ----------------------------------------------------------------

    def decode_step(self, batch: int, length: int) -> None:
        """The next frame of slots [0, batch), attending over the first `length` cached positions
        (more than every active slot's position). Updates the slots' buffers in place."""
        # Bounds the compiler can use, so a slice to `batch` or `length` stays one graph for every size.
        torch._check_with(RuntimeError, 1 <= batch <= self.slots.count, lambda: "batch out of range")
        torch._check_with(RuntimeError, 1 <= length <= self.max_len, lambda: "length out of range")
        s, rows = self.slots, slice(0, batch)
        cache = CacheAccess(0, s.positions[rows, None], length)
        logits, hidden = self.model.forward_slow(s.frames[rows, :, None], cache, head=self.head)
        frame = self.sample_frame(logits[:, -1], hidden[:, -1], rows, repetition_aware=True)
        s.recent[rows] = torch.cat([s.recent[rows, 1:], frame[:, :1]], dim=1)
        s.frames[rows] = frame
        s.positions[rows] += s.active[rows]

    def sample_frame(self, logits: Tensor, hidden: Tensor, rows: slice, repetition_aware: bool) -> Tensor:
        """One frame per row (batch, 1 + num_codebooks): the main token from the slow transformer's
        candidate logits, then each codebook from the fast transformer."""
        s, model = self.slots, self.model
        config = model.config
        uniform, params, vocab = s.uniform[rows], s.params.rows(rows), self.vocab
        token = sample_main(
            logits,
            uniform[:, :vocab][:, self.candidate_ids],
            uniform[:, vocab : 2 * vocab][:, self.candidate_ids],
            params,
            s.recent[rows] if repetition_aware else None,
            self.candidate_ids,
            self.semantic_count,
        )
        model.forward_fast(hidden, self.fast_positions[:1])  # position 0 holds the slow transformer's state
        code = (token - config.semantic_begin_id).clamp(0, config.codebook_size - 1)
        frame = [token, code]
        k = min(TOP_K_LIMIT, self.codebook_size)
        for codebook in range(1, config.num_codebooks):
            fast_logits = model.forward_fast(model.fast_embeddings(code), self.fast_positions[codebook : codebook + 1])
            offset = 2 * vocab + (codebook - 1) * self.codebook_size
            code = sample(
                fast_logits,
                uniform[:, offset : offset + self.codebook_size],
                params.temperature,
                params.top_p,
                params.top_k,
                k,
            )
            frame.append(code)
        return torch.stack(frame, dim=1)
