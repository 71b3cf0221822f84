"""What the routes answer with beside JSON: a streaming response that closes its streams however it ends,
server-sent events, and the header that carries warnings.

Starlette iterates a StreamingResponse's body with a bare `async for`: a client gone mid-way (a send that
fails, or the disconnect listener cancelling it) leaves the body's generator open until garbage collection,
and with it the voice or the reply it streams and the slot they hold. This one owns its body, and whatever
the route began before it (a first piece fetched so that a failure still answers with a status), and
closes them when the response ends.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ...audio import Audio, StreamEncoder
from ...pipeline import Spoken, Words
from ...threads import run_in_thread

log = logging.getLogger(__name__)

# What a request asked for and did not get as asked (a field ignored, a voice that cannot clone).
WARNING_HEADER = "X-Fishvoice-Warning"


def sse_event(event: dict[str, Any]) -> bytes:
    """One server-sent event carrying `event` as compact JSON."""
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


class OwnedStreamingResponse(StreamingResponse):
    """A StreamingResponse over `content` that closes it, and each of `owns`, once it is done."""

    def __init__(
        self,
        content: AsyncGenerator[Any, None],
        *,
        owns: Sequence[AsyncGenerator[Any, None]] = (),
        **options: Any,
    ):
        super().__init__(content, **options)
        self._owned = [content, *owns]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            for stream in self._owned:  # the body first: it closes what it began itself
                await stream.aclose()


P = TypeVar("P")


async def first_piece(pieces: AsyncGenerator[P, None]) -> P | None:
    """The speech's first piece (None: nothing to speak), awaited before the answer begins so that a voice
    failing to start is still an error status; the pieces are closed if it fails."""
    try:
        return await anext(pieces)
    except StopAsyncIteration:
        return None
    except BaseException:
        await pieces.aclose()
        raise


@dataclass(frozen=True)
class Encoded:
    """Encoded bytes of the speech, with the piece they encode (None: the encoder's last bytes)."""

    data: bytes
    piece: Spoken | None


async def encoded_audio(
    first: Audio | None,
    pieces: AsyncGenerator[Audio, None],
    encoder: StreamEncoder,
    adjust: Callable[[Audio], Audio] = lambda audio: audio,
) -> AsyncGenerator[bytes, None]:
    """The file's bytes as each piece is spoken (see encoded_speech)."""
    async with aclosing(audio_bytes(encoded_speech(first, pieces, encoder, adjust))) as data:
        async for part in data:
            yield part


async def audio_bytes(encoded: AsyncGenerator[Encoded | Words, None]) -> AsyncGenerator[bytes, None]:
    """The file's bytes alone, words' timings left aside."""
    async with aclosing(encoded):
        async for item in encoded:
            if isinstance(item, Encoded) and item.data:
                yield item.data


async def encoded_speech(
    first: Audio | Spoken | Words | None,
    pieces: AsyncGenerator[Audio, None] | AsyncGenerator[Spoken | Words, None],
    encoder: StreamEncoder,
    adjust: Callable[[Audio], Audio] = lambda audio: audio,
) -> AsyncGenerator[Encoded | Words, None]:
    """Each piece's bytes as it is spoken (each `adjust`ed first), words' timings passed on as they come,
    the encoder's last bytes at the end; the pieces, and the work limit they hold, are closed however this
    ends, a client gone included. A failure past the first piece cannot change the status any more: it is
    logged and raised, so the connection is cut and the client sees an incomplete body rather than a short
    file that looks whole."""
    try:
        async with aclosing(pieces):
            if first is not None:
                yield await _encoded(first, encoder, adjust)
            async for piece in pieces:
                yield await _encoded(piece, encoder, adjust)
        yield Encoded(await run_in_thread(encoder.finish), None)
    except Exception as exc:
        log.warning("speech failed after its answer began: %r", exc)
        raise
    finally:
        encoder.close()  # an unfinished file is dropped; its bytes have nowhere to go


async def _encoded(
    piece: Audio | Spoken | Words, encoder: StreamEncoder, adjust: Callable[[Audio], Audio]
) -> Encoded | Words:
    if isinstance(piece, Words):
        return piece
    audio = piece.audio if isinstance(piece, Spoken) else piece
    data = await run_in_thread(encoder.encode, adjust(audio))
    return Encoded(data, piece if isinstance(piece, Spoken) else None)
