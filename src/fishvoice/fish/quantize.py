"""Weight-only int8, in the manner of gpt-fast: each linear weight of the slow and fast transformers stored as
int8 with one scale per output channel, and the output head's rows with them (a quantized copy where the
head is the token embeddings), and the codebooks' embedding table. The token embeddings, norms and the
codec stay as they are. A matmul reads a quarter of fp32's bytes, half of bf16's: what decode, bound by
reading the weights, is paid for.

The matmul is torch's own fused kernel where it has one for the device (`_weight_int8pack_mm` on the CPU);
on CUDA the int8 weight is widened inside the matmul's expression, which the compiled step fuses into one
kernel.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .model import DualAR

MARKER = "quantization.json"  # beside config.json in a checkpoint quantized ahead of time
METHOD = "int8-weight-only"


class Int8Linear(nn.Module):
    """A linear layer whose weight is int8 rows, each with its scale: `x @ (weight * scales[:, None]).T`."""

    weight: Tensor  # buffers, declared for the type checker
    scales: Tensor
    bias: Tensor | None

    def __init__(self, in_features: int, out_features: int, bias: bool = False, dtype: torch.dtype | None = None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scales", torch.ones(out_features, dtype=dtype))
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype) if bias else None)

    @classmethod
    def of(cls, weight: Tensor, bias: Tensor | None = None) -> Int8Linear:
        """The int8 form of a float weight (out, in) and its bias."""
        linear = cls(weight.shape[1], weight.shape[0], bias is not None, weight.dtype).to(weight.device)
        linear.weight, linear.scales = quantize_rows(weight)
        if bias is not None:
            linear.bias = bias.detach().clone()
        return linear

    def forward(self, x: Tensor) -> Tensor:
        return int8_linear(x, self.weight, self.scales, self.bias)


class Int8Embedding(nn.Module):
    """An embedding table as int8 rows, each with its scale (the codebooks' table: S2-Pro's int8 weights are
    then 54% of its bf16 bytes rather than 56%, and a frame looks up only ten rows of it)."""

    weight: Tensor  # buffers, declared for the type checker
    scales: Tensor

    def __init__(self, count: int, dim: int, dtype: torch.dtype | None = None):
        super().__init__()
        self.register_buffer("weight", torch.zeros(count, dim, dtype=torch.int8))
        self.register_buffer("scales", torch.ones(count, dtype=dtype))

    @classmethod
    def of(cls, weight: Tensor) -> Int8Embedding:
        table = cls(weight.shape[0], weight.shape[1], weight.dtype).to(weight.device)
        table.weight, table.scales = quantize_rows(weight)
        return table

    def forward(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.weight).to(self.scales.dtype) * self.scales[ids][..., None]


def quantize_rows(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 per output row: the row's largest magnitude maps to 127."""
    rows = weight.detach().float()
    scales = rows.abs().amax(dim=1).clamp(min=1e-8) / 127
    quantized = torch.round(rows / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return quantized, scales.to(weight.dtype)


def int8_linear(x: Tensor, weight: Tensor, scales: Tensor, bias: Tensor | None = None) -> Tensor:
    if x.device.type == "cpu":
        # The CPU kernel takes a 2-D input in the scales' dtype.
        flat = x.reshape(-1, x.shape[-1]).to(scales.dtype)
        packed: Tensor = torch.ops.aten._weight_int8pack_mm(flat, weight, scales)
        y = packed.view(*x.shape[:-1], -1).to(x.dtype)
    else:
        y = F.linear(x, weight.to(x.dtype)) * scales
    return y if bias is None else y + bias


def quantize_model(model: DualAR) -> DualAR:
    """`model` with every linear layer of both transformers, the fast transformer's input projection and
    output, an untied output head and the codebooks' table in int8 (in place); returns it."""
    return _as_int8(model, filled=True)


def empty_int8_model(model: DualAR) -> DualAR:
    """The structure of `quantize_model(model)` (weights not yet loaded): for a checkpoint saved quantized,
    built on the meta device before its weights are assigned."""
    return _as_int8(model, filled=False)


def _as_int8(model: DualAR, filled: bool) -> DualAR:
    """The layers quantization replaces, replaced: quantized from their weights, or `filled` False empty."""
    for owner, name, linear in list(_linears(model)):
        if filled:
            setattr(owner, name, Int8Linear.of(linear.weight, linear.bias))
        else:
            setattr(owner, name, Int8Linear(linear.in_features, linear.out_features, linear.bias is not None))
    codebooks = model.codebook_embeddings
    assert isinstance(codebooks, nn.Embedding)
    table = codebooks.weight
    model.codebook_embeddings = Int8Embedding.of(table) if filled else Int8Embedding(table.shape[0], table.shape[1])
    model.quantization = METHOD
    return model


def _linears(model: DualAR) -> Iterator[tuple[nn.Module, str, nn.Linear]]:
    """(owner, attribute, layer) of each linear layer quantization replaces."""
    for block in [*model.layers, *model.fast_layers]:
        for path, child in block.named_modules():
            if isinstance(child, nn.Linear):
                owner, _, name = path.rpartition(".")
                yield block.get_submodule(owner), name, child
    for name in ("output", "fast_project_in", "fast_output"):
        if isinstance(child := getattr(model, name, None), nn.Linear):
            yield model, name, child


def candidate_head(model: DualAR, rows: Tensor) -> Tensor | Int8Linear:
    """The output projection's `rows` (the tokens a frame may draw): a float weight, or for a quantized
    model an Int8Linear of them (the untied head's own int8 rows, or the embeddings' rows quantized)."""
    if model.quantization != METHOD:
        return model.head_weight().detach()[rows].contiguous()
    if model.config.tie_word_embeddings:
        return Int8Linear.of(model.embeddings.weight.detach()[rows])
    output = model.output
    assert isinstance(output, Int8Linear)
    head = Int8Linear(output.in_features, len(rows), False, output.scales.dtype).to(output.weight.device)
    head.weight, head.scales = output.weight[rows].contiguous(), output.scales[rows].contiguous()
    return head


def is_quantized_checkpoint(path: Path) -> bool:
    marker = path / MARKER
    return marker.is_file() and json.loads(marker.read_text()).get("method") == METHOD
