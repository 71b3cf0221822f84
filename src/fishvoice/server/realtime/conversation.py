"""What a session keeps and stores: the turns so far, what the user said that is not answered yet, and
the last exchange, stored once the next reply starts or the session ends, so a truncation of its reply
still counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...contract import ChatMessage, exchange_starts
from ...errors import FishvoiceError
from ...memory.base import ConversationStore
from .protocol import assistant_item
from .reply import Reply


@dataclass
class Exchange:
    """The last answered turn, not yet stored: a truncation can still cut it."""

    item_id: str
    user: str
    reply: Reply
    assistant: str
    user_item: str | None = None
    after: list[ChatMessage] | None = None  # the function calls and results between the two

    def messages(self) -> list[ChatMessage]:
        user: ChatMessage = {"role": "user", "content": self.user}
        return [user, *(self.after or []), {"role": "assistant", "content": self.assistant}]


class Conversation:
    def __init__(self, store: ConversationStore, namespace: str, conversation_id: str):
        self.store = store
        self.namespace = namespace
        self.id = conversation_id
        self.turns: list[ChatMessage] = []
        self.unanswered: list[str] = []  # user turns heard but not yet answered
        self.last_item: str | None = None  # the id of the conversation's last item
        self.exchange: Exchange | None = None
        self.items: dict[str, dict[str, Any]] = {}  # this session's items as the client sees them, by id
        self.stored = 0  # how many of the turns, from the first, the store holds (the rest wait for their exchange)

    def keep(self, item: dict[str, Any]) -> dict[str, Any]:
        """An item of this session, as it is now (`conversation.item.retrieve` answers with it)."""
        self.items[item["id"]] = item
        return item

    def keep_all(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            self.keep(item)

    def item(self, item_id: str) -> dict[str, Any]:
        if item_id not in self.items:
            raise FishvoiceError("not_found", f"item_id: no item {item_id[:60]!r} in this session", "item_id")
        return self.items[item_id]

    async def delete(self, item_id: str) -> None:
        """The item leaves the session's conversation: its message is no longer unanswered, nor a turn the next
        replies read, nor stored (deleted from the store, or not stored with its exchange if that waits)."""
        item = self.item(item_id)
        if item["type"] == "function_call":
            raise FishvoiceError(
                "invalid_input", "item_id: a function call goes with its reply; delete its output instead", "item_id"
            )
        del self.items[item_id]
        turn = _turn_of(item)
        if turn["role"] == "user" and turn["content"] in self.unanswered:
            self.unanswered.remove(turn["content"])
        index = next((i for i in range(len(self.turns) - 1, -1, -1) if self.turns[i] == turn), None)
        if index is not None:
            del self.turns[index]
        if self.exchange is not None and item_id in (self.exchange.item_id, self.exchange.user_item):
            self.exchange = None
        elif index is not None and index < self.stored:
            self.stored -= 1
            await self.store.delete_turn(self.namespace, self.id, turn)

    async def load(self) -> str | None:
        """The stored turns; returns the stored system message."""
        stored = await self.store.load(self.namespace, self.id)
        self.turns = list(stored.turns)
        self.stored = len(self.turns)
        return stored.system_message

    def open_exchange(self) -> tuple[list[ChatMessage], str, list[ChatMessage]] | None:
        """The exchange a function's result left open, for the next reply to go on from: the turns before it,
        its user message, and the calls and results since; None where the last turn is no function's result."""
        starts = exchange_starts(self.turns)
        if not self.turns or self.turns[-1]["role"] != "tool" or not starts:
            return None
        return self.turns[: starts[-1]], self.turns[starts[-1]]["content"], self.turns[starts[-1] + 1 :]

    def remember(self, reply: Reply, heard: str) -> None:
        """The exchange joins the conversation; a reply nobody heard leaves its question to the next turn. A
        reply that called functions waits for their results (stored with the answer to them)."""
        calls = [reply.calls[index] for index in sorted(reply.calls)]
        if not heard and not calls:
            if not reply.after:
                self.unanswered.insert(0, reply.message)
            return
        said: ChatMessage = {"role": "assistant", "content": heard}
        if calls:
            said["tool_calls"] = calls
        self.turns += [said] if reply.after else [{"role": "user", "content": reply.message}, said]
        if not calls:
            self.exchange = Exchange(reply.summary.item_id, reply.message, reply, heard, reply.previous_item)
            self.exchange.after = reply.after

    def add_result(self, call_id: str, output: str) -> None:
        """A function's result, for the next reply: refused where no call of this session's is answered by it."""
        called = {c["id"] for turn in self.turns for c in turn.get("tool_calls", [])}
        if call_id not in called:
            raise FishvoiceError(
                "not_found", f"item.call_id: no function call {call_id[:60]!r} to answer", "item.call_id"
            )
        self.turns.append({"role": "tool", "content": output, "tool_call_id": call_id})

    def cut(self, heard_ms: int) -> None:
        """The last exchange as far as its reply was heard; heard not at all, its question is unanswered again."""
        exchange = self.exchange
        assert exchange is not None
        exchange.reply.heard_ms = heard_ms
        exchange.assistant = exchange.reply.heard()
        if exchange.item_id in self.items:  # as the client now holds it
            audio = exchange.reply.config.audio
            self.items[exchange.item_id] = assistant_item(exchange.item_id, exchange.assistant, audio, "completed")
        if exchange.assistant:
            self.turns[-1] = {"role": "assistant", "content": exchange.assistant}
            return
        del self.turns[-2 - len(exchange.after or []) :]
        self.exchange = None
        self.unanswered.insert(0, exchange.user)

    async def store_exchange(self) -> None:
        """Store the last exchange, if one waits (raises the store's FishvoiceError)."""
        exchange, self.exchange = self.exchange, None
        if exchange is None:
            return
        await self.store.append_exchange(
            self.namespace,
            self.id,
            exchange.messages(),
            system_message=exchange.reply.config.instructions,
            voice_hash=None,
        )
        self.stored = len(self.turns)


def _turn_of(item: dict[str, Any]) -> ChatMessage:
    """The turn a message or function output item is in the conversation."""
    if item["type"] == "function_call_output":
        return {"role": "tool", "content": item["output"], "tool_call_id": item["call_id"]}
    part = item["content"][0] if item.get("content") else {}
    return {"role": item["role"], "content": str(part.get("text") or part.get("transcript") or "")}
