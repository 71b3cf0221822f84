"""Short-lived keys for browsers, as OpenAI offers them: `POST /v1/realtime/client_secrets` with a real key mints
one (`ek_...`, a lifetime, optional session settings); `/v1/realtime` takes it, as it takes a key, until it
expires, on any server that has the key it was minted with.

A client secret carries what it grants (the minting key's namespace, its expiry, the session's settings),
signed with HMAC-SHA256 under a key derived from the minting key: any server of a fleet verifies it without a
store, and a leaked secret does not reveal the key. It cannot be revoked; keep lifetimes short.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from ...errors import FishvoiceError
from ...validation import best_error, field_error
from ..http.auth import Auth, key_namespace, secret_signer
from ..http.body import parse_json, read_body
from ..http.openapi import json_body
from .client_events import Session, updated
from .protocol import SessionConfig

PREFIX = "ek_"
MAX_SESSION_BYTES = 4096  # of the settings a secret carries: it travels in a WebSocket's handshake


class ExpiresAfter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    anchor: Literal["created_at"] = "created_at"
    seconds: Annotated[StrictInt, Field(ge=10, le=7200)] = 600


class SecretRequest(BaseModel):
    """`POST /v1/realtime/client_secrets`'s body: how long the secret lives, and the session it opens."""

    model_config = ConfigDict(extra="forbid")
    expires_after: ExpiresAfter = Field(default_factory=ExpiresAfter)
    session: Session | None = None


def mint(key: str | None, request: SecretRequest, now: float | None = None) -> dict[str, Any]:
    """A client secret for the holder of `key`, as OpenAI's API answers it."""
    settings = request.session.model_dump(exclude_unset=True, mode="json") if request.session else None
    if len(json.dumps(settings)) > MAX_SESSION_BYTES:
        why = f"session: at most {MAX_SESSION_BYTES} bytes of settings fit a client secret"
        raise FishvoiceError("invalid_input", why, "session")
    expires_at = int(now or time.time()) + request.expires_after.seconds
    grant = {"ns": key_namespace(key) if key else "", "exp": expires_at, "session": settings}
    payload = _b64(json.dumps(grant, separators=(",", ":")).encode())
    value = f"{PREFIX}{payload}.{_b64(hmac.digest(secret_signer(key), payload.encode(), 'sha256'))}"
    config = updated(SessionConfig(), request.session) if request.session else SessionConfig()
    return {"value": value, "expires_at": expires_at, "session": config.to_dict("")}


def redeem(secret: str, signers: list[bytes], now: float | None = None) -> tuple[str, Session | None]:
    """The namespace and session settings a client secret grants; unauthorized if it is not one of ours or
    has expired."""
    payload, _, signature = secret.removeprefix(PREFIX).partition(".")
    try:
        given = base64.urlsafe_b64decode(signature + "==")
    except (binascii.Error, ValueError):
        given = b""
    # Checked against every signer, always: the time taken tells nothing about which one matched.
    matches = [hmac.compare_digest(given, hmac.digest(s, payload.encode(), "sha256")) for s in signers]
    if not any(matches):
        raise FishvoiceError("unauthorized", "the client secret is not valid here")
    grant = json.loads(base64.urlsafe_b64decode(payload + "=="))
    if grant["exp"] <= (now or time.time()):
        raise FishvoiceError("unauthorized", "the client secret has expired; mint a new one")
    return grant["ns"], Session.model_validate(grant["session"]) if grant["session"] else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def build_client_secrets_router(auth: Auth, max_body_bytes: int) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/realtime/client_secrets", openapi_extra=json_body(SecretRequest))
    async def create(request: Request, namespace: str = Depends(auth)) -> JSONResponse:
        body = parse_json(await read_body(request, max_body_bytes, "body"))
        try:
            asked = SecretRequest.model_validate(body if body is not None else {})
        except ValidationError as exc:
            error = best_error(exc.errors())
            raise field_error(error, SecretRequest, whole="body", unknown="unknown parameter", brackets=True) from None
        return JSONResponse(mint(auth.key_of(request) if auth.enabled else None, asked))

    return router
