"""The dual autoregressive transformer, gpt-fast style: plain modules, explicit static KV caches,
a prefill/decode step for the slow transformer and a per-codebook step for the fast one.

The caches hold many sequences at once ("slots"): (slots, kv_heads, length, head_dim), each row at
its own position, so one decode step serves every request in flight. Grouped-query attention reads
each cached key and value once, for all the query heads that share it, instead of copying the cache.

Module and parameter names follow the published checkpoints, so their state dicts load as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import DualARConfig

M = TypeVar("M", bound=nn.Module)


class KVCache(nn.Module):
    """Keys and values of every position so far, for each slot: (slots, kv_heads, max_len, head_dim)."""

    k_cache: Tensor  # buffers, declared for the type checker
    v_cache: Tensor

    def __init__(self, slots: int, max_len: int, n_heads: int, head_dim: int, dtype: torch.dtype):
        super().__init__()
        self.register_buffer("k_cache", torch.zeros(slots, n_heads, max_len, head_dim, dtype=dtype), persistent=False)
        self.register_buffer("v_cache", torch.zeros(slots, n_heads, max_len, head_dim, dtype=dtype), persistent=False)

    def update(self, first: int, input_pos: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v (batch, kv_heads, seq, head_dim) of slots first .. first + batch - 1 at `input_pos`
        (batch, seq); return those slots' whole caches (views, no copy)."""
        k_rows, v_rows = self.k_cache[first : first + k.shape[0]], self.v_cache[first : first + k.shape[0]]
        batch = torch.arange(k.shape[0], device=k.device)[:, None]
        k_rows[batch, :, input_pos] = k.transpose(1, 2).to(k_rows.dtype)
        v_rows[batch, :, input_pos] = v.transpose(1, 2).to(v_rows.dtype)
        return k_rows, v_rows


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def layers_of(layers: nn.ModuleList, kind: type[M]) -> list[M]:
    """The modules of a ModuleList as what they are (it hands them out typed as plain modules)."""
    typed = [layer for layer in layers if isinstance(layer, kind)]
    if len(typed) != len(layers):
        raise TypeError(f"expected only {kind.__name__} layers")
    return typed


def rope_at(positions: Tensor, head_dim: int, base: float) -> Tensor:
    """cos/sin of each position and frequency, (*positions.shape, head_dim/2, 2).

    Rounded through bfloat16 as the reference stores its table: matching its logits needs the same rounding.
    """
    freqs = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=positions.device)[: head_dim // 2].float() / head_dim))
    angles = positions.float()[..., None] * freqs
    return torch.stack([angles.cos(), angles.sin()], dim=-1).to(torch.bfloat16)


def rope_table(length: int, head_dim: int, base: float) -> Tensor:
    """The table of positions 0 .. length-1: (length, head_dim/2, 2)."""
    return rope_at(torch.arange(length), head_dim, base)


def apply_rope(x: Tensor, table: Tensor) -> Tensor:
    """Rotate pairs of channels; x is (batch, seq, heads, head_dim), table (batch or 1, seq, head_dim/2, 2)."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    cos, sin = table[:, :, None, :, 0], table[:, :, None, :, 1]
    rotated = torch.stack(
        [pairs[..., 0] * cos - pairs[..., 1] * sin, pairs[..., 1] * cos + pairs[..., 0] * sin], dim=-1
    )
    return rotated.flatten(3).type_as(x)


def grouped_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """Attention where each key/value head serves `heads / kv_heads` query heads, without copying k or v.

    q (batch, heads, seq, d); k, v (batch, kv_heads, keys, d); mask (batch or 1, 1, seq, keys), True where
    a query may look. The query heads of a group become rows of one matmul against their shared keys.
    """
    batch, heads, seq, dim = q.shape
    kv_heads, keys = k.shape[1], k.shape[2]
    groups = heads // kv_heads
    scores = (q.reshape(batch, kv_heads, groups * seq, dim) @ k.transpose(-1, -2)).float() * dim**-0.5
    scores = scores.view(batch, kv_heads, groups, seq, keys).masked_fill(~mask[:, :, None], float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(v.dtype).view(batch, kv_heads, groups * seq, keys)
    return (probs @ v).view(batch, heads, seq, dim)


@dataclass(frozen=True)
class CacheAccess:
    """Which cached sequences a forward pass extends: the batch's rows are slots `first` onwards,
    written at `input_pos` (batch, seq), attending over the first `length` cached positions."""

    first: int
    input_pos: Tensor
    length: int


class Attention(nn.Module):
    """Grouped-query attention with one fused qkv projection and optional per-head q/k RMSNorm."""

    def __init__(self, config: DualARConfig):
        super().__init__()
        self.n_head, self.n_local_heads, self.head_dim = config.n_head, config.n_local_heads, config.head_dim
        self.wqkv = nn.Linear(
            config.dim, (config.n_head + 2 * config.n_local_heads) * config.head_dim, bias=config.attention_qkv_bias
        )
        self.wo = nn.Linear(config.n_head * config.head_dim, config.dim, bias=config.attention_o_bias)
        self.qk_norm = config.attention_qk_norm
        if self.qk_norm:
            self.q_norm = nn.RMSNorm(config.head_dim, config.norm_eps)
            self.k_norm = nn.RMSNorm(config.head_dim, config.norm_eps)
        self.kv_cache: KVCache | None = None

    def forward(self, x: Tensor, rope: Tensor, mask: Tensor, cache: CacheAccess | None = None) -> Tensor:
        batch, seq, _ = x.shape
        q_size, kv_size = self.n_head * self.head_dim, self.n_local_heads * self.head_dim
        q, k, v = self.wqkv(x).split([q_size, kv_size, kv_size], dim=-1)
        q = q.view(batch, seq, self.n_head, self.head_dim)
        k = k.view(batch, seq, self.n_local_heads, self.head_dim)
        v = v.view(batch, seq, self.n_local_heads, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if cache is not None and self.kv_cache is not None:
            k, v = self.kv_cache.update(cache.first, cache.input_pos, k, v)
            k, v = k[:, :, : cache.length].to(q.dtype), v[:, :, : cache.length].to(q.dtype)
        y = grouped_attention(q, k, v, mask)
        out: Tensor = self.wo(y.transpose(1, 2).reshape(batch, seq, q_size))
        return out


class FeedForward(nn.Module):
    """SwiGLU, as in both transformers and the codec's."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.w2(F.silu(self.w1(x)) * self.w3(x))
        return out


class Block(nn.Module):
    def __init__(self, config: DualARConfig):
        super().__init__()
        self.attention = Attention(config)
        self.feed_forward = FeedForward(config.dim, config.intermediate_size)
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)

    def forward(self, x: Tensor, rope: Tensor, mask: Tensor, cache: CacheAccess | None = None) -> Tensor:
        h: Tensor = x + self.attention(self.attention_norm(x), rope, mask, cache)
        out: Tensor = h + self.feed_forward(self.ffn_norm(h))
        return out


class DualAR(nn.Module):
    """Slow transformer over time (text and semantic tokens); fast transformer over each frame's codebooks.

    Input is a (batch, 1 + num_codebooks, seq) matrix: row 0 token ids, rows 1.. the codes of each
    semantic position (ignored elsewhere).
    """

    rope: Tensor  # buffers (make_rope), declared for the type checker
    fast_rope: Tensor
    quantization: str | None = None  # "int8-weight-only" once quantize.py has made its linears int8
    codebook_embeddings: nn.Module  # nn.Embedding, or quantize.py's int8 table

    def __init__(self, config: DualARConfig):
        super().__init__()
        self.config = config
        self.embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.codebook_embeddings = nn.Embedding(config.codebook_size * config.num_codebooks, config.dim)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        if not config.tie_word_embeddings:
            self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        fast = config.fast()
        self.fast_project_in = nn.Linear(config.dim, fast.dim) if fast.dim != config.dim else nn.Identity()
        self.fast_embeddings = nn.Embedding(config.codebook_size, fast.dim)
        self.fast_layers = nn.ModuleList(Block(fast) for _ in range(config.n_fast_layer))
        self.fast_norm = RMSNorm(fast.dim, config.norm_eps)
        self.fast_output = nn.Linear(fast.dim, config.codebook_size, bias=False)
        self.make_rope()
        self.cache_slots, self.cache_len = 0, 0

    def make_rope(self) -> None:
        """(Re)build the rotary tables; the loader calls it after building the model on the meta device."""
        config = self.config
        self.register_buffer(
            "rope", rope_table(config.max_seq_len, config.head_dim, config.rope_base), persistent=False
        )
        self.register_buffer(
            "fast_rope", rope_table(config.num_codebooks, config.fast().head_dim, config.rope_base), persistent=False
        )

    def head_weight(self) -> Tensor:
        """The output projection's rows, one per token."""
        return self.embeddings.weight if self.config.tie_word_embeddings else self.output.weight

    # -- caches -------------------------------------------------------------------------------

    def setup_caches(self, max_len: int, slots: int = 1, dtype: torch.dtype | None = None) -> None:
        """Static KV caches for `slots` sequences of up to `max_len` positions (rounded up to a multiple of 8)."""
        max_len = min(self.config.max_seq_len, -(-max_len // 8) * 8)
        if max_len <= self.cache_len and slots <= self.cache_slots:
            return
        max_len, slots = max(max_len, self.cache_len), max(slots, self.cache_slots)
        dtype = dtype or self.embeddings.weight.dtype
        device = self.embeddings.weight.device
        fast = self.config.fast()
        for block in layers_of(self.layers, Block):
            block.attention.kv_cache = KVCache(
                slots, max_len, self.config.n_local_heads, self.config.head_dim, dtype
            ).to(device)
        for block in layers_of(self.fast_layers, Block):
            block.attention.kv_cache = KVCache(
                slots, self.config.num_codebooks, fast.n_local_heads, fast.head_dim, dtype
            ).to(device)
        self.cache_slots, self.cache_len = slots, max_len

    def kv_caches(self) -> list[KVCache]:
        """The slow transformer's KV caches, one per layer (setup_caches makes them)."""
        caches: list[KVCache] = []
        for block in layers_of(self.layers, Block):
            if block.attention.kv_cache is None:
                raise RuntimeError("the model has no KV caches yet: setup_caches() makes them")
            caches.append(block.attention.kv_cache)
        return caches

    # -- slow transformer ---------------------------------------------------------------------

    def embed(self, inp: Tensor) -> Tensor:
        """Token embedding plus, at semantic positions, the sum of the frame's codebook embeddings."""
        config = self.config
        offsets = torch.arange(config.num_codebooks, device=inp.device)[None, :, None] * config.codebook_size
        codes = self.codebook_embeddings(inp[:, 1:] + offsets).sum(dim=1)
        tokens = inp[:, 0]
        semantic = (tokens >= config.semantic_begin_id) & (tokens <= config.semantic_end_id)
        x: Tensor = self.embeddings(tokens) + codes * semantic[..., None]
        if config.scale_codebook_embeddings:
            x = torch.where(semantic[..., None], x / math.sqrt(config.num_codebooks + 1), x)
        return x

    def forward_slow(
        self,
        inp: Tensor,
        cache: CacheAccess | None = None,
        last_only: bool = True,
        head: Tensor | nn.Module | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Token logits and the hidden state handed to the fast transformer (already projected).

        With `cache`, the positions are written to the slots' KV caches and attend to all cached ones
        (prefill or a decode step); without, the sequence is computed whole, no cache involved.
        `head`: rows of the output projection to compute, a weight or a layer (default: the whole vocabulary).
        """
        seq = inp.shape[-1]
        x = self.embed(inp)
        if cache is None:
            positions = torch.arange(seq, device=inp.device)[None]
            mask = (positions[0, None, :] <= positions[0, :, None])[None, None]
        else:
            positions = cache.input_pos
            mask = (torch.arange(cache.length, device=inp.device)[None, None, :] <= positions[:, :, None])[:, None]
        rope = self.rope[positions]
        for block in self.layers:
            x = block(x, rope, mask, cache)
        if last_only:
            x = x[:, -1:]
        normed = self.norm(x)
        if head is None:
            head = self.embeddings.weight if self.config.tie_word_embeddings else self.output
        logits = head(normed) if isinstance(head, nn.Module) else F.linear(normed, head)
        hidden = normed if self.config.norm_fastlayer_input else x
        return logits, self.fast_project_in(hidden)

    # -- fast transformer ---------------------------------------------------------------------

    def forward_fast(self, x: Tensor, codebook: Tensor) -> Tensor:
        """One step of the fast transformer for every row of x (batch, fast_dim), at codebook position
        `codebook` (a one-element tensor, so a compiled step serves every position); logits over the codes."""
        batch = x.shape[0]
        positions = codebook.view(1, 1)
        mask = (torch.arange(self.config.num_codebooks, device=x.device) <= codebook)[None, None, None]
        cache = CacheAccess(0, positions.expand(batch, 1), self.config.num_codebooks)
        rope = self.fast_rope[positions]
        x = x.view(batch, 1, -1)
        for block in self.fast_layers:
            x = block(x, rope, mask, cache)
        logits: Tensor = self.fast_output(self.fast_norm(x))[:, 0]
        return logits
