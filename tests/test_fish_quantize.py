"""The Fish engine's weight-only int8 (fish/quantize.py): parity with the float model on the golden vectors
(fishaudio's own) and on random weights at S1-mini's published size, S2-Pro checked layer by layer at its
size and counted on meta tensors, a checkpoint quantized ahead of time (`fishvoice fish quantize`) loading
as it is. Bounds stated in the README: slow-transformer logits within 2% relative error; greedy codes equal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fishvoice.fish.checkpoints import load_text_to_semantic
from fishvoice.fish.config import published_config
from fishvoice.fish.generate import Sampling, generate_codes
from fishvoice.fish.model import Block, DualAR, rope_table
from fishvoice.fish.prompt import build_prompt
from fishvoice.fish.quantize import Int8Embedding, Int8Linear, empty_int8_model, int8_linear, quantize_model

GOLDEN = Path(__file__).resolve().parent / "golden"
LOGITS_ERROR = 0.02  # relative (Frobenius) error of int8 logits against the float model's
GREEDY_FRAMES = 3  # greedy frames equal at S1-mini's size with random weights


def relative_error(found: torch.Tensor, expected: torch.Tensor) -> float:
    return float((found.double() - expected.double()).norm() / expected.double().norm())


def golden_codes(path: Path, quant: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """The greedy codes of the golden s1-mini or s2-pro case from the checkpoint at `path`, and the reference's."""
    loaded = load_text_to_semantic(path, quant=quant)
    case = json.loads((GOLDEN / path.name.removesuffix("-int8") / "golden.json").read_text())["generate"]
    reference = torch.tensor(case["reference_codes"])
    prompt = build_prompt(loaded.tokenizer, 4, case["text"], case["reference_text"], reference)
    sampling = Sampling(top_k=case["top_k"])
    codes = generate_codes(loaded.model, prompt, loaded.tokenizer.im_end_id, case["max_new_tokens"], sampling)
    return codes, torch.tensor(case["codes"][0])


def test_the_int8_matmul_is_the_dequantized_weights_matmul():
    torch.manual_seed(0)
    weight, bias, x = torch.randn(96, 64), torch.randn(96), torch.randn(2, 5, 64)
    layer = Int8Linear.of(weight, bias)
    assert layer.weight.dtype == torch.int8 and layer.weight.abs().max() == 127
    dequantized = layer.weight.float() * layer.scales[:, None]
    torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, dequantized, bias), rtol=1e-5, atol=1e-5)
    assert relative_error(layer(x), torch.nn.functional.linear(x, weight, bias)) < 0.01
    # The CUDA path's expression, run here: the same numbers as the CPU kernel.
    widened = torch.nn.functional.linear(x, layer.weight.float()) * layer.scales + bias
    torch.testing.assert_close(int8_linear(x, layer.weight, layer.scales, bias), widened, rtol=1e-5, atol=1e-5)
    table = Int8Embedding.of(weight)
    ids = torch.tensor([[0, 5, 95]])
    torch.testing.assert_close(table(ids), dequantized[ids], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["s1-mini", "s2-pro"])
def test_golden_logits_within_the_bound_and_greedy_codes_equal(name):
    expected = json.loads((GOLDEN / name / "golden.json").read_text())["forward"]
    model = load_text_to_semantic(GOLDEN / name, quant="int8").model
    assert isinstance(model.layers[0].attention.wqkv, Int8Linear) and model.quantization
    with torch.no_grad():
        logits, _ = model.forward_slow(torch.tensor(expected["input"])[None], last_only=False)
    assert relative_error(logits[0], torch.tensor(expected["logits"])) < LOGITS_ERROR
    codes, reference = golden_codes(GOLDEN / name, "int8")
    assert torch.equal(codes, reference)  # every one of the reference's greedy frames


@pytest.mark.model
def test_s1_mini_at_its_published_size_with_random_weights():
    config = published_config("s1-mini")
    config.max_seq_len = 256
    torch.manual_seed(0)
    model = DualAR(config).eval()
    prompt = torch.zeros(1 + config.num_codebooks, 48, dtype=torch.long)
    prompt[0] = torch.randint(0, 150000, (48,))
    with torch.no_grad():
        logits, hidden = model.forward_slow(prompt[None], last_only=False)
    codes = generate_codes(model, prompt, 151645, 6, Sampling(top_k=1))
    quantize_model(model)
    with torch.no_grad():
        int8_logits, int8_hidden = model.forward_slow(prompt[None], last_only=False)
    assert relative_error(int8_logits, logits) < LOGITS_ERROR
    assert relative_error(int8_hidden, hidden) < LOGITS_ERROR
    # Random weights leave near ties among 4,096 codes: the first frames agree, later ones may part.
    assert torch.equal(
        generate_codes(model, prompt, 151645, 6, Sampling(top_k=1))[:, :GREEDY_FRAMES], codes[:, :GREEDY_FRAMES]
    )


@pytest.mark.model
@pytest.mark.parametrize("fast", [False, True])
def test_s2_pro_layer_by_layer_at_its_size(fast):
    """S2-Pro whole in fp32 does not fit this machine: one block of each transformer at its size."""
    config = published_config("s2-pro")
    torch.manual_seed(0)
    block = Block(config.fast() if fast else config).eval()
    dim = config.fast().dim if fast else config.dim
    x = torch.randn(1, 16, dim)
    table = rope_table(16, (config.fast() if fast else config).head_dim, config.rope_base)[None]
    mask = torch.ones(16, 16, dtype=torch.bool).tril()[None, None]
    with torch.no_grad():
        expected = block(x, table, mask)
        for name, child in list(block.named_modules()):
            if isinstance(child, torch.nn.Linear):
                owner, _, attr = name.rpartition(".")
                setattr(block.get_submodule(owner), attr, Int8Linear.of(child.weight, child.bias))
        found = block(x, table, mask)
    assert relative_error(found - x, expected - x) < LOGITS_ERROR  # the block's own contribution


def test_s2_pro_int8_weights_are_at_most_55_percent_of_bf16():
    def size(model: DualAR) -> int:
        return sum(t.numel() * t.element_size() for t in model.state_dict().values())

    with torch.device("meta"):
        bf16 = size(DualAR(published_config("s2-pro")).to(torch.bfloat16))
        int8 = size(empty_int8_model(DualAR(published_config("s2-pro"))).to(torch.bfloat16))
    assert int8 <= 0.55 * bf16, (int8 / 1e9, bf16 / 1e9)


def test_a_checkpoint_quantized_ahead_of_time_loads_as_it_is(tmp_path):
    out = tmp_path / "s1-mini-int8"
    done = subprocess.run(
        [sys.executable, "-m", "fishvoice", "fish", "quantize", str(GOLDEN / "s1-mini"), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "int8 checkpoint" in done.stdout and (out / "quantization.json").is_file()
    assert (out / "model.safetensors").stat().st_size < (GOLDEN / "s1-mini" / "model.pth").stat().st_size
    model = load_text_to_semantic(out).model  # no quant asked: the checkpoint says it
    assert isinstance(model.layers[0].feed_forward.w1, Int8Linear)
    codes, reference = golden_codes(out)
    assert torch.equal(codes, reference)
    again = subprocess.run(
        [sys.executable, "-m", "fishvoice", "fish", "quantize", str(GOLDEN / "s1-mini"), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 2 and "not empty" in again.stderr
