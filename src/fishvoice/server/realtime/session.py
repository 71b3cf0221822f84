"""A live voice conversation over a WebSocket: `GET /v1/realtime`, speaking OpenAI's Realtime API.

The caller streams pcm16 at 24 kHz. With server VAD each turn is cut where the speech stops, heard by the
ASR and answered by the assistant, whose reply streams back as text and pcm16 deltas as soon as its first
piece is spoken; with `turn_detection: null` the client commits and asks. A turn's reply is begun where
the speech pauses and held back until the silence confirms it (turns.py). Speech that starts during a
reply cancels it at once (barge-in): no audio is sent after the cancel, and the conversation keeps only
what was heard (the client's `conversation.item.truncate`, else what was sent).

A session has a conversation id (`?conversation_id=`, else a new one) in the assistant's store, so a
conversation moves between sessions and jobs (conversation.py). The session is in parts: the socket
(connection.py), the input audio (input_audio.py), turn taking (turns.py), the replies (responses.py and
reply.py), the events' shapes (protocol.py); this module answers the client's events with them.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from ...asr.base import ASR
from ...assistant import Assistant
from ...contract import is_conversation_id
from ...errors import FishvoiceError
from ...speech_service import SpeechService, saved_voice_id
from ..http.fields import invalid
from .client_events import (
    AudioAppend,
    AudioClear,
    AudioCommit,
    FunctionOutput,
    ItemCreate,
    ItemDelete,
    ItemRetrieve,
    ItemTruncate,
    ResponseCancel,
    ResponseCreate,
    Session,
    SessionUpdate,
    for_response,
    out_of_band,
    updated,
    user_text,
)
from .connection import Connection, Handler
from .conversation import Conversation
from .input_audio import PER_MS, InputDecoder
from .protocol import SessionConfig, function_output_item, new_id, user_item
from .responses import Responder
from .turns import TurnTaking

log = logging.getLogger(__name__)

MIN_COMMIT_MS = 100


class RealtimeSession:
    """One WebSocket's conversation: the client's events answered, turns heard, replies streamed."""

    def __init__(
        self,
        connection: Connection,
        assistant: Assistant,
        asr: ASR | None,
        speech: SpeechService,
        conversation: Conversation,
    ) -> None:
        self.connection = connection
        self.assistant = assistant
        self.config = SessionConfig()
        self.conversation = conversation
        self.replies = Responder(connection, assistant, speech.work, conversation)
        self.turns = TurnTaking(connection, asr, speech.work, conversation, self.replies, lambda: self.config)
        self.input = InputDecoder(self.config.input_format)

    @property
    def session_id(self) -> str:
        return self.connection.session_id

    async def run(self, settings: Session | None = None) -> None:
        """Serve the client until it leaves; then the reply stops, and the last exchange is stored. `settings`:
        those its client secret carries."""
        if system := await self.conversation.load():
            self.config = replace(self.config, instructions=system)
        if settings is not None:
            self.config = updated(self.config, settings)
            self.input = InputDecoder(self.config.input_format)
        self.turns.reset()
        await self.connection.send({"type": "session.created", "session": self.config.to_dict(self.session_id)})
        created = {"id": self.conversation.id, "object": "realtime.conversation"}
        await self.connection.send({"type": "conversation.created", "conversation": created})
        try:
            while (text := await self.connection.receive(self.turns.busy)) is not None:
                await self.connection.dispatch(text, self.handlers())
        finally:
            self.turns.closed = True
            await self.replies.cancel("client_disconnected", wait=True)
            await self.turns.close()
            await self.replies.store_exchange()

    def handlers(self) -> dict[str, Handler]:
        return {
            "session.update": self._update_session,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit_buffer,
            "input_audio_buffer.clear": self._clear_buffer,
            "conversation.item.create": self._create_item,
            "response.create": self._create_response,
            "response.cancel": self._cancel_response,
            "conversation.item.truncate": self._truncate,
            "conversation.item.retrieve": self._retrieve,
            "conversation.item.delete": self._delete,
        }

    async def _retrieve(self, event: ItemRetrieve) -> None:
        item = self.conversation.item(event.item_id)
        await self.connection.send({"type": "conversation.item.retrieved", "item": item})

    async def _delete(self, event: ItemDelete) -> None:
        current = self.replies.current
        if current is not None and current.summary.item_id == event.item_id:
            raise invalid("item_id", "the reply is in progress: cancel it first")
        await self.conversation.delete(event.item_id)
        await self.connection.send({"type": "conversation.item.deleted", "item_id": event.item_id})

    async def _update_session(self, event: SessionUpdate) -> None:
        config = updated(self.config, event.session)
        if config.voice != self.config.voice:
            await self._check_voice(config.voice, "session.audio.output.voice")
        vad_changed = config.turns != self.config.turns
        if config.input_format != self.config.input_format:
            self.input = InputDecoder(config.input_format)
        self.config = config
        if vad_changed:
            self.turns.reset()
        await self.connection.send({"type": "session.updated", "session": self.config.to_dict(self.session_id)})

    async def _check_voice(self, voice: str, path: str) -> None:
        namespace = self.conversation.namespace
        if saved_voice_id(voice) and await self.assistant.store.saved_voice(namespace, voice) is None:
            raise FishvoiceError("not_found", f"{path}: no saved voice {voice[:60]!r}", path)

    async def _append(self, event: AudioAppend) -> None:
        await self.turns.append(self.input.decode(event.audio, "audio"))

    async def _commit_buffer(self, event: AudioCommit) -> None:
        buffer = self.turns.input
        if buffer.size < MIN_COMMIT_MS * PER_MS:
            raise FishvoiceError(
                "invalid_audio",
                f"input_audio_buffer: holds {buffer.size // PER_MS} ms of audio; commit at least {MIN_COMMIT_MS} ms",
                "input_audio_buffer",
            )
        item_id = self.turns.speech_item or new_id("item")
        self.turns.speech_item = None
        self.turns.reset()
        await self.turns.commit(buffer.take_all(), item_id, respond=False)

    async def _clear_buffer(self, event: AudioClear) -> None:
        self.turns.input.clear()
        self.turns.speech_item = None
        self.turns.reset()
        await self.connection.send({"type": "input_audio_buffer.cleared"})

    async def _create_item(self, event: ItemCreate) -> None:
        given = event.item
        item_id = given.id if is_conversation_id(given.id) else new_id("item")
        if isinstance(given, FunctionOutput):
            self.conversation.add_result(given.call_id, given.output)
            item = self.conversation.keep(function_output_item(item_id, given.call_id, given.output))
        else:
            self.conversation.unanswered.append(user_text(given))
            item = self.conversation.keep(user_item(item_id, text=user_text(given)))
        added = {"previous_item_id": self.conversation.last_item, "item": item}
        self.conversation.last_item = item_id
        await self.connection.send({"type": "conversation.item.added", **added})
        await self.connection.send({"type": "conversation.item.done", **added})

    async def _create_response(self, event: ResponseCreate) -> None:
        if self.config.kind == "transcription":
            raise invalid("response.create", "a transcription session hears turns and answers none")
        if (guessed := self.replies.undecided) is not None:
            self.replies.discard(guessed)
        if self.replies.current is not None:
            raise FishvoiceError("conflict", "response.create: a response is already in progress", "response")
        config, asked = for_response(self.config, event.response), out_of_band(event.response)
        if config.voice != self.config.voice:
            await self._check_voice(config.voice, "response.audio.output.voice")
        await self.turns.hearing_done()  # the committed turn is heard before it is answered
        answerable = self.conversation.unanswered or self.conversation.open_exchange() is not None
        if not answerable and not (asked and asked.message):
            raise invalid("response.create", "there is nothing to answer: commit speech or add a user message first")
        await self.replies.start(config, out_of_band=asked)

    async def _cancel_response(self, event: ResponseCancel) -> None:
        if self.replies.current is None or self.replies.undecided:  # a guessed reply is not the client's to cancel
            raise invalid("response.cancel", "no response is in progress")
        await self.replies.cancel("client_cancelled")

    async def _truncate(self, event: ItemTruncate) -> None:
        item_id, audio_end_ms = event.item_id, event.audio_end_ms
        await self.replies.truncate(item_id, audio_end_ms)
        truncated = {"item_id": item_id, "content_index": 0, "audio_end_ms": audio_end_ms}
        await self.connection.send({"type": "conversation.item.truncated", **truncated})
