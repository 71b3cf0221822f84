"""What Fish's clients send: MessagePack (the SDK's, and fish-speech's own client's), else JSON.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

from typing import Any

import msgpack

from ...errors import FishvoiceError
from ..http.body import parse_json

MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")


def unpack(data: bytes, field: str) -> Any:
    """One MessagePack value; broken input is an invalid_input naming `field`."""
    try:
        return msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises several types (and ValueError) for broken input
        raise FishvoiceError("invalid_input", f"{field}: not valid MessagePack ({type(exc).__name__})", field) from None


def decode_body(body: bytes, media: str) -> Any:
    """The request's fields: MessagePack when the media type says so, else JSON (whatever the type:
    `curl -d` sends form encoding by default)."""
    return unpack(body, "body") if media in MSGPACK_TYPES else parse_json(body)
