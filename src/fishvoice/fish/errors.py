"""Checkpoint errors: raised at load time, naming the file and what was expected."""

from __future__ import annotations

from ..errors import FishvoiceError


class CheckpointError(FishvoiceError):
    """A Fish Speech checkpoint is missing a file, or a file does not match what the loader expects."""

    def __init__(self, message: str):
        super().__init__("backend_unavailable", message)
