"""Conversation stores: the protocol and SQLite (one machine). Redis comes for many workers."""

from .base import Conversation, ConversationStore

__all__ = ["Conversation", "ConversationStore"]
