"""The Fish engine's text-to-semantic half: golden vectors from fishaudio's own code, tiny checkpoints
written by the tests, the KV cache, seeds, and every malformed checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

torch = pytest.importorskip("torch", reason="the Fish engine needs the `fish` extra (torch)")

from fishvoice.fish.checkpoints import load_text_to_semantic  # noqa: E402
from fishvoice.fish.errors import CheckpointError  # noqa: E402
from fishvoice.fish.generate import Sampling, generate_codes  # noqa: E402
from fishvoice.fish.model import CacheAccess  # noqa: E402
from fishvoice.fish.prompt import build_prompt  # noqa: E402
from fishvoice.tts.fish import engine_error  # noqa: E402

from .fish_tiny import write_checkpoint  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "golden"
LAYOUTS = ["s1-mini", "s2-pro"]


def golden(layout: str) -> dict:
    return json.loads((GOLDEN / layout / "golden.json").read_text())


@pytest.fixture(scope="module", params=LAYOUTS)
def layout(request) -> str:
    return request.param


@pytest.mark.parametrize("name", LAYOUTS)
def test_golden_forward_logits_and_fast_input_match_the_reference(name):
    text_to_semantic = load_text_to_semantic(GOLDEN / name)
    expected = golden(name)
    assert (text_to_semantic.tokenizer.semantic_begin_id, text_to_semantic.tokenizer.semantic_end_id) == (
        expected["semantic_begin_id"],
        expected["semantic_end_id"],
    )
    with torch.no_grad():
        logits, hidden = text_to_semantic.model.forward_slow(
            torch.tensor(expected["forward"]["input"])[None], last_only=False
        )
    torch.testing.assert_close(
        logits[0].double(), torch.tensor(expected["forward"]["logits"], dtype=torch.float64), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        hidden[0].double(), torch.tensor(expected["forward"]["hidden"], dtype=torch.float64), atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("name", LAYOUTS)
def test_golden_prompt_matrix_and_greedy_codes_match_the_reference(name):
    text_to_semantic = load_text_to_semantic(GOLDEN / name)
    case = golden(name)["generate"]
    prompt = build_prompt(
        text_to_semantic.tokenizer, 4, case["text"], case["reference_text"], torch.tensor(case["reference_codes"])
    )
    assert prompt.tolist() == case["prompt"]
    codes = generate_codes(
        text_to_semantic.model,
        prompt,
        text_to_semantic.tokenizer.im_end_id,
        case["max_new_tokens"],
        Sampling(top_k=case["top_k"]),
    )
    assert [codes.tolist()] == case["codes"]


def test_prompt_without_reference_uses_the_plain_system_turn():
    text_to_semantic = load_text_to_semantic(GOLDEN / "s1-mini")
    prompt = build_prompt(text_to_semantic.tokenizer, 4, "Hello world.")
    assert prompt.shape[0] == 5 and not prompt[1:].any()
    pieces = [
        "<|im_start|>system\n",
        "convert the provided text to speech",
        "<|im_end|>\n",
        "<|im_start|>user\n",
        "Hello world.",
        "<|im_end|>\n",
        "<|im_start|>assistant\n<|voice|>",
    ]
    assert prompt[0].tolist() == [token for piece in pieces for token in text_to_semantic.tokenizer.encode(piece)]


@pytest.mark.parametrize(
    ("name", "weights"), [("s1-mini", "pth"), ("s2-pro", "safetensors"), ("s2-pro", "sharded"), ("s2-pro", "pth")]
)
def test_tiny_checkpoints_load_through_the_user_loader(tmp_path, name, weights):
    written = write_checkpoint(tmp_path / name, name, seed=1, weights=weights)
    loaded = load_text_to_semantic(tmp_path / name).model
    assert loaded.config.layout == name
    inp = torch.zeros(1, 5, 9, dtype=torch.long)
    inp[0, 0] = torch.tensor([2, 50, 60, 13, 14, 15, 3, 70, 12])
    inp[0, 1:, 3:6] = torch.randint(0, 32, (4, 3))
    with torch.no_grad():
        for a, b in zip(
            written.forward_slow(inp, last_only=False), loaded.forward_slow(inp, last_only=False), strict=True
        ):
            torch.testing.assert_close(a, b)


def test_kv_cache_decode_gives_the_logits_of_a_full_recomputation(tmp_path, layout):
    write_checkpoint(tmp_path / layout, layout, seed=2)
    model = load_text_to_semantic(tmp_path / layout).model
    torch.manual_seed(0)
    seq = torch.zeros(1, 5, 20, dtype=torch.long)
    seq[0, 0] = torch.randint(0, 12, (20,))
    seq[0, 0, 8:] = torch.randint(12, 44, (12,))  # semantic frames after some text
    seq[0, 1:, 8:] = torch.randint(0, 32, (4, 12))
    model.setup_caches(32, slots=2)
    with torch.no_grad():
        logits, hidden = model.forward_slow(seq[..., :8], CacheAccess(1, torch.arange(8)[None], 8))
        for pos in range(8, 20):
            logits, hidden = model.forward_slow(seq[..., pos : pos + 1], CacheAccess(1, torch.tensor([[pos]]), pos + 1))
            full_logits, full_hidden = model.forward_slow(seq[..., : pos + 1])
            torch.testing.assert_close(logits, full_logits, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(hidden, full_hidden, atol=1e-5, rtol=1e-5)


def test_a_fixed_seed_gives_the_same_codes(tmp_path, layout):
    write_checkpoint(tmp_path / layout, layout, seed=3)
    text_to_semantic = load_text_to_semantic(tmp_path / layout)
    prompt = build_prompt(text_to_semantic.tokenizer, 4, "Hello world.")

    def run(seed):
        return generate_codes(
            text_to_semantic.model,
            prompt,
            text_to_semantic.tokenizer.im_end_id,
            30,
            Sampling(temperature=0.9, top_p=0.95, top_k=30, seed=seed),
        )

    first, again, other = run(7), run(7), run(8)
    assert first.shape[0] == 4 and first.shape[1] > 0
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert int(first.min()) >= 0 and int(first.max()) < 32


def test_generation_stops_at_the_frame_limit(tmp_path):
    write_checkpoint(tmp_path / "m", "s1-mini", seed=4)
    text_to_semantic = load_text_to_semantic(tmp_path / "m")
    prompt = build_prompt(text_to_semantic.tokenizer, 4, "Hello.")
    codes = generate_codes(text_to_semantic.model, prompt, text_to_semantic.tokenizer.im_end_id, 6, Sampling(top_k=1))
    assert codes.shape[1] <= 5


def break_file(path: Path, name: str, content: bytes | None) -> None:
    target = path / name
    if content is None:
        target.unlink()
    else:
        target.write_bytes(content)


@pytest.mark.parametrize(
    ("name", "change", "words"),
    [
        ("config.json", None, "config.json: missing"),
        ("config.json", b"{not json", "not readable JSON"),
        ("config.json", json.dumps({"model_type": "naive"}).encode(), "model_type 'naive' is not one we load"),
        ("tokenizer.json", None, "tokenizer.json: missing"),
        ("model.pth", None, "no weights; expected one of model.safetensors.index.json, model.safetensors, model.pth"),
        ("model.pth", b"garbage", "weights not readable"),
    ],
)
def test_malformed_checkpoints_fail_with_the_file_named(tmp_path, name, change, words):
    write_checkpoint(tmp_path / "m", "s1-mini")
    break_file(tmp_path / "m", name, change)
    with pytest.raises(CheckpointError) as caught:
        load_text_to_semantic(tmp_path / "m")
    error = engine_error(caught.value)  # as the user sees it
    assert words in error.message and error.code == "backend_unavailable"


def test_wrong_shape_and_missing_weight_and_missing_shard_are_named(tmp_path):
    write_checkpoint(tmp_path / "shape", "s1-mini")
    state = torch.load(tmp_path / "shape" / "model.pth")
    state["norm.weight"] = torch.ones(65)
    torch.save(state, tmp_path / "shape" / "model.pth")
    with pytest.raises(CheckpointError, match=r"norm.weight has shape \(65,\); the configuration expects \(64,\)"):
        load_text_to_semantic(tmp_path / "shape")
    del state["norm.weight"]
    torch.save(state, tmp_path / "shape" / "model.pth")
    with pytest.raises(CheckpointError, match=r"missing weights norm\.weight"):
        load_text_to_semantic(tmp_path / "shape")
    write_checkpoint(tmp_path / "shards", "s2-pro", weights="sharded")
    (tmp_path / "shards" / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model-00002-of-00002\.safetensors: missing"):
        load_text_to_semantic(tmp_path / "shards")
    with pytest.raises(CheckpointError, match="not a directory"):
        load_text_to_semantic(tmp_path / "nowhere")


def test_golden_checkpoint_copied_elsewhere_still_loads(tmp_path):
    shutil.copytree(GOLDEN / "s2-pro", tmp_path / "s2")
    assert load_text_to_semantic(tmp_path / "s2").model.config.layout == "s2-pro"
