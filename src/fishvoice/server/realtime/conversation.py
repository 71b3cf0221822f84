"""What a session keeps and stores: the turns so far, what the user said that is not answered yet, and
the last exchange, stored once the next reply starts or the session ends, so a truncation of its reply
still counts."""

from __future__ import annotations

from dataclasses import dataclass

from ...contract import ChatMessage
from ...memory.base import ConversationStore
from .reply import Reply


@dataclass
class Exchange:
    """The last answered turn, not yet stored: a truncation can still cut it."""

    item_id: str
    user: str
    reply: Reply
    assistant: str


class Conversation:
    def __init__(self, store: ConversationStore, namespace: str, conversation_id: str):
        self.store = store
        self.namespace = namespace
        self.id = conversation_id
        self.turns: list[ChatMessage] = []
        self.unanswered: list[str] = []  # user turns heard but not yet answered
        self.last_item: str | None = None  # the id of the conversation's last item
        self.exchange: Exchange | None = None

    async def load(self) -> str | None:
        """The stored turns; returns the stored system message."""
        stored = await self.store.load(self.namespace, self.id)
        self.turns = list(stored.turns)
        return stored.system_message

    def remember(self, reply: Reply, heard: str) -> None:
        """The exchange joins the conversation; a reply nobody heard leaves its question to the next turn."""
        if not heard:
            self.unanswered.insert(0, reply.message)
            return
        self.turns += [{"role": "user", "content": reply.message}, {"role": "assistant", "content": heard}]
        self.exchange = Exchange(reply.summary.item_id, reply.message, reply, heard)

    def cut(self, heard_ms: int) -> None:
        """The last exchange as far as its reply was heard; heard not at all, its question is unanswered again."""
        exchange = self.exchange
        assert exchange is not None
        exchange.reply.heard_ms = heard_ms
        exchange.assistant = exchange.reply.heard()
        if exchange.assistant:
            self.turns[-1] = {"role": "assistant", "content": exchange.assistant}
            return
        del self.turns[-2:]
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
            exchange.user,
            exchange.assistant,
            system_message=exchange.reply.config.instructions,
            voice_hash=None,
        )
