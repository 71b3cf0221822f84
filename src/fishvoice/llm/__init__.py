"""Language-model backends: the protocol, llama.cpp in process, and any OpenAI-compatible server.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from .base import LLM, ChatMessage, Usage

__all__ = ["LLM", "ChatMessage", "Usage"]
