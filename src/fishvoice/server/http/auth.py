"""Bearer keys: which caller a request comes from. Each key's jobs, conversations and saved voices live
in a namespace of their own."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request, WebSocket
from starlette.requests import HTTPConnection

from ...errors import FishvoiceError

_KEY_PROTOCOL = "openai-insecure-api-key."  # how a browser, which cannot set headers, offers a key
_SIGNED = b"fishvoice realtime client secret\x00"


def secret_signer(key: str | None) -> bytes:
    """The HMAC key of the client secrets minted with `key` (None: a server without keys): derived, so a secret
    tells nothing of the key."""
    return hashlib.sha256(_SIGNED + (key or "").encode()).digest()


def key_namespace(key: str) -> str:
    """Conversations and jobs of one key live apart from every other key's."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:24]


class Auth:
    """Bearer-key check; returns the caller's namespace ("" when auth is off)."""

    def __init__(self, keys: list[str]):
        self._keys = [key.encode() for key in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def __call__(self, request: Request) -> str:
        return self.namespace(self.key_of(request))

    @staticmethod
    def key_of(request: HTTPConnection) -> str | None:
        """The bearer key a request gives (checked by `namespace`), or None."""
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return given.strip() if scheme.lower() == "bearer" else None

    def secret_signers(self) -> list[bytes]:
        """What client secrets minted here, with any of its keys, are signed with."""
        return [secret_signer(key.decode()) for key in self._keys] or [secret_signer(None)]

    def namespace(self, key: str | None) -> str:
        """The namespace of a key the caller gave (None: none given); unauthorized unless it is one of ours."""
        if not self._keys:
            return ""
        given = (key or "").strip().encode()
        # Compare against every key, always: the time taken tells nothing about which one matched.
        matches = [hmac.compare_digest(given, known) for known in self._keys]
        if key is None or not any(matches):
            raise FishvoiceError("unauthorized", "a valid 'Authorization: Bearer <key>' header is needed")
        return key_namespace(given.decode())


def socket_key(socket: WebSocket) -> str | None:
    """The key a WebSocket client gave: a bearer header, `?api_key=`, or a browser's key subprotocol."""
    scheme, _, given = socket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and given.strip():
        return given.strip()
    if key := socket.query_params.get("api_key"):
        return key
    for protocol in socket.scope.get("subprotocols", []):
        if protocol.startswith(_KEY_PROTOCOL):
            return str(protocol[len(_KEY_PROTOCOL) :])
    return None
