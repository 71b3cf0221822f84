"""Any OpenAI-compatible chat server: vLLM, SGLang, llama.cpp server, Ollama."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, cast

import openai
from openai.types.chat import ChatCompletionMessageParam

from ..errors import FishvoiceError
from .base import ChatMessage, LLMItem, ToolCallDelta, Tools, Usage

log = logging.getLogger(__name__)

# Without the server's tokenizer, trimming uses a conservative estimate: English runs near four
# characters a token; three keeps a margin for other text, plus a few tokens per message for the template.
_CHARS_PER_TOKEN = 3
_TOKENS_PER_MESSAGE = 6


class OpenAICompatibleLLM:
    """Streams chat completions from an OpenAI-compatible server; retries are the SDK's."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str = "not-needed",
        model: str = "default",
        context: int = 8192,
        timeout: float = 120.0,
        stream_tools: bool = True,
    ):
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key or "not-needed", timeout=timeout, max_retries=2
        )
        self._model = model
        self.name = f"openai:{model}"
        self.context_window = context
        self.stream_tools = stream_tools  # off: a reply offered functions comes whole (for servers that need it)

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        return sum(len(_text_of(m)) // _CHARS_PER_TOKEN + _TOKENS_PER_MESSAGE for m in messages)

    async def stream(
        self, messages: list[ChatMessage], *, temperature: float, max_tokens: int, tools: Tools | None = None
    ) -> AsyncGenerator[LLMItem, None]:
        request = {
            "model": self._model,
            "messages": _openai_messages(messages),
            "temperature": temperature,
            "max_tokens": max_tokens,
            **_tool_options(tools),
        }
        whole = "tools" in request and not self.stream_tools
        reply = self._whole(request) if whole else self._streamed(request, messages, max_tokens)
        try:
            async with aclosing(reply) as items:  # closed with this stream: the server's stream with it
                async for item in items:
                    yield item
        except openai.APIError as exc:
            raise FishvoiceError("backend_unavailable", f"the LLM server failed: {exc}") from exc

    async def _streamed(
        self, request: dict[str, Any], messages: list[ChatMessage], max_tokens: int
    ) -> AsyncGenerator[LLMItem, None]:
        usage: Usage | None = None
        deltas = 0
        chunks = await self._client.chat.completions.create(
            **request, stream=True, stream_options={"include_usage": True}
        )
        async with chunks:
            async for chunk in chunks:
                if chunk.usage is not None:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                delta = chunk.choices[0].delta if chunk.choices else None
                if delta is not None and delta.content:
                    deltas += 1
                    yield delta.content
                for call in (delta.tool_calls if delta is not None else None) or []:
                    deltas += 1
                    name = call.function.name if call.function else None
                    arguments = (call.function.arguments if call.function else None) or ""
                    yield ToolCallDelta(call.index, arguments, call.id, name)
        # For servers that ignore include_usage: the prompt as trimming estimates it, and one token
        # per streamed delta (how vLLM, SGLang and llama.cpp stream).
        yield usage or Usage(self.count_tokens(messages), min(deltas, max_tokens))

    async def _whole(self, request: dict[str, Any]) -> AsyncGenerator[LLMItem, None]:
        """The reply in one piece: its text, its calls, its usage."""
        done = await self._client.chat.completions.create(**request)
        message = done.choices[0].message
        if message.content:
            yield message.content
        for index, call in enumerate(message.tool_calls or []):
            if call.type == "function":
                yield ToolCallDelta(index, call.function.arguments, call.id, call.function.name)
        used = done.usage
        yield Usage(used.prompt_tokens, used.completion_tokens) if used else Usage(0, 0)

    async def close(self) -> None:
        await self._client.close()


def _text_of(message: ChatMessage) -> str:
    """What a message says, its function calls included (for the estimate)."""
    calls = message.get("tool_calls") or []
    return message["content"] + "".join(c["function"]["name"] + c["function"]["arguments"] for c in calls)


def _tool_options(tools: Tools | None) -> dict[str, Any]:
    """`tools` and `tool_choice` as the chat API takes them; nothing where no function is offered (a server
    without function calling then still answers)."""
    if tools is None or not tools.functions:
        return {}
    choice: Any = tools.choice
    if choice not in ("auto", "none", "required"):
        choice = {"type": "function", "function": {"name": choice}}
    return {"tools": list(tools.functions), "tool_choice": choice}


def _openai_messages(messages: list[ChatMessage]) -> list[ChatCompletionMessageParam]:
    """The same messages, typed as the SDK's request takes them: a system, user, assistant (with its calls) or
    tool message is the same dict there."""
    return cast("list[ChatCompletionMessageParam]", messages)
