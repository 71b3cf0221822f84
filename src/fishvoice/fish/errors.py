"""Checkpoint errors: raised at load time, naming the file and what was expected."""

from __future__ import annotations

import logging
from pathlib import Path

from torch import Tensor, nn

from ..errors import FishvoiceError

log = logging.getLogger(__name__)


class CheckpointError(FishvoiceError):
    """A Fish Speech checkpoint is missing a file, or a file does not match what the loader expects."""

    def __init__(self, message: str):
        super().__init__("backend_unavailable", message)


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
                f"{source}: {key} has shape {tuple(weights[key].shape)}; the configuration expects {tuple(tensor.shape)}"
            )
    unused = [k for k in weights if k not in expected]
    if unused:
        log.info("%s: %d weights not used (first: %s)", source, len(unused), unused[0])
