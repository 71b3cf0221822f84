"""Conversation stores: the protocol and SQLite (one machine). Redis comes for many workers.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from .base import Conversation, ConversationStore

__all__ = ["Conversation", "ConversationStore"]
