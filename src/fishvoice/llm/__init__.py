"""Language-model backends: the protocol, llama.cpp in process, and any OpenAI-compatible server."""

from .base import LLM, ChatMessage, Usage

__all__ = ["LLM", "ChatMessage", "Usage"]
