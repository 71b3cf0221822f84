"""The conversation-store protocol: history, latest system message and voice per conversation."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Protocol

from ..contract import ChatMessage
from ..voices import VoiceReference


@dataclass
class Conversation:
    """What a conversation remembers. `turns` alternate user and assistant, oldest first."""

    system_message: str | None = None
    voice_hash: str | None = None
    turns: list[ChatMessage] = field(default_factory=list)


@dataclass(frozen=True)
class VoiceDetails:
    """What Fish's voice routes (`/model`) keep of a saved voice beside its audio: the voice's title,
    description, tags and visibility as its owner gave them, and the text of each of its samples (the
    samples' audio is the voice's, joined)."""

    title: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    visibility: str = "private"
    samples: tuple[str | None, ...] = ()

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> VoiceDetails:
        """The details stored as `to_json` wrote them; the defaults for a voice saved before they were kept."""
        if not text:
            return cls()
        given = json.loads(text)
        return cls(
            given["title"], given["description"], tuple(given["tags"]), given["visibility"], tuple(given["samples"])
        )


@dataclass(frozen=True)
class SavedVoice:
    """A voice saved under a name (`/v1/references/add`, `POST /model`), as its list shows it; times are
    Unix seconds (0 for a voice saved before they were kept)."""

    id: str
    reference_text: str | None
    hash: str
    details: VoiceDetails = field(default_factory=VoiceDetails)
    created_at: float = 0.0
    updated_at: float = 0.0


class ConversationStore(Protocol):
    """Conversations are keyed by (namespace, conversation_id); a namespace keeps API keys apart.

    A turn is written only once its reply completed, in one atomic append, so a failed request
    leaves the history unchanged and two racing requests both land.
    """

    async def load(self, namespace: str, conversation_id: str) -> Conversation:
        """The conversation, or an empty one if it is new or expired."""
        ...

    async def append_exchange(
        self,
        namespace: str,
        conversation_id: str,
        messages: list[ChatMessage],
        *,
        system_message: str | None,
        voice_hash: str | None,
    ) -> list[ChatMessage]:
        """Append one exchange: a user message and what answered it (the reply, or the assistant's function
        calls, their results and the reply); keep system message and voice if None. Return the whole history."""
        ...

    async def delete_turn(self, namespace: str, conversation_id: str, turn: ChatMessage) -> bool:
        """Delete the newest stored turn equal to `turn` (a client deleted it); False where none is."""
        ...

    async def put_voice(self, voice: VoiceReference) -> None: ...

    async def get_voice(self, voice_hash: str) -> VoiceReference | None: ...

    async def purge_expired(self) -> int:
        """Forget conversations idle longer than the TTL; return how many."""
        ...

    async def close(self) -> None: ...

    # Saved voices: named per namespace (another key cannot see, use or delete them).
    async def add_saved_voice(
        self, namespace: str, voice_id: str, voice: VoiceReference, details: VoiceDetails | None = None
    ) -> bool:
        """Save `voice` as `voice_id`; False (nothing changed) when the namespace has that id already."""
        ...

    async def saved_voice(self, namespace: str, voice_id: str) -> VoiceReference | None: ...

    async def list_saved_voices(self, namespace: str) -> list[SavedVoice]: ...

    async def update_saved_voice(self, namespace: str, voice_id: str, details: VoiceDetails) -> bool:
        """Replace the voice's details (its audio kept) and its update time; False when `voice_id` is unknown."""
        ...

    async def rename_saved_voice(self, namespace: str, voice_id: str, new_id: str) -> bool:
        """False when `voice_id` is unknown or `new_id` is taken."""
        ...

    async def delete_saved_voice(self, namespace: str, voice_id: str) -> bool: ...

    # A cloning backend's encoding of a voice (its prompt codes), by a key the backend makes (its codec and
    # the voice's hash): every worker sharing the store encodes a voice once. Kept while in use, like voices.
    async def put_voice_codes(self, key: str, data: bytes) -> None: ...

    async def voice_codes(self, key: str) -> bytes | None: ...
