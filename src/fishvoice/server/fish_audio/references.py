"""Fish Speech's saved-voice routes: /v1/references/add, list, update (rename) and delete.

Field names and success bodies are Fish's (`{"success", "message", "reference_id"}` and so on); errors
take the `/v1/*` routes' OpenAI shape. A voice is saved under the caller's key: another key can
neither see, use, rename nor delete it. Its audio passes the same checks as a job's `system_audio`.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ...contract import CONVERSATION_ID, CONVERSATION_ID_RULE, MAX_REFERENCE_TEXT_CHARS, is_conversation_id
from ...errors import FishvoiceError
from ...speech_service import SpeechService
from ...threads import run_in_thread
from ...tts.base import prepare_voice
from ...voices import reference_from_bytes
from ..http.auth import Auth
from ..http.body import FORM_TYPES, form_items, media_type, read_body
from ..http.fields import invalid
from ..http.openapi import form_body

log = logging.getLogger(__name__)

# A form's field: text, or an uploaded file's bytes.
Fields = dict[str, str | bytes]


async def read_fields(request: Request, max_bytes: int) -> Fields:
    """The request's fields from a multipart or urlencoded form, or a JSON object; query parameters
    count where the body lacks them (a DELETE's body is often dropped on the way)."""
    body = await read_body(request, max_bytes, "body")
    fields: Fields = dict(request.query_params)
    if media_type(request) in FORM_TYPES:
        fields.update(await form_items(request, body, max_files=4))
    elif body.strip():
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise invalid("body", "send a multipart form, a urlencoded form or a JSON object") from None
        if not isinstance(payload, dict):
            raise invalid("body", "a JSON body must be an object")
        for name, value in payload.items():
            if not isinstance(value, str):
                raise invalid(name, "must be a string")
            fields[name] = value
    return fields


def text_field(fields: Fields, name: str) -> str:
    """A required text field."""
    value = fields.get(name)
    if value is None:
        raise invalid(name, "required")
    if not isinstance(value, str):
        raise invalid(name, "must be text, not a file")
    return value


def voice_id(fields: Fields, name: str) -> str:
    """A saved voice's id: the rule of conversation_id."""
    value = text_field(fields, name)
    if not is_conversation_id(value):
        raise invalid(name, CONVERSATION_ID_RULE)
    return value


def reference_text(fields: Fields) -> str | None:
    if "text" not in fields:
        return None
    value = text_field(fields, "text")
    if len(value) > MAX_REFERENCE_TEXT_CHARS:
        raise FishvoiceError(
            "invalid_input", f"text: must be at most {MAX_REFERENCE_TEXT_CHARS} characters (got {len(value)})", "text"
        )
    return value.strip() or None


def audio_file(fields: Fields) -> bytes:
    value = fields.get("audio")
    if value is None:
        raise FishvoiceError("invalid_audio", "audio: required (an audio file in a multipart form)", "audio")
    if isinstance(value, str):
        raise FishvoiceError("invalid_audio", "audio: must be a file (multipart form), not text", "audio")
    return value


_ID = {"type": "string", "pattern": CONVERSATION_ID.pattern}
_ADD: dict[str, dict[str, Any]] = {
    "id": _ID,
    "audio": {"type": "string", "format": "binary", "description": "the voice's recording"},
    "text": {"type": "string", "maxLength": MAX_REFERENCE_TEXT_CHARS, "description": "what the recording says"},
}
_RENAME = {"old_reference_id": _ID, "new_reference_id": _ID}
_DELETE = {"reference_id": _ID}


def build_references_router(speech: SpeechService, auth: Auth, max_body_bytes: int) -> APIRouter:
    router = APIRouter(prefix="/v1/references")
    caller = Depends(auth)
    store = speech.store

    @router.post("/add", openapi_extra=form_body(_ADD, required=["id", "audio"]))
    async def add(request: Request, namespace: str = caller) -> JSONResponse:
        fields = await read_fields(request, max_body_bytes)
        name = voice_id(fields, "id")
        text = reference_text(fields)
        voice = await run_in_thread(reference_from_bytes, audio_file(fields), text, "audio")
        if not await store.add_saved_voice(namespace, name, voice):
            raise FishvoiceError("conflict", f"id: a saved voice {name!r} exists already", "id")
        try:  # encode it now, so its first use need not (and every worker sharing the store finds the codes)
            await prepare_voice(speech.tts, voice)
        except FishvoiceError as exc:
            log.warning("saved voice %r not encoded yet: %s", name, exc.message)
        return JSONResponse({"success": True, "message": f"saved voice {name!r} added", "reference_id": name})

    @router.get("/list")
    async def list_voices(namespace: str = caller) -> JSONResponse:
        voices = await store.list_saved_voices(namespace)
        body: dict[str, Any] = {
            "success": True,
            "reference_ids": [voice.id for voice in voices],
            "message": f"{len(voices)} saved voice(s)",
        }
        return JSONResponse(body)

    @router.post("/update", openapi_extra=form_body(_RENAME, required=list(_RENAME)))
    async def rename(request: Request, namespace: str = caller) -> JSONResponse:
        fields = await read_fields(request, max_body_bytes)
        old, new = voice_id(fields, "old_reference_id"), voice_id(fields, "new_reference_id")
        if old == new:
            raise invalid("new_reference_id", "the same as old_reference_id")
        if not await store.rename_saved_voice(namespace, old, new):
            if not any(voice.id == old for voice in await store.list_saved_voices(namespace)):
                raise FishvoiceError("not_found", f"old_reference_id: no saved voice {old!r}", "old_reference_id")
            raise FishvoiceError(
                "conflict", f"new_reference_id: a saved voice {new!r} exists already", "new_reference_id"
            )
        return JSONResponse(
            {
                "success": True,
                "message": f"saved voice {old!r} renamed to {new!r}",
                "old_reference_id": old,
                "new_reference_id": new,
            }
        )

    @router.delete("/delete", openapi_extra=form_body(_DELETE, required=list(_DELETE)))
    async def delete(request: Request, namespace: str = caller) -> JSONResponse:
        name = voice_id(await read_fields(request, max_body_bytes), "reference_id")
        if not await store.delete_saved_voice(namespace, name):
            raise FishvoiceError("not_found", f"reference_id: no saved voice {name!r}", "reference_id")
        return JSONResponse({"success": True, "message": f"saved voice {name!r} deleted", "reference_id": name})

    return router
