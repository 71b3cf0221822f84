"""Load a published Fish Speech checkpoint directory: config.json, tokenizer, weights.

S1-mini ships `model.pth` (a plain state dict); S2-Pro ships `model.safetensors` (or shards with an
index) under `text_model.model.*` and `audio_decoder.*`, which map onto our module names here.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .config import DualARConfig
from .errors import CheckpointError
from .model import DualAR
from .quantize import MARKER, METHOD, empty_int8_model, is_quantized_checkpoint, quantize_model
from .tokenizer import FishTokenizer

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "model.pth")


def check_weights(module: nn.Module, weights: dict[str, Tensor], source: Path) -> None:
    """Every weight the module needs is there with its shape; else CheckpointError naming the file."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in weights]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise CheckpointError(f"{source}: missing weights {', '.join(missing[:3])}{more} for the configuration")
    for key, tensor in expected.items():
        if tuple(weights[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(weights[key].shape)}; "
                f"the configuration expects {tuple(tensor.shape)}"
            )
    unused = [k for k in weights if k not in expected]
    if unused:
        log.info("%s: %d weights not used (first: %s)", source, len(unused), unused[0])


def locate_checkpoint(name: str, cache_dir: str | None = None) -> Path:
    """A local checkpoint directory as it is; otherwise a model-hub repo id ("owner/name"), downloaded
    once into the cache (with a progress bar) and served from there afterwards."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise CheckpointError(f"{name}: not a directory, nor a model-hub repo id (owner/name)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(
            f"{name}: not a local directory, and huggingface_hub is not installed to download it"
        ) from None
    log.info("fetching checkpoint %s from the model hub (once; cached in %s)", name, cache_dir or "the hub cache")
    try:
        return Path(snapshot_download(repo_id=name, cache_dir=cache_dir))
    except Exception as exc:
        raise CheckpointError(
            f"{name}: could not be downloaded from the model hub ({type(exc).__name__}); "
            "give a local directory where this machine has no network"
        ) from None


@dataclass
class TextToSemantic:
    """A loaded checkpoint: the model (eval mode, on its device) and its tokenizer."""

    model: DualAR
    tokenizer: FishTokenizer
    path: Path


def load_text_to_semantic(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, quant: str = "none"
) -> TextToSemantic:
    """Load and check a checkpoint directory; any missing or mismatched file raises CheckpointError naming it.
    `quant` "int8": its linear weights quantized as they load (quantize.py); a checkpoint saved quantized
    (`fishvoice fish quantize`) loads as such whatever `quant` says."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(
            f"{path}: not a directory; expected a Fish Speech checkpoint (config.json, tokenizer, weights)"
        )
    config = DualARConfig.from_file(path / "config.json")
    tokenizer = FishTokenizer(path)
    config.semantic_begin_id, config.semantic_end_id = tokenizer.semantic_begin_id, tokenizer.semantic_end_id
    if config.semantic_end_id >= config.vocab_size:
        raise CheckpointError(
            f"{path / 'tokenizer.json'}: semantic tokens reach id {config.semantic_end_id}, "
            f"past vocab_size {config.vocab_size}"
        )
    weights, source = _read_weights(path)
    saved_quantized = is_quantized_checkpoint(path)
    with torch.device("meta"):
        model = DualAR(config)
        if saved_quantized:
            empty_int8_model(model)
    check_weights(model, weights, source)
    model.load_state_dict(weights, strict=False, assign=True)
    model.make_rope()  # buffers were made on the meta device
    if quant == "int8" and not saved_quantized:
        quantize_model(model)  # on the CPU, before the model moves: the device never holds the float weights
    model = model.to(device=device, dtype=dtype).eval()
    log.info(
        "loaded %s checkpoint %s (%s, %d layers + %d fast%s)",
        config.layout,
        path,
        source.name,
        config.n_layer,
        config.n_fast_layer,
        ", int8 weights" if model.quantization else "",
    )
    return TextToSemantic(model, tokenizer, path)


def save_quantized(source: str | Path, target: str | Path) -> Path:
    """`source`'s checkpoint with int8 weights, written to the directory `target` (its other files copied:
    config, tokenizer, codec), loadable as it is. Returns the weights file."""
    source, target = Path(source), Path(target)
    if target.exists() and any(target.iterdir()):
        raise CheckpointError(f"{target}: not empty; the quantized checkpoint goes into a new directory")
    loaded = load_text_to_semantic(source, "cpu", torch.bfloat16, quant="int8")
    target.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        if file.is_file() and file.name not in WEIGHT_FILES and not file.name.startswith("model-"):
            shutil.copy2(file, target / file.name)
    from safetensors.torch import save_file

    weights = target / "model.safetensors"
    save_file({k: v.contiguous() for k, v in loaded.model.state_dict().items()}, str(weights))
    (target / MARKER).write_text(json.dumps({"method": METHOD, "from": str(source)}) + "\n")
    return weights


def _read_weights(path: Path) -> tuple[dict[str, Tensor], Path]:
    index, single, pth = (path / name for name in WEIGHT_FILES)
    try:
        if index.is_file():
            from safetensors.torch import load_file

            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            weights: dict[str, Tensor] = {}
            for shard in shards:
                if not (path / shard).is_file():
                    raise CheckpointError(f"{path / shard}: missing; {index.name} lists it as a shard")
                weights.update(load_file(str(path / shard), device="cpu"))
            return _from_s2_pro_names(weights), index
        if single.is_file():
            from safetensors.torch import load_file

            return _from_s2_pro_names(load_file(str(single), device="cpu")), single
        if pth.is_file():
            state = torch.load(pth, map_location="cpu", mmap=True, weights_only=True)
            if isinstance(state, Mapping) and "state_dict" in state:
                state = state["state_dict"]
            if not isinstance(state, Mapping):
                raise CheckpointError(f"{pth}: holds a {type(state).__name__}; expected a state dict")
            state = {k.removeprefix("model."): v for k, v in state.items()}
            return {k: v for k, v in state.items() if "audio_" not in k}, pth
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: weights not readable ({type(exc).__name__}: {exc})") from None
    raise CheckpointError(f"{path}: no weights; expected one of {', '.join(WEIGHT_FILES)}")


def _from_s2_pro_names(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """S2-Pro's names onto ours: text_model.model.X -> X, audio_decoder.X -> fast_X (codebook_embeddings stay)."""
    renamed = {}
    for key, value in weights.items():
        if key.startswith("text_model.model."):
            key = key.removeprefix("text_model.model.")
        elif key.startswith("audio_decoder."):
            rest = key.removeprefix("audio_decoder.")
            key = rest if rest.startswith("codebook_embeddings.") else "fast_" + rest
        renamed[key] = value
    return _fuse_qkv(renamed)


def _fuse_qkv(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """Checkpoints with separate wq/wk/wv get the fused wqkv our attention uses."""
    for key in [k for k in weights if k.endswith(".wq.weight")]:
        prefix = key.removesuffix("wq.weight")
        weights[prefix + "wqkv.weight"] = torch.cat(
            [weights.pop(prefix + name) for name in ("wq.weight", "wk.weight", "wv.weight")]
        )
    return weights
