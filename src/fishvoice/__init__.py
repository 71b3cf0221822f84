"""fishvoice: a voice-assistant worker. A message in; the reply's text, its speech and the history out.

The public surface is what this module names: the HTTP `Client`, the contract's types (the request,
the response and its events) and `FishvoiceError`. Every other module is internal and may change.
Names load on first use, so `import fishvoice.fish` (the engine, on a GPU machine) needs only torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .client import Client, ClientError
    from .contract import (
        AudioEvent,
        ChatMessage,
        DoneEvent,
        ErrorEvent,
        Event,
        Reply,
        ReplyRequest,
        TextEvent,
        Timings,
        Usage,
        VoiceInfo,
        parse_request,
    )
    from .errors import ErrorCode, FishvoiceError

_PUBLIC = {
    "Client": "client",
    "ClientError": "client",
    "AudioEvent": "contract",
    "ChatMessage": "contract",
    "DoneEvent": "contract",
    "ErrorEvent": "contract",
    "Event": "contract",
    "ReplyRequest": "contract",
    "Reply": "contract",
    "TextEvent": "contract",
    "Timings": "contract",
    "Usage": "contract",
    "VoiceInfo": "contract",
    "parse_request": "contract",
    "ErrorCode": "errors",
    "FishvoiceError": "errors",
}
__all__ = [
    "AudioEvent",
    "ChatMessage",
    "Client",
    "ClientError",
    "DoneEvent",
    "ErrorCode",
    "ErrorEvent",
    "Event",
    "FishvoiceError",
    "Reply",
    "ReplyRequest",
    "TextEvent",
    "Timings",
    "Usage",
    "VoiceInfo",
    "__version__",
    "parse_request",
]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'fishvoice' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
