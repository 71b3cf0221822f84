"""`/v1/realtime`: the WebSocket accepted, its key and the session limit checked, then a session served."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from fastapi import APIRouter, WebSocket

from ...asr.base import ASR
from ...assistant import Assistant
from ...contract import CONVERSATION_ID_RULE, is_conversation_id
from ...errors import FishvoiceError
from ...process import release_free_memory
from ...speech_service import SpeechService
from ...threads import run_in_thread
from ..http.auth import Auth, socket_key
from ..http.fields import invalid
from .client_events import Session
from .client_secrets import PREFIX, build_client_secrets_router, redeem
from .connection import Connection, RealtimeLimits
from .conversation import Conversation
from .protocol import error_event, new_id
from .session import RealtimeSession

log = logging.getLogger(__name__)


@dataclass
class OpenSessions:
    """Realtime sessions open now: what the limit counts, and /health shows."""

    count: int = 0


def _refusal(
    socket: WebSocket, auth: Auth, limits: RealtimeLimits, open_sessions: OpenSessions
) -> tuple[FishvoiceError, int] | tuple[str, Session | None]:
    """Why the session cannot open (the error, and the close code), else the caller's namespace and the
    settings its client secret carries."""
    key, settings = socket_key(socket), None
    try:
        if key is not None and key.startswith(PREFIX):
            namespace, settings = redeem(key, auth.secret_signers())
        else:
            namespace = auth.namespace(key)
    except FishvoiceError as error:
        return error, 1008
    conversation_id = socket.query_params.get("conversation_id")
    if conversation_id is not None and not is_conversation_id(conversation_id):
        return invalid("conversation_id", CONVERSATION_ID_RULE), 1008
    if open_sessions.count >= limits.sessions:
        busy = f"all {limits.sessions} realtime sessions are in use; try again later"
        return FishvoiceError("backend_unavailable", busy), 1013
    return namespace, settings


def build_realtime_router(
    assistant: Assistant,
    asr: ASR | None,
    speech: SpeechService,
    auth: Auth,
    limits: RealtimeLimits,
    open_sessions: OpenSessions,
) -> APIRouter:
    router = APIRouter()
    router.include_router(build_client_secrets_router(auth, limits.max_message_bytes))

    @router.websocket("/v1/realtime")
    async def realtime(socket: WebSocket) -> None:
        offered = socket.scope.get("subprotocols", [])
        await socket.accept(subprotocol="realtime" if "realtime" in offered else None)
        refused = _refusal(socket, auth, limits, open_sessions)
        if isinstance(refused[0], FishvoiceError):
            error, code = refused
            await socket.send_text(json.dumps({"event_id": new_id("event"), **error_event(error)}))
            await socket.close(code, error.code)
            return
        namespace, settings = refused
        conversation = Conversation(
            assistant.store, namespace, socket.query_params.get("conversation_id") or new_id("conv")
        )
        connection = Connection(socket, new_id("sess"), limits)
        open_sessions.count += 1
        log.info("realtime %s: open (conversation %s)", connection.session_id, conversation.id)
        try:
            await RealtimeSession(connection, assistant, asr, speech, conversation).run(settings)
        except FishvoiceError as error:  # the store failed as the session began
            await connection.send_error(error)
        finally:
            open_sessions.count -= 1
            await connection.close(1000, "done")
            log.info("realtime %s: closed", connection.session_id)
            await run_in_thread(release_free_memory)  # what the session's replies freed, back to the system

    return router
