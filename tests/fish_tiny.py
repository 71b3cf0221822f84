"""Tiny Fish Speech checkpoints, written by the tests in the published file formats and names."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fishvoice.fish.config import DualARConfig
from fishvoice.fish.model import DualAR

CODEBOOK_SIZE = 32
SPECIALS = [
    "<|endoftext|>",
    "<|pad|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|phoneme_start|>",
    "<|phoneme_end|>",
    "<|text|>",
    "<|voice|>",
    "<|interleave|>",
    "<|audio_start|>",
    "<|audio_end|>",
    "<|audio_pad|>",
    *[f"<|semantic:{i}|>" for i in range(CODEBOOK_SIZE)],
    "<|speaker:0|>",
    "<|speaker:1|>",
]
SLOW = {
    "vocab_size": 384,
    "n_layer": 2,
    "n_head": 4,
    "n_local_heads": 2,
    "head_dim": 16,
    "dim": 64,
    "intermediate_size": 128,
    "rope_base": 10000,
    "norm_eps": 1e-6,
    "max_seq_len": 512,
    "tie_word_embeddings": True,
    "attention_qkv_bias": False,
}
FAST = {"n_layer": 2, "dim": 48, "n_head": 4, "n_local_heads": 2, "head_dim": 12, "intermediate_size": 96}


def write_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=SLOW["vocab_size"],
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [
        "convert the provided text to speech reference to the following",
        "Hello world. This is a tiny voice test.",
        "system user assistant Text Speech",
    ] * 20
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>"})
    )


def published_config(layout: str) -> dict:
    if layout == "s1-mini":
        return {
            "model_type": "dual_ar",
            "codebook_size": CODEBOOK_SIZE,
            "num_codebooks": 4,
            "attention_qk_norm": False,
            **SLOW,
            "n_fast_layer": FAST["n_layer"],
            **{f"fast_{k}": v for k, v in FAST.items() if k != "n_layer"},
        }
    return {
        "model_type": "fish_qwen3_omni",
        "text_config": {**SLOW, "attention_qk_norm": True},
        "audio_decoder_config": {
            "vocab_size": CODEBOOK_SIZE,
            "num_codebooks": 4,
            "text_dim": SLOW["dim"],
            "attention_qk_norm": True,
            "attention_qkv_bias": False,
            **FAST,
        },
    }


def random_model(layout: str, seed: int = 0) -> DualAR:
    config = (
        DualARConfig._from_s2_pro(published_config(layout))
        if layout == "s2-pro"
        else DualARConfig._known(published_config(layout))
    )
    config.semantic_begin_id = SPECIALS.index("<|semantic:0|>")
    config.semantic_end_id = config.semantic_begin_id + CODEBOOK_SIZE - 1
    torch.manual_seed(seed)
    model = DualAR(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
    return model.eval()


def s2_pro_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our names back to the published S2-Pro ones."""
    out = {}
    for key, value in state.items():
        if key.startswith("codebook_embeddings."):
            out["audio_decoder." + key] = value
        elif key.startswith("fast_"):
            out["audio_decoder." + key.removeprefix("fast_")] = value
        else:
            out["text_model.model." + key] = value
    return out


def write_checkpoint(
    path: Path, layout: str, seed: int = 0, weights: str = "default", talkative: bool = False
) -> DualAR:
    """A checkpoint directory; `weights`: default (the layout's), pth, safetensors or sharded.

    `talkative`: <|im_end|>'s embedding is zeroed, so random weights rarely end the speech at once.
    """
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(published_config(layout), indent=2))
    write_tokenizer(path)
    model = random_model(layout, seed)
    if talkative:
        with torch.no_grad():
            model.embeddings.weight[SPECIALS.index("<|im_end|>")] = 0.0
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    weights = weights if weights != "default" else ("pth" if layout == "s1-mini" else "safetensors")
    if weights == "pth":
        torch.save(state, path / "model.pth")
    else:
        state = s2_pro_names(state)
        if weights == "safetensors":
            save_file(state, str(path / "model.safetensors"))
        else:
            keys = sorted(state)
            shards = {
                "model-00001-of-00002.safetensors": keys[: len(keys) // 2],
                "model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
            }
            for name, names in shards.items():
                save_file({k: state[k] for k in names}, str(path / name))
            index = {"metadata": {}, "weight_map": {k: name for name, names in shards.items() for k in names}}
            (path / "model.safetensors.index.json").write_text(json.dumps(index))
    return model


# -- the codec --------------------------------------------------------------------------------

CODEC_JSON = {
    "sample_rate": 44100,
    "encoder_dim": 8,
    "encoder_rates": [2, 4, 8, 8],
    "decoder_dim": 64,
    "decoder_rates": [8, 8, 4, 2],
    "encoder_transformer_layers": [0, 0, 0, 1],
    "decoder_transformer_layers": [1, 0, 0, 0],
    "transformer_general_config": {
        "block_size": 1024,
        "n_local_heads": -1,
        "head_dim": 16,
        "rope_base": 10000,
        "norm_eps": 1e-5,
    },
    "quantizer": {
        "input_dim": 128,
        "n_codebooks": 3,
        "codebook_size": 32,
        "codebook_dim": 4,
        "quantizer_dropout": 0.0,
        "downsample_factor": [2, 2],
        "semantic_codebook_size": 32,
        "pre_and_post_module": {
            "causal": True,
            "window_size": 16,
            "input_dim": 128,
            "config": {
                "block_size": 256,
                "n_layer": 1,
                "n_head": 2,
                "dim": 32,
                "intermediate_size": 64,
                "n_local_heads": -1,
                "head_dim": 16,
                "rope_base": 10000,
                "norm_eps": 1e-5,
            },
        },
    },
}


def write_codec(path: Path, seed: int = 0, wrapped: bool = False, quantizer_layers: int = 1, window: int = 16):
    """codec.json and codec.pth in the published naming (weight-normed convolutions as g and v).
    `quantizer_layers`, `window`: the quantizer's windowed transformers (the published codec: 8 of 128)."""
    from fishvoice.fish.codec import Codec, CodecConfig

    path.mkdir(parents=True, exist_ok=True)
    config = json.loads(json.dumps(CODEC_JSON))
    config["quantizer"]["pre_and_post_module"]["window_size"] = window
    config["quantizer"]["pre_and_post_module"]["config"]["n_layer"] = quantizer_layers
    (path / "codec.json").write_text(json.dumps(config))
    torch.manual_seed(seed)
    codec = Codec(CodecConfig.from_json(path / "codec.json")).eval()
    with torch.no_grad():
        for name, param in codec.named_parameters():
            if name.endswith(("alpha", "gamma")):
                param.uniform_(0.5, 1.5)
    state = {}
    for key, value in codec.state_dict().items():
        norm_g = value.flatten(1).norm(dim=1).view(-1, *([1] * (value.ndim - 1))) if value.ndim > 1 else None
        if key.startswith(("encoder.", "decoder.")) and key.endswith("conv.weight"):
            state[key.removesuffix("weight") + "parametrizations.weight.original0"] = norm_g.clone()
            state[key.removesuffix("weight") + "parametrizations.weight.original1"] = value.clone()
        elif key.endswith(("in_proj.weight", "out_proj.weight")):
            state[key.removesuffix("weight") + "weight_g"] = norm_g.clone()
            state[key.removesuffix("weight") + "weight_v"] = value.clone()
        else:
            state[key] = value.clone()
    if wrapped:
        state = {"state_dict": {"generator." + k: v for k, v in state.items()} | {"discriminator.x": torch.zeros(1)}}
    torch.save(state, path / "codec.pth")
    return codec


def write_voice(path: Path) -> Path:
    """A tiny S1-mini checkpoint with its codec that speaks (talkative), as the voice tests use it."""
    write_checkpoint(path, "s1-mini", seed=5, talkative=True)
    write_codec(path, seed=6)
    return path
