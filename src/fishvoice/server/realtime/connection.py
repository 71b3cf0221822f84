"""The session's WebSocket: JSON events in (each dispatched to its handler by type), events out one at a
time. Every error is an `error` event and the session goes on; only the idle time-out and a lost
connection end the receiving."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from fastapi import WebSocket
from starlette.websockets import WebSocketState

from ...errors import FishvoiceError, as_api_error
from ..http.fields import invalid
from .client_events import parse_event
from .protocol import error_event, new_id

log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[None]]  # takes the event's model (client_events.py)


@dataclass(frozen=True)
class RealtimeLimits:
    sessions: int  # open at once
    idle_s: float  # longest time with nothing from the client and nothing under way before the session closes
    max_message_bytes: int


class Connection:
    """One session's socket. `send` may be called from any of the session's tasks: events go out whole and
    in order, and a client already gone is not an error here."""

    def __init__(self, socket: WebSocket, session_id: str, limits: RealtimeLimits):
        self.socket = socket
        self.session_id = session_id
        self.limits = limits
        self._send_lock = asyncio.Lock()

    async def receive(self, busy: Callable[[], bool]) -> str | None:
        """The next text message; None once the client left, or stayed silent too long while nothing was
        `busy` (said, and the socket closed)."""
        while True:
            try:
                message = await asyncio.wait_for(self.socket.receive(), self.limits.idle_s)
            except TimeoutError:
                if busy():
                    continue  # a reply or a transcription is under way: the session is not idle
                error = FishvoiceError("timeout", f"the session was idle for {self.limits.idle_s:g} s and is closed")
                await self.send(error_event(error))
                await self.close(1000, "idle")
                return None
            if message["type"] == "websocket.disconnect":
                return None
            text = message.get("text")
            if text is None:
                await self.send_error(invalid("message", "send JSON events as text messages, not binary"))
            elif len(text.encode()) > self.limits.max_message_bytes:
                limit = self.limits.max_message_bytes / 2**20
                await self.send_error(
                    FishvoiceError("payload_too_large", f"message: larger than {limit:g} MB", "message")
                )
            else:
                return str(text)

    async def send(self, event: dict[str, Any]) -> None:
        event = {"event_id": new_id("event"), **event}
        async with self._send_lock:
            if self.socket.application_state != WebSocketState.CONNECTED:
                return
            with suppress(Exception):
                await self.socket.send_text(json.dumps(event, separators=(",", ":")))

    async def send_error(self, error: FishvoiceError, client_event_id: str | None = None) -> None:
        log.info("realtime %s: %s (%s)", self.session_id, error.message, error.code)
        await self.send(error_event(error, client_event_id))

    async def close(self, code: int, reason: str) -> None:
        if self.socket.application_state == WebSocketState.CONNECTED:
            with suppress(Exception):
                await self.socket.close(code, reason)

    async def dispatch(self, text: str, handlers: Mapping[str, Handler]) -> None:
        """Run the handler of the event's type with the event parsed; a bad event, or its handler's failure,
        is an `error` event naming the client's event."""
        event_id: str | None = None
        try:
            try:
                event = json.loads(text)
            except json.JSONDecodeError as exc:
                raise invalid("message", f"not valid JSON ({exc.msg})") from None
            if not isinstance(event, dict):
                raise invalid("message", "an event must be a JSON object")
            event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
            parsed = parse_event(event)
            await handlers[parsed.type](parsed)
        except FishvoiceError as error:
            await self.send_error(error, event_id)
        except Exception as exc:  # a fault of ours: said as `internal`, and the session goes on
            log.error("realtime %s: an event failed", self.session_id, exc_info=exc)
            await self.send_error(as_api_error(exc), event_id)
