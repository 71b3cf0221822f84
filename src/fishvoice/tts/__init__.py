"""Voice backends: the protocol and Piper (embedded). Fish Speech comes as `fish.py`.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from .base import TTS

__all__ = ["TTS"]
