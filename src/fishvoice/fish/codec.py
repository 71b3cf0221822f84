"""The codec: Fish Speech's modded DAC (44.1 kHz audio <-> codes at about 21.5 frames/s).

Encoder: causal convolutions with Snake activations (and a windowed transformer at the deepest
block) down to one latent per 512 samples. Quantizer: two causal downsamplings (x4 in all), a
windowed transformer, then one semantic codebook and a residual stack over what it leaves; decoding
reverses it. Decoder: causal transposed convolutions back to samples. Everything is causal, which is
what makes chunked (streaming) decoding possible.

Weight-normed convolutions are folded into plain ones at load time (inference needs no reparametrization).

Streaming decode carries each layer's state from one chunk to the next (`DecodeState`): the last
inputs of every causal convolution, the last input frame of every transposed convolution, and the
last `window - 1` keys and values of every windowed-transformer layer. A chunk is then decoded from
its own codes alone, and the chunks joined are the one-shot decode.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoints import check_weights
from .errors import CheckpointError
from .model import FeedForward, RMSNorm, apply_rope, layers_of, rope_at


@dataclass
class TransformerConfig:
    n_layer: int = 8
    n_head: int = 8
    dim: int = 512
    intermediate_size: int = 1536
    head_dim: int = 64
    rope_base: float = 10000
    norm_eps: float = 1e-5


@dataclass
class CodecConfig:
    """Defaults are the published modded_dac_vq configuration (S1-mini's and S2-Pro's codec.pth)."""

    sample_rate: int = 44100
    encoder_dim: int = 64
    encoder_rates: list[int] = field(default_factory=lambda: [2, 4, 8, 8])
    decoder_dim: int = 1536
    decoder_rates: list[int] = field(default_factory=lambda: [8, 8, 4, 2])
    encoder_transformer_layers: list[int] = field(default_factory=lambda: [0, 0, 0, 4])
    transformer_head_dim: int = 64
    transformer_rope_base: float = 10000
    transformer_norm_eps: float = 1e-5
    encoder_window: int = 512  # the reference's fallback; its config never sets one
    # quantizer
    latent_dim: int = 1024
    n_codebooks: int = 9
    codebook_size: int = 1024
    codebook_dim: int = 8
    semantic_codebook_size: int = 4096
    downsample_factor: list[int] = field(default_factory=lambda: [2, 2])
    quantizer_window: int = 128
    quantizer_transformer: TransformerConfig = field(
        default_factory=lambda: TransformerConfig(n_layer=8, n_head=16, dim=1024, intermediate_size=3072, head_dim=64)
    )

    @property
    def hop_length(self) -> int:
        return math.prod(self.encoder_rates)

    @property
    def frame_length(self) -> int:
        """Samples per code frame: the encoder's hop times the quantizer's downsampling."""
        return self.hop_length * math.prod(self.downsample_factor)

    @property
    def num_codebooks(self) -> int:
        return 1 + self.n_codebooks

    @classmethod
    def from_json(cls, path: Path) -> CodecConfig:
        """A configuration in the field names of the published modded_dac_vq.yaml."""
        try:
            data = json.loads(path.read_text())
            general, quantizer = data.get("transformer_general_config", {}), data["quantizer"]
            module = quantizer.get("pre_and_post_module") or quantizer.get("post_module") or {}
            inner = module.get("config", {})
            return cls(
                sample_rate=data["sample_rate"],
                encoder_dim=data["encoder_dim"],
                encoder_rates=list(data["encoder_rates"]),
                decoder_dim=data["decoder_dim"],
                decoder_rates=list(data["decoder_rates"]),
                encoder_transformer_layers=list(data["encoder_transformer_layers"]),
                transformer_head_dim=general.get("head_dim", 64),
                transformer_rope_base=general.get("rope_base", 10000),
                transformer_norm_eps=general.get("norm_eps", 1e-5),
                latent_dim=quantizer["input_dim"],
                n_codebooks=quantizer["n_codebooks"],
                codebook_size=quantizer["codebook_size"],
                codebook_dim=quantizer["codebook_dim"],
                semantic_codebook_size=quantizer["semantic_codebook_size"],
                downsample_factor=list(quantizer["downsample_factor"]),
                quantizer_window=module.get("window_size", 128),
                quantizer_transformer=TransformerConfig(
                    n_layer=inner["n_layer"],
                    n_head=inner["n_head"],
                    dim=inner["dim"],
                    intermediate_size=inner["intermediate_size"],
                    head_dim=inner.get("head_dim", 64),
                    rope_base=inner.get("rope_base", 10000),
                    norm_eps=inner.get("norm_eps", 1e-5),
                ),
            )
        except FileNotFoundError:
            raise CheckpointError(f"{path}: missing") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path}: not a codec configuration ({type(exc).__name__}: {exc})") from None


# -- streaming state ---------------------------------------------------------------------------


@dataclass
class DecodeState:
    """Where each of a batch of streams stands: code frames decoded so far, and each stateful layer's
    carried tensor (batch first), keyed by the layer."""

    frames: Tensor
    tensors: dict[Streamable, Tensor]

    @classmethod
    def stack(cls, states: list[DecodeState]) -> DecodeState:
        """One batch of several streams' states, in order."""
        return cls(
            torch.cat([s.frames for s in states]),
            {m: torch.cat([s.tensors[m] for s in states]) for m in states[0].tensors},
        )

    def split(self) -> list[DecodeState]:
        return [
            DecodeState(self.frames[i : i + 1], {m: t[i : i + 1] for m, t in self.tensors.items()})
            for i in range(len(self.frames))
        ]


def stream(module: nn.Module, x: Tensor, state: DecodeState) -> Tensor:
    """`module` applied to the next chunk `x` of a stream, continuing from (and updating) `state`."""
    if isinstance(module, Streamable):
        return module.stream(x, state)
    if isinstance(module, nn.Sequential):
        for child in module:
            x = stream(child, x, state)
        return x
    if next(module.children(), None) is not None:
        raise TypeError(f"{type(module).__name__} has layers but no stream(): its state would be lost between chunks")
    out: Tensor = module(x)  # stateless: one time step at a time (Snake, Tanh, 1x1 convolutions)
    return out


class Streamable(nn.Module):
    """A layer whose output depends on earlier chunks: it says what it carries and how it continues."""

    def initial_state(self, batch: int, like: Tensor) -> Tensor | None:
        """What a new stream carries (None: nothing of its own; its sublayers may)."""
        return None

    def stream(self, x: Tensor, state: DecodeState) -> Tensor:
        raise NotImplementedError


# -- building blocks --------------------------------------------------------------------------


class CausalConv(Streamable):
    """Conv1d padded on the left only (and on the right just enough to fill the last stride)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, stride=stride, dilation=dilation, groups=groups)
        self.stride = stride
        self.span = (kernel - 1) * dilation + 1

    def forward(self, x: Tensor) -> Tensor:
        left = self.span - self.stride
        frames = math.ceil((x.shape[-1] - self.span + left) / self.stride + 1)
        right = (frames - 1) * self.stride + self.span - left - x.shape[-1]
        out: Tensor = self.conv(F.pad(x, (left, right)))
        return out

    def initial_state(self, batch: int, like: Tensor) -> Tensor:
        return like.new_zeros(batch, self.conv.in_channels, self.span - 1)  # the zeros of the left padding

    def stream(self, x: Tensor, state: DecodeState) -> Tensor:
        assert self.stride == 1, "streamed convolutions are the decoder's, all of stride 1"
        full = torch.cat([state.tensors[self], x], dim=-1)
        state.tensors[self] = full[..., x.shape[-1] :]
        out: Tensor = self.conv(full)
        return out


class CausalConvTranspose(Streamable):
    """ConvTranspose1d with its overhang (kernel - stride samples) cut from the right."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(cin, cout, kernel, stride=stride)
        self.trim = kernel - stride

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.conv(x)
        return y[..., : y.shape[-1] - self.trim]

    @property
    def carried(self) -> int:
        """Input frames whose overhang reaches into the next chunk's samples."""
        return -(-self.trim // self.conv.stride[0])

    def initial_state(self, batch: int, like: Tensor) -> Tensor:
        return like.new_zeros(batch, self.conv.in_channels, self.carried)

    def stream(self, x: Tensor, state: DecodeState) -> Tensor:
        # The chunk's samples are the carried frames' overhang plus its own frames' output, less its own overhang.
        stride, carried = self.conv.stride[0], self.carried
        full = torch.cat([state.tensors[self], x], dim=-1)
        state.tensors[self] = full[..., full.shape[-1] - carried :]
        y: Tensor = self.conv(full)
        return y[..., carried * stride : (carried + x.shape[-1]) * stride]


class Snake(nn.Module):
    """x + sin^2(alpha x) / alpha, per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)


class ResidualUnit(Streamable):
    def __init__(self, dim: int, dilation: int):
        super().__init__()
        self.block = nn.Sequential(
            Snake(dim), CausalConv(dim, dim, 7, dilation=dilation), Snake(dim), CausalConv(dim, dim, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = x + self.block(x)
        return out

    def stream(self, x: Tensor, state: DecodeState) -> Tensor:
        return x + stream(self.block, x, state)


class ConvNeXtBlock(Streamable):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = CausalConv(dim, dim, 7, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: Tensor) -> Tensor:
        return self._pointwise(x, self.dwconv(x))

    def stream(self, x: Tensor, state: DecodeState) -> Tensor:
        return self._pointwise(x, self.dwconv.stream(x, state))

    def _pointwise(self, x: Tensor, mixed: Tensor) -> Tensor:
        y: Tensor = self.norm(mixed.transpose(1, 2))
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(y)))
        return x + y.transpose(1, 2)


# -- the windowed transformer -----------------------------------------------------------------


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-2))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class CodecAttention(Streamable):
    def __init__(self, config: TransformerConfig, window: int):
        super().__init__()
        self.n_head, self.head_dim, self.window = config.n_head, config.head_dim, window
        self.wqkv = nn.Linear(config.dim, 3 * config.n_head * config.head_dim, bias=False)
        self.wo = nn.Linear(config.n_head * config.head_dim, config.dim, bias=False)

    def forward(self, x: Tensor, rope: Tensor, mask: Tensor, state: DecodeState | None = None) -> Tensor:
        """With `state`, the keys and values of the last `window - 1` positions of the stream are
        attended to as well (the mask covers them first), and the state keeps the new last ones."""
        batch, seq, _ = x.shape
        q, k, v = (t.view(batch, seq, self.n_head, self.head_dim) for t in self.wqkv(x).chunk(3, dim=-1))
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if state is not None:
            carried = state.tensors[self]  # (batch, 2, heads, window - 1, head_dim)
            k, v = torch.cat([carried[:, 0], k], dim=2), torch.cat([carried[:, 1], v], dim=2)
            state.tensors[self] = torch.stack([k, v], dim=1)[:, :, :, k.shape[2] - (self.window - 1) :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out: Tensor = self.wo(y.transpose(1, 2).reshape(batch, seq, -1))
        return out

    def initial_state(self, batch: int, like: Tensor) -> Tensor:
        return like.new_zeros(batch, 2, self.n_head, self.window - 1, self.head_dim)


class CodecBlock(nn.Module):
    def __init__(self, config: TransformerConfig, window: int):
        super().__init__()
        self.attention = CodecAttention(config, window)
        self.feed_forward = FeedForward(config.dim, config.intermediate_size)
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.attention_layer_scale = LayerScale(config.dim)
        self.ffn_layer_scale = LayerScale(config.dim)

    def forward(self, x: Tensor, rope: Tensor, mask: Tensor, state: DecodeState | None = None) -> Tensor:
        h: Tensor = x + self.attention_layer_scale(self.attention(self.attention_norm(x), rope, mask, state))
        out: Tensor = h + self.ffn_layer_scale(self.feed_forward(self.ffn_norm(h)))
        return out


class WindowedTransformer(Streamable):
    """Causal self-attention limited to the last `window` positions, on channels-first input."""

    def __init__(self, config: TransformerConfig, input_dim: int, window: int):
        super().__init__()
        self.config, self.window = config, window
        self.layers = nn.ModuleList(CodecBlock(config, window) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.input_proj = nn.Linear(input_dim, config.dim) if input_dim != config.dim else nn.Identity()
        self.output_proj = nn.Linear(config.dim, input_dim) if input_dim != config.dim else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        positions = torch.arange(x.shape[-1], device=x.device)[None]
        return self._run(x, positions, positions, None)

    def stream(self, x: Tensor, state: DecodeState) -> Tensor:
        """The next chunk: each row continues at its own position (state.frames), after the carried
        window of keys (positions before 0 are the stream's start, masked out)."""
        positions = state.frames[:, None] + torch.arange(x.shape[-1], device=x.device)
        keys = torch.cat(
            [positions[:, :1] - self.window + torch.arange(1, self.window, device=x.device), positions], dim=1
        )
        return self._run(x, positions, keys, state)

    def _run(self, x: Tensor, positions: Tensor, keys: Tensor, state: DecodeState | None) -> Tensor:
        x = self.input_proj(x.transpose(1, 2))
        query, key = positions[:, :, None], keys[:, None, :]
        mask = (key <= query) & (key > query - self.window) & (key >= 0)
        rope = rope_at(positions, self.config.head_dim, self.config.rope_base)
        for layer in self.layers:
            x = layer(x, rope, mask[:, None], state)
        out: Tensor = self.output_proj(self.norm(x))
        return out.transpose(1, 2)


# -- encoder, quantizer, decoder --------------------------------------------------------------


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, stride: int, n_layer: int, config: CodecConfig):
        super().__init__()
        half = dim // 2
        layers: list[nn.Module] = [
            ResidualUnit(half, 1),
            ResidualUnit(half, 3),
            ResidualUnit(half, 9),
            Snake(half),
            CausalConv(half, dim, 2 * stride, stride=stride),
        ]
        if n_layer:
            layers.append(
                WindowedTransformer(
                    TransformerConfig(
                        n_layer=n_layer,
                        n_head=dim // 64 or 1,
                        dim=dim,
                        intermediate_size=3 * dim,
                        head_dim=config.transformer_head_dim,
                        rope_base=config.transformer_rope_base,
                        norm_eps=config.transformer_norm_eps,
                    ),
                    dim,
                    config.encoder_window,
                )
            )
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.block(x)
        return out


class Encoder(nn.Module):
    def __init__(self, config: CodecConfig):
        super().__init__()
        dim = config.encoder_dim
        layers: list[nn.Module] = [CausalConv(1, dim, 7)]
        # Not strict: the pairing as it was (a longer list's extra entries are ignored).
        for stride, n_layer in zip(config.encoder_rates, config.encoder_transformer_layers, strict=False):
            dim *= 2
            layers.append(EncoderBlock(dim, stride, n_layer, config))
        layers += [Snake(dim), CausalConv(dim, config.latent_dim, 3)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.block(x)
        return out


class DecoderBlock(Streamable):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        # The reference builds a transformer here too but never calls it; its weights are ignored.
        self.block = nn.Sequential(
            Snake(cin),
            CausalConvTranspose(cin, cout, 2 * stride, stride),
            ResidualUnit(cout, 1),
            ResidualUnit(cout, 3),
            ResidualUnit(cout, 9),
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.block(x)
        return out

    def stream(self, x: Tensor, state: DecodeState) -> Tensor:
        return stream(self.block, x, state)


class Decoder(nn.Module):
    def __init__(self, config: CodecConfig):
        super().__init__()
        channels = config.decoder_dim
        layers: list[nn.Module] = [CausalConv(config.latent_dim, channels, 7)]
        for i, stride in enumerate(config.decoder_rates):
            layers.append(DecoderBlock(channels // 2**i, channels // 2 ** (i + 1), stride))
        out = channels // 2 ** len(config.decoder_rates)
        layers += [Snake(out), CausalConv(out, 1, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.model(x)
        return out


class VectorQuantizer(nn.Module):
    """Nearest codebook entry by cosine similarity, in a small projected space."""

    def __init__(self, dim: int, size: int, codebook_dim: int):
        super().__init__()
        self.in_proj = nn.Conv1d(dim, codebook_dim, 1)
        self.out_proj = nn.Conv1d(codebook_dim, dim, 1)
        self.codebook = nn.Embedding(size, codebook_dim)

    def encode(self, z: Tensor) -> Tensor:
        latents = F.normalize(self.in_proj(z).transpose(1, 2), dim=-1)  # (B, T, d)
        codebook = F.normalize(self.codebook.weight, dim=-1)
        # Squared distance, expanded as the reference computes it so near-ties break the same way.
        distance = (
            latents.pow(2).sum(-1, keepdim=True) - 2 * latents @ codebook.t() + codebook.pow(2).sum(-1)[None, None]
        )
        return distance.neg().argmax(-1)

    def decode(self, codes: Tensor) -> Tensor:
        out: Tensor = self.out_proj(self.codebook(codes).transpose(1, 2))
        return out


class ResidualQuantizer(nn.Module):
    def __init__(self, dim: int, n: int, size: int, codebook_dim: int):
        super().__init__()
        self.quantizers = nn.ModuleList(VectorQuantizer(dim, size, codebook_dim) for _ in range(n))

    def encode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Codes (B, n, T) and the quantized sum."""
        residual, total, codes = z, torch.zeros_like(z), []
        for quantizer in layers_of(self.quantizers, VectorQuantizer):
            code = quantizer.encode(residual)
            quantized = quantizer.decode(code)
            total, residual = total + quantized, residual - quantized
            codes.append(code)
        return torch.stack(codes, dim=1), total

    def decode(self, codes: Tensor) -> Tensor:
        parts = [q.decode(codes[:, i]) for i, q in enumerate(layers_of(self.quantizers, VectorQuantizer))]
        total = parts[0]
        for part in parts[1:]:  # one at a time, in order: the rounding of a plain sum
            total = total + part
        return total


class Quantizer(nn.Module):
    """Downsample x4, transformer, one semantic codebook plus residual codebooks; and back."""

    def __init__(self, config: CodecConfig):
        super().__init__()
        dim = config.latent_dim
        self.semantic_quantizer = ResidualQuantizer(dim, 1, config.semantic_codebook_size, config.codebook_dim)
        self.quantizer = ResidualQuantizer(dim, config.n_codebooks, config.codebook_size, config.codebook_dim)
        self.downsample = nn.Sequential(
            *(nn.Sequential(CausalConv(dim, dim, f, stride=f), ConvNeXtBlock(dim)) for f in config.downsample_factor)
        )
        self.upsample = nn.Sequential(
            *(
                nn.Sequential(CausalConvTranspose(dim, dim, f, f), ConvNeXtBlock(dim))
                for f in reversed(config.downsample_factor)
            )
        )
        self.pre_module = WindowedTransformer(config.quantizer_transformer, dim, config.quantizer_window)
        self.post_module = WindowedTransformer(config.quantizer_transformer, dim, config.quantizer_window)
        self.semantic_size, self.residual_size = config.semantic_codebook_size, config.codebook_size

    def encode(self, z: Tensor) -> Tensor:
        z = self.pre_module(self.downsample(z))
        semantic, semantic_z = self.semantic_quantizer.encode(z)
        residual, _ = self.quantizer.encode(z - semantic_z)
        return torch.cat([semantic, residual], dim=1)

    def decode(self, codes: Tensor, state: DecodeState | None = None) -> Tensor:
        semantic = codes[:, :1].clamp(max=self.semantic_size - 1)
        residual = codes[:, 1:].clamp(max=self.residual_size - 1)
        z = self.semantic_quantizer.decode(semantic) + self.quantizer.decode(residual)
        if state is None:
            out: Tensor = self.upsample(self.post_module(z))
            return out
        return stream(self.upsample, self.post_module.stream(z, state), state)


class Codec(nn.Module):
    """Audio (44.1 kHz mono) to codes (1 + n_codebooks, frames) and back."""

    def __init__(self, config: CodecConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quantizer = Quantizer(config)
        self.decoder = Decoder(config)

    @torch.inference_mode()
    def encode(self, audio: Tensor) -> Tensor:
        """Codes of a (samples,) waveform; the audio is zero-padded to whole frames, as the reference does."""
        length = audio.shape[-1]
        frames = max(1, math.ceil(length / self.config.frame_length))
        x = F.pad(
            audio.reshape(1, 1, -1).to(self._weight),
            (0, frames * self.config.frame_length - length),
        )
        return self.quantizer.encode(self.encoder(x))[0, :, :frames]

    @torch.inference_mode()
    def decode(self, codes: Tensor) -> Tensor:
        """The (samples,) waveform of codes (num_codebooks, frames): frame_length samples a frame."""
        audio: Tensor = self.decoder(self.quantizer.decode(codes[None].to(self._weight.device).long()))
        return audio[0, 0]

    @property
    def _weight(self) -> Tensor:
        """The first convolution's weight: where (and in what precision) the codec runs."""
        first = self.encoder.block[0]
        assert isinstance(first, CausalConv)
        return first.conv.weight

    def start_decoding(self, batch: int = 1) -> DecodeState:
        """The state of `batch` new streams: every decoder layer as if it had seen silence before."""
        like = self._weight
        layers = [
            m for part in (self.quantizer.post_module, self.quantizer.upsample, self.decoder) for m in part.modules()
        ]
        tensors = {
            m: t for m in layers if isinstance(m, Streamable) and (t := m.initial_state(batch, like)) is not None
        }
        return DecodeState(torch.zeros(batch, dtype=torch.long, device=like.device), tensors)

    @torch.inference_mode()
    def decode_next(self, codes: Tensor, state: DecodeState) -> Tensor:
        """The waveforms (batch, samples) of the next codes (batch, num_codebooks, frames) of `state`'s
        streams; the state moves on past them."""
        audio = stream(self.decoder.model, self.quantizer.decode(codes.to(self._weight.device).long(), state), state)
        state.frames = state.frames + codes.shape[-1]
        return audio[:, 0]


# -- loading ----------------------------------------------------------------------------------


def fold_weight_norm(state: dict[str, Any]) -> dict[str, Tensor]:
    """Turn weight-normed pairs (g, v) into plain weights: w = g * v / |v| (norm over all but dim 0).

    Both namings appear in published files: `weight_g`/`weight_v` and
    `parametrizations.weight.original0`/`original1`.
    """
    out: dict[str, Tensor] = {}
    pairs: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        for g_name, v_name in (
            ("weight_g", "weight_v"),
            ("parametrizations.weight.original0", "parametrizations.weight.original1"),
        ):
            if key.endswith(g_name) or key.endswith(v_name):
                name = g_name if key.endswith(g_name) else v_name
                pairs.setdefault(key.removesuffix(name), {})["g" if name == g_name else "v"] = value
                break
        else:
            out[key] = value
    for prefix, pair in pairs.items():
        if set(pair) != {"g", "v"}:
            raise CheckpointError(f"codec weights: {prefix} has half a weight-norm pair")
        v = pair["v"].float()
        norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.ndim - 1)))
        out[prefix + "weight"] = pair["g"].float() * v / norm
    return out


def load_codec(
    path: str | Path,
    config: CodecConfig | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Codec:
    """Load codec.pth (a plain state dict, or one under `state_dict` with a `generator.` prefix)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; expected the codec weights (codec.pth)")
    config = config or CodecConfig()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not readable ({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}; expected a state dict")
    if any(k.startswith("generator.") for k in state):
        state = {k.removeprefix("generator."): v for k, v in state.items() if k.startswith("generator.")}
    weights = fold_weight_norm(state)
    codec = Codec(config)
    check_weights(codec, weights, path)  # the reference's unused decoder-block transformers are left out here
    codec.load_state_dict({k: weights[k] for k in codec.state_dict()})
    return codec.to(device=device, dtype=dtype).eval()
