"""Reading a request's body: bounded before it is read whole, then JSON or a form."""

from __future__ import annotations

import json
from contextlib import aclosing
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.types import Message

from ...errors import FishvoiceError
from .fields import invalid

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
# A form's field as given, in order: (name, text or an uploaded file's bytes).
FormItems = list[tuple[str, str | bytes]]
# A form's fields by name, each with every value it was given (a list field repeats its name).
FormFields = dict[str, list[str | bytes]]


def media_type(request: Request) -> str:
    """The body's media type, without its parameters."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, max_bytes: int, field: str) -> bytes:
    """The request's body, refused (naming `field`) once it is over the limit, before it is read whole."""
    declared = request.headers.get("content-length")
    too_large = FishvoiceError("payload_too_large", f"request body is larger than {max_bytes / 2**20:g} MB", field)
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    async with aclosing(request.stream()) as chunks:
        async for chunk in chunks:
            body += chunk
            if len(body) > max_bytes:
                raise too_large
    return bytes(body)


def parse_json(body: bytes) -> Any:
    """The body as JSON; invalid_input naming `body` when it is not."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FishvoiceError("invalid_input", f"body: not valid JSON ({exc})", "body") from None


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request's JSON body, refusing bodies over the limit before reading them whole."""
    return parse_json(await read_body(request, max_bytes, "body"))


async def form_items(request: Request, body: bytes, max_files: int) -> FormItems:
    """The fields of a form body already read (multipart or urlencoded), uploaded files as bytes."""

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    items: FormItems = []
    try:
        form = await Request(request.scope, replay).form(max_files=max_files, max_fields=32)
        for name, value in form.multi_items():
            items.append((name, await value.read() if isinstance(value, UploadFile) else value))
        await form.close()
    except (MultiPartException, HTTPException, ValueError) as exc:
        detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
        raise invalid("body", f"not a readable form ({detail})") from None
    return items


async def form_fields(request: Request, body: bytes, max_files: int) -> FormFields:
    """The fields of a form body already read, each name with all its values in order."""
    fields: FormFields = {}
    for name, value in await form_items(request, body, max_files):
        fields.setdefault(name, []).append(value)
    return fields


def form_text(fields: FormFields, name: str) -> str | None:
    """A field given once as text; None where it is missing or empty (its default)."""
    values = fields.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise invalid(name, "given more than once")
    if not isinstance(values[0], str):
        raise invalid(name, "must be text, not a file")
    return values[0] or None
