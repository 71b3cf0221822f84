"""One dataclass for the dual-AR model, read from either published config.json layout."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CheckpointError

LAYOUTS = {"dual_ar": "s1-mini", "fish_qwen3_omni": "s2-pro"}


def _round_up(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - n % k


def _fast_or_slow(fast: bool | None, slow: bool) -> bool:
    return slow if fast is None else fast


@dataclass
class DualARConfig:
    """The slow (text/semantic) transformer, the fast (codebook) transformer, and the codebooks."""

    layout: str = "s1-mini"
    vocab_size: int = 32000
    n_layer: int = 32
    n_head: int = 32
    n_local_heads: int = -1  # -1: n_head
    head_dim: int = 64  # 0: dim // n_head
    dim: int = 4096
    intermediate_size: int = 0  # 0: 8/3 of dim (SwiGLU), rounded up to 256
    rope_base: float = 10000
    norm_eps: float = 1e-5
    max_seq_len: int = 2048
    tie_word_embeddings: bool = True
    attention_qkv_bias: bool = False
    attention_o_bias: bool = False
    attention_qk_norm: bool = False

    codebook_size: int = 160
    num_codebooks: int = 4

    n_fast_layer: int = 4
    # The fast transformer's sizes and flags; 0 or None: the slow transformer's.
    fast_dim: int = 0
    fast_n_head: int = 0
    fast_n_local_heads: int = 0
    fast_head_dim: int = 0
    fast_intermediate_size: int = 0
    fast_attention_qkv_bias: bool | None = None
    fast_attention_qk_norm: bool | None = None
    fast_attention_o_bias: bool | None = None

    # S2-Pro: semantic-frame embeddings are divided by sqrt(num_codebooks + 1) when generating, and
    # the fast transformer receives the normed hidden state.
    scale_codebook_embeddings: bool = False
    norm_fastlayer_input: bool = False

    # Filled from the tokenizer: the token ids of <|semantic:0|> .. <|semantic:N|>.
    semantic_begin_id: int = 0
    semantic_end_id: int = 0

    def __post_init__(self) -> None:
        if self.n_local_heads == -1:
            self.n_local_heads = self.n_head
        if not self.intermediate_size:
            self.intermediate_size = _round_up(int(2 * 4 * self.dim / 3), 256)
        if not self.head_dim:
            self.head_dim = self.dim // self.n_head
        self.fast_dim = self.fast_dim or self.dim
        self.fast_n_head = self.fast_n_head or self.n_head
        self.fast_n_local_heads = self.fast_n_local_heads or self.n_local_heads
        self.fast_head_dim = self.fast_head_dim or self.head_dim
        self.fast_intermediate_size = self.fast_intermediate_size or self.intermediate_size
        for name in ("attention_qkv_bias", "attention_qk_norm", "attention_o_bias"):
            if getattr(self, f"fast_{name}") is None:
                setattr(self, f"fast_{name}", getattr(self, name))

    def fast(self) -> DualARConfig:
        """The same config seen by a fast-transformer block."""
        return dataclasses.replace(
            self,
            dim=self.fast_dim,
            n_head=self.fast_n_head,
            n_local_heads=self.fast_n_local_heads,
            head_dim=self.fast_head_dim,
            intermediate_size=self.fast_intermediate_size,
            attention_qkv_bias=_fast_or_slow(self.fast_attention_qkv_bias, self.attention_qkv_bias),
            attention_qk_norm=_fast_or_slow(self.fast_attention_qk_norm, self.attention_qk_norm),
            attention_o_bias=_fast_or_slow(self.fast_attention_o_bias, self.attention_o_bias),
        )

    @classmethod
    def from_file(cls, path: Path) -> DualARConfig:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"{path}: missing; expected the model's config.json") from None
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not readable JSON ({exc})") from None
        kind = data.get("model_type") if isinstance(data, dict) else None
        if kind not in LAYOUTS:
            raise CheckpointError(
                f"{path}: model_type {kind!r} is not one we load; expected one of {', '.join(LAYOUTS)}"
            )
        try:
            return cls._from_s2_pro(data) if kind == "fish_qwen3_omni" else cls._known(data, layout="s1-mini")
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: malformed {kind} config ({type(exc).__name__}: {exc})") from None

    @classmethod
    def _known(cls, data: dict[str, Any], **extra: Any) -> DualARConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names and v is not None}, **extra)

    @classmethod
    def _from_s2_pro(cls, data: dict[str, Any]) -> DualARConfig:
        text, audio = data["text_config"], data["audio_decoder_config"]
        fields = {k: v for k, v in text.items() if k not in ("codebook_size", "num_codebooks")}
        fields |= {
            "codebook_size": audio["vocab_size"],
            "num_codebooks": audio["num_codebooks"],
            "n_fast_layer": audio["n_layer"],
            **{
                f"fast_{k}": audio.get(k)
                for k in (
                    "dim",
                    "n_head",
                    "n_local_heads",
                    "head_dim",
                    "intermediate_size",
                    "attention_qkv_bias",
                    "attention_qk_norm",
                    "attention_o_bias",
                )
            },
        }
        return cls._known(fields, layout="s2-pro", scale_codebook_embeddings=True, norm_fastlayer_input=True)


# The published checkpoints' dimensions (config.json of openaudio-s1-mini and fishaudio/s2-pro).
_PUBLISHED = dict(
    vocab_size=155776,
    head_dim=128,
    attention_qk_norm=True,
    max_seq_len=4096,
    codebook_size=4096,
    num_codebooks=10,
    n_fast_layer=4,
)
PUBLISHED_SIZES: dict[str, dict[str, Any]] = {
    "s1-mini": dict(
        _PUBLISHED,
        layout="s1-mini",
        n_layer=28,
        n_head=16,
        n_local_heads=8,
        dim=1024,
        intermediate_size=3072,
        fast_dim=1024,
        fast_n_head=16,
        fast_n_local_heads=8,
        fast_head_dim=64,
        fast_intermediate_size=3072,
    ),
    "s2-pro": dict(
        _PUBLISHED,
        layout="s2-pro",
        n_layer=36,
        n_head=32,
        n_local_heads=8,
        dim=2560,
        intermediate_size=9728,
        fast_dim=2560,
        fast_n_head=32,
        fast_n_local_heads=8,
        fast_head_dim=128,
        fast_intermediate_size=9728,
        scale_codebook_embeddings=True,
        norm_fastlayer_input=True,
    ),
}

PUBLISHED_SEMANTIC_BEGIN, PUBLISHED_IM_END = 151678, 151645  # where the published tokenizer puts them


def published_config(layout: str) -> DualARConfig:
    """A configuration at a published checkpoint's size (its semantic token ids where its tokenizer has
    them): for benchmarks and tests with random weights."""
    config = DualARConfig(**PUBLISHED_SIZES[layout])
    config.semantic_begin_id = PUBLISHED_SEMANTIC_BEGIN
    config.semantic_end_id = PUBLISHED_SEMANTIC_BEGIN + config.codebook_size - 1
    return config
