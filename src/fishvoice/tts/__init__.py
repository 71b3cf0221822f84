"""Voice backends: the protocol and Piper (embedded). Fish Speech comes as `fish.py`."""

from .base import TTS

__all__ = ["TTS"]
