"""Fitting a conversation into the LLM's context: the system message, the exchange being answered (the new
message, and the function calls and results that followed it), and as many recent turns as fit beside the
tokens the reply may take.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable
from dataclasses import dataclass

from .contract import ChatMessage, exchange_starts
from .errors import FishvoiceError

log = logging.getLogger(__name__)

CONTEXT_MARGIN = 8  # tokens kept free for the template's closing marks
# Older turns are dropped this many exchanges at a time, counted from the conversation's start: the kept
# turns then begin at the same turn for several replies, so the prompt's beginning stays the same and the
# LLM reuses what it computed for it (llama.cpp keeps the longest common prefix). Dropping exactly what no
# longer fits moved the start every turn: a full conversation re-read its whole context (7 s on 2 cores).
TRIM_EXCHANGES = 4


@dataclass(frozen=True)
class FittedPrompt:
    """The messages the LLM reads, the tokens its reply may take, and a warning where they were lowered."""

    messages: list[ChatMessage]
    max_tokens: int
    warning: str | None = None


def fit_context(
    system: str,
    turns: list[ChatMessage],
    tail: list[ChatMessage],
    max_tokens: int,
    *,
    count_tokens: Callable[[list[ChatMessage]], int],
    context_window: int,
) -> FittedPrompt:
    """Keep the system message and the exchange being answered (`tail`) whole, then the newest whole
    exchanges (each from a user message on) that fit, dropped from the oldest in steps of TRIM_EXCHANGES (a
    prompt that keeps its beginning is cheap to re-read). `max_tokens` is lowered (with a warning) where the
    two alone leave too little room; a message too long for the context at all is refused, naming `message`."""
    head: list[ChatMessage] = [{"role": "system", "content": system}]
    turns = answered_calls(turns)
    window = context_window - CONTEXT_MARGIN
    needed = count_tokens(head + tail)
    if needed >= window:
        raise FishvoiceError(
            "invalid_input",
            f"message: system message and message take {needed} tokens; the model's context holds {window}",
            "message",
        )
    warning = None
    if needed + max_tokens > window:
        max_tokens = window - needed
        warning = f"max_tokens lowered to {max_tokens} to fit the model's context"

    # Fewer turns never take more tokens, so the first start that fits is found by bisection.
    def fits(start: int) -> bool:
        return count_tokens(head + turns[start:] + tail) + max_tokens <= window

    if fits(0):
        return FittedPrompt(head + turns + tail, max_tokens, warning)
    # Whole exchanges, in steps; the last start (no turns) fits, checked above.
    starts = [0, *exchange_starts(turns)[TRIM_EXCHANGES::TRIM_EXCHANGES], len(turns)]
    first = starts[bisect.bisect_left(starts, True, key=fits)]
    log.info("context trimmed: %d of %d earlier turns kept", len(turns) - first, len(turns))
    return FittedPrompt(head + turns[first:] + tail, max_tokens, warning)


def answered_calls(turns: list[ChatMessage]) -> list[ChatMessage]:
    """The turns without the function calls no result answered (a caller may talk on instead of answering
    one): OpenAI-compatible servers refuse a call not followed by its result. A message left with no words
    and no call goes too."""
    results = {turn.get("tool_call_id") for turn in turns if turn["role"] == "tool"}
    kept: list[ChatMessage] = []
    for turn in turns:
        calls = turn.get("tool_calls")
        if calls is None or all(call["id"] in results for call in calls):
            kept.append(turn)
            continue
        answered = [call for call in calls if call["id"] in results]
        if answered or turn["content"]:
            kept.append(
                {**turn, "tool_calls": answered} if answered else {"role": "assistant", "content": turn["content"]}
            )
    return kept
