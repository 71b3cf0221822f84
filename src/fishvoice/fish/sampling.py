"""Sampling as the reference does it, for many requests at once and over the candidates only.

The reference sorts the whole vocabulary: it keeps the best `top_k` tokens and, of those, the
smallest prefix whose probability reaches `top_p` (the best token always kept), divides the kept
logits by the temperature, and draws with exponential noise: argmax(p / E), E = -log(U). Here each
row is one request with its own temperature, top-p and top-k, and only the candidates are looked at:
for the main token the semantic tokens and <|im_end|> (every other token has a logit bias of -inf
in the reference, so it can never win). Top-k first, then top-p over the k survivors, with their
probabilities normalised over all candidates, gives the reference's distribution without a sort of
the vocabulary.

The noise U is drawn as the reference draws it, a uniform per token of the whole vocabulary, then
sliced to the candidates, so a seed yields the same numbers and the same draws.

Repetition-aware sampling (RAS), also the reference's: a main token that is semantic and already
among the last 10 main tokens is replaced by a second draw at temperature 1.0 and top-p 0.9.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

RAS_WINDOW = 10
RAS_TEMPERATURE = 1.0
RAS_TOP_P = 0.9
TOP_K_LIMIT = 128  # the most candidates a request may keep: a static size for the compiled step


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 30
    seed: int | None = None

    def check(self) -> None:
        """ValueError naming the field that is out of range."""
        if not 0 < self.temperature < 2:
            raise ValueError(f"temperature must be in (0, 2); got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1]; got {self.top_p}")
        if not 1 <= self.top_k <= TOP_K_LIMIT:
            raise ValueError(f"top_k must be 1 to {TOP_K_LIMIT}; got {self.top_k}")


def top_k_top_p(logits: Tensor, temperature: Tensor, top_p: Tensor, top_k: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The reference's filtered distribution, per row, over its `k` best candidates.

    logits (batch, n); temperature, top_p (batch,) float; top_k (batch,) int, each at most k.
    Returns probabilities (batch, k) (zero where filtered out) and the candidate index of each.
    """
    logits = logits.float()
    best, index = torch.topk(logits, k, dim=-1)
    cumulative = torch.exp(best - torch.logsumexp(logits, dim=-1, keepdim=True)).cumsum(dim=-1)
    rank = torch.arange(k, device=logits.device)
    drop = ((cumulative > top_p[:, None]) | (rank >= top_k[:, None])) & (rank > 0)
    kept = torch.where(drop, float("-inf"), best) / temperature.clamp(min=1e-5)[:, None]
    return torch.softmax(kept, dim=-1), index


def draw(probs: Tensor, index: Tensor, uniform: Tensor) -> Tensor:
    """One draw per row: argmax(p / E) with E = -log(U), U the row's uniforms over all its candidates."""
    noise = -torch.log(uniform.gather(-1, index))
    return index.gather(-1, torch.argmax(probs / noise, dim=-1, keepdim=True))[:, 0]


def sample(logits: Tensor, uniform: Tensor, temperature: Tensor, top_p: Tensor, top_k: Tensor, k: int) -> Tensor:
    """Candidate index drawn per row."""
    probs, index = top_k_top_p(logits, temperature, top_p, top_k, k)
    return draw(probs, index, uniform)


@dataclass
class RowParams:
    """Per-request sampling settings as device tensors, one row per slot."""

    temperature: Tensor
    top_p: Tensor
    top_k: Tensor

    @classmethod
    def allocate(cls, rows: int, device: torch.device) -> RowParams:
        return cls(
            torch.ones(rows, device=device),
            torch.ones(rows, device=device),
            torch.ones(rows, dtype=torch.long, device=device),
        )

    def set(self, row: int, sampling: Sampling) -> None:
        self.temperature[row], self.top_p[row], self.top_k[row] = sampling.temperature, sampling.top_p, sampling.top_k

    def rows(self, rows: slice) -> RowParams:
        return RowParams(self.temperature[rows], self.top_p[rows], self.top_k[rows])


def sample_main(
    logits: Tensor,
    uniform_normal: Tensor,
    uniform_high: Tensor,
    params: RowParams,
    recent: Tensor | None,
    candidate_ids: Tensor,
    semantic_count: int,
) -> Tensor:
    """The main token (a token id) of each row, from logits over the candidates (semantic tokens, then
    <|im_end|>); with `recent` (batch, RAS_WINDOW) token ids, repetition-aware."""
    k = min(TOP_K_LIMIT, logits.shape[-1])
    probs, index = top_k_top_p(logits, params.temperature, params.top_p, params.top_k, k)
    token = draw(probs, index, uniform_normal)
    if recent is None:
        return candidate_ids[token]
    ones = torch.ones_like(params.temperature)
    high = sample(logits, uniform_high, ones * RAS_TEMPERATURE, ones * RAS_TOP_P, params.top_k, k)
    token_id = candidate_ids[token]
    repeated = (token < semantic_count) & (recent == token_id[:, None]).any(dim=-1)
    return torch.where(repeated, candidate_ids[high], token_id)
