"""The dual autoregressive transformer, gpt-fast style: plain modules, an explicit static KV cache,
a prefill/decode step for the slow transformer and a per-codebook step for the fast one.

Module and parameter names follow the published checkpoints, so their state dicts load as they are.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import DualARConfig


class KVCache(nn.Module):
    """Keys and values of every position so far, for one sequence: (1, heads, max_len, head_dim)."""

    def __init__(self, max_len: int, n_heads: int, head_dim: int, dtype: torch.dtype):
        super().__init__()
        self.register_buffer("k_cache", torch.zeros(1, n_heads, max_len, head_dim, dtype=dtype), persistent=False)
        self.register_buffer("v_cache", torch.zeros(1, n_heads, max_len, head_dim, dtype=dtype), persistent=False)

    def update(self, input_pos: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        self.k_cache[:, :, input_pos] = k.to(self.k_cache.dtype)
        self.v_cache[:, :, input_pos] = v.to(self.v_cache.dtype)
        return self.k_cache, self.v_cache


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def rope_table(length: int, head_dim: int, base: float) -> Tensor:
    """cos/sin of each position and frequency, (length, head_dim/2, 2).

    Rounded through bfloat16 as the reference stores them: matching its logits needs the same rounding.
    """
    freqs = 1.0 / (base ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    angles = torch.outer(torch.arange(length).float(), freqs)
    return torch.stack([angles.cos(), angles.sin()], dim=-1).to(torch.bfloat16)


def apply_rope(x: Tensor, table: Tensor) -> Tensor:
    """Rotate pairs of channels; x is (batch, seq, heads, head_dim), table (seq, head_dim/2, 2)."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    cos, sin = table[None, :, None, :, 0], table[None, :, None, :, 1]
    rotated = torch.stack([pairs[..., 0] * cos - pairs[..., 1] * sin, pairs[..., 1] * cos + pairs[..., 0] * sin], dim=-1)
    return rotated.flatten(3).type_as(x)


class Attention(nn.Module):
    """Grouped-query attention with one fused qkv projection and optional per-head q/k RMSNorm."""

    def __init__(self, config: DualARConfig):
        super().__init__()
        self.n_head, self.n_local_heads, self.head_dim = config.n_head, config.n_local_heads, config.head_dim
        self.wqkv = nn.Linear(config.dim, (config.n_head + 2 * config.n_local_heads) * config.head_dim, bias=config.attention_qkv_bias)
        self.wo = nn.Linear(config.n_head * config.head_dim, config.dim, bias=config.attention_o_bias)
        self.qk_norm = config.attention_qk_norm
        if self.qk_norm:
            self.q_norm = nn.RMSNorm(config.head_dim, config.norm_eps)
            self.k_norm = nn.RMSNorm(config.head_dim, config.norm_eps)
        self.kv_cache: KVCache | None = None

    def forward(self, x: Tensor, rope: Tensor, mask: Tensor, input_pos: Tensor | None) -> Tensor:
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
        if input_pos is not None and self.kv_cache is not None:
            k, v = self.kv_cache.update(input_pos, k, v)
            k, v = k.to(q.dtype), v.to(q.dtype)
        groups = self.n_head // self.n_local_heads
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.wo(y.transpose(1, 2).reshape(batch, seq, q_size))


class FeedForward(nn.Module):
    """SwiGLU, as in both transformers and the codec's."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, config: DualARConfig):
        super().__init__()
        self.attention = Attention(config)
        self.feed_forward = FeedForward(config.dim, config.intermediate_size)
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)

    def forward(self, x: Tensor, rope: Tensor, mask: Tensor, input_pos: Tensor | None = None) -> Tensor:
        h = x + self.attention(self.attention_norm(x), rope, mask, input_pos)
        return h + self.feed_forward(self.ffn_norm(h))


class DualAR(nn.Module):
    """Slow transformer over time (text and semantic tokens); fast transformer over each frame's codebooks.

    Input is a (batch, 1 + num_codebooks, seq) matrix: row 0 token ids, rows 1.. the codes of each
    semantic position (ignored elsewhere).
    """

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
        self.cache_len = 0

    def make_rope(self) -> None:
        """(Re)build the rotary tables; the loader calls it after building the model on the meta device."""
        config = self.config
        self.register_buffer("rope", rope_table(config.max_seq_len, config.head_dim, config.rope_base), persistent=False)
        self.register_buffer("fast_rope", rope_table(config.num_codebooks, config.fast().head_dim, config.rope_base), persistent=False)

    # -- caches -------------------------------------------------------------------------------

    def setup_caches(self, max_len: int, dtype: torch.dtype | None = None) -> None:
        """Static KV caches for sequences of up to `max_len` positions (rounded up to a multiple of 8)."""
        max_len = min(self.config.max_seq_len, -(-max_len // 8) * 8)
        if max_len <= self.cache_len:
            return
        dtype = dtype or self.embeddings.weight.dtype
        device = self.embeddings.weight.device
        fast = self.config.fast()
        for block in self.layers:
            block.attention.kv_cache = KVCache(max_len, self.config.n_local_heads, self.config.head_dim, dtype).to(device)
        for block in self.fast_layers:
            block.attention.kv_cache = KVCache(self.config.num_codebooks, fast.n_local_heads, fast.head_dim, dtype).to(device)
        self.cache_len = max_len

    # -- slow transformer ---------------------------------------------------------------------

    def embed(self, inp: Tensor) -> Tensor:
        """Token embedding plus, at semantic positions, the sum of the frame's codebook embeddings."""
        config = self.config
        offsets = torch.arange(config.num_codebooks, device=inp.device)[None, :, None] * config.codebook_size
        codes = self.codebook_embeddings(inp[:, 1:] + offsets).sum(dim=1)
        tokens = inp[:, 0]
        semantic = (tokens >= config.semantic_begin_id) & (tokens <= config.semantic_end_id)
        x = self.embeddings(tokens) + codes * semantic[..., None]
        if config.scale_codebook_embeddings:
            x = torch.where(semantic[..., None], x / math.sqrt(config.num_codebooks + 1), x)
        return x

    def forward_slow(self, inp: Tensor, input_pos: Tensor | None = None, last_only: bool = True) -> tuple[Tensor, Tensor]:
        """Token logits and the hidden state handed to the fast transformer (already projected).

        With `input_pos`, the positions are written to the KV cache and attend to all cached ones
        (prefill or one decode step); without, the sequence is computed whole, no cache involved.
        """
        seq = inp.shape[-1]
        x = self.embed(inp)
        if input_pos is None:
            positions = torch.arange(seq, device=inp.device)
            mask = positions[None, :] <= positions[:, None]
        else:
            positions = input_pos
            mask = torch.arange(self.cache_len, device=inp.device)[None, :] <= input_pos[:, None]
        rope = self.rope[positions]
        for block in self.layers:
            x = block(x, rope, mask[None, None], input_pos)
        if last_only:
            x = x[:, -1:]
        normed = self.norm(x)
        logits = F.linear(normed, self.embeddings.weight) if self.config.tie_word_embeddings else self.output(normed)
        hidden = normed if self.config.norm_fastlayer_input else x
        return logits, self.fast_project_in(hidden)

    # -- fast transformer ---------------------------------------------------------------------

    def forward_fast(self, x: Tensor, codebook: int) -> Tensor:
        """One step of the fast transformer at codebook position `codebook`; logits over the codes."""
        pos = torch.tensor([codebook], device=x.device)
        mask = (torch.arange(self.config.num_codebooks, device=x.device) <= codebook)[None, None, None]
        rope = self.fast_rope[pos]
        x = x.view(x.shape[0], 1, -1)
        for block in self.fast_layers:
            x = block(x, rope, mask, pos)
        return self.fast_output(self.fast_norm(x))
