"""The language-model protocol the assistant speaks to."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

from ..contract import ChatMessage, LLMItem, ToolCallDelta, Tools, Usage

__all__ = ["LLM", "ChatMessage", "LLMItem", "ToolCallDelta", "Tools", "Usage"]


class LLM(Protocol):
    """A chat model that streams its reply."""

    name: str
    context_window: int

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        """Tokens the prompt built from `messages` takes (exact where the backend can tell)."""
        ...

    def stream(
        self, messages: list[ChatMessage], *, temperature: float, max_tokens: int, tools: Tools | None = None
    ) -> AsyncGenerator[LLMItem, None]:
        """Yield the reply's text deltas and its function calls' pieces as they come, then one Usage.

        Raises FishvoiceError("backend_unavailable") when the model cannot answer. Closing the
        iterator early stops the generation.
        """
        ...

    async def close(self) -> None: ...
