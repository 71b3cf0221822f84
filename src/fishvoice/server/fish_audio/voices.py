"""Fish Audio's voice routes under `/model`, as its SDK (`client.voices`) calls them: create (a multipart form
of `title`, the `voices` recordings, their `texts`, `description`, `tags`, `visibility`), list (paged,
filtered by title and tag), get, update (title, description, tags, visibility) and delete, each voice in
Fish's Voice shape.

They are the saved voices of `/v1/references/*`: one store and one id space per key, so a voice made either
way is used by `reference_id` everywhere. The server makes a voice's id, as Fish's does; its recordings pass
the checks of any voice and are joined into one. Fish's fields with no meaning here (cover images,
training mode, audio enhancement) are accepted and ignored; `visibility` is kept and reported, though every
voice is private to its key. Errors are OpenAI's shape, as on /v1/tts.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...contract import MAX_REFERENCE_TEXT_CHARS, is_conversation_id
from ...errors import FishvoiceError
from ...memory.base import SavedVoice, VoiceDetails
from ...speech_service import SpeechService
from ...threads import run_in_thread
from ...tts.base import prepare_voice
from ...validation import first_error
from ...voices import join_references, reference_from_bytes
from ..http.auth import Auth
from ..http.body import FORM_TYPES, FormFields, form_fields, form_text, media_type, read_body
from ..http.fields import invalid
from ..http.openapi import form_model
from .tts import MAX_REFERENCES

log = logging.getLogger(__name__)

Visibility = Literal["public", "unlist", "private"]
Tag = Annotated[str, Field(min_length=1, max_length=64)]
_FILES = ("voices", "cover_image")
_LISTS = ("texts", "tags")


class VoiceUpdateForm(BaseModel):
    """`PATCH /model/{id}`: what may change (a cover image is accepted and ignored)."""

    model_config = ConfigDict(extra="forbid")
    title: str | None = Field(None, min_length=1, max_length=256)
    description: str | None = Field(None, max_length=2000)
    visibility: Visibility | None = None
    tags: list[Tag] | None = Field(None, max_length=32)
    cover_image: bytes | None = Field(None, description="accepted; not kept")


class VoiceCreateForm(BaseModel):
    """`POST /model`'s multipart form."""

    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=256)
    voices: list[bytes] = Field(min_length=1, max_length=MAX_REFERENCES, description="the recordings, joined")
    texts: list[Annotated[str, Field(max_length=MAX_REFERENCE_TEXT_CHARS)]] = Field(
        [], description="what each recording says, in order"
    )
    description: str = Field("", max_length=2000)
    visibility: Visibility = "private"
    tags: list[Tag] = Field([], max_length=32)
    type: Literal["tts"] = "tts"
    train_mode: Literal["fast"] = "fast"
    enhance_audio_quality: bool = Field(True, description="accepted; the recordings are used as they are")
    cover_image: bytes | None = Field(None, description="accepted; not kept")


def _form(fields: FormFields) -> dict[str, Any]:
    """The form's fields as pydantic reads them: lists for the list fields, one value for the others."""
    given: dict[str, Any] = {}
    for name, values in fields.items():
        if name in _LISTS or name == "voices":
            given[name] = values
        elif name in _FILES:
            given[name] = values[0] if len(values) == 1 else values
        elif (text := form_text(fields, name)) is not None:
            given[name] = text
    return given


def _validated(model: type[BaseModel], fields: FormFields) -> Any:
    for name in _FILES:
        if any(isinstance(value, str) for value in fields.get(name, [])):
            raise FishvoiceError("invalid_audio", f"{name}: must be a file (a multipart form), not text", name)
    try:
        return model.model_validate(_form(fields))
    except ValidationError as exc:
        raise first_error(exc, model, whole="body", unknown="unknown parameter", depth=1) from None


async def _read_form(request: Request, max_bytes: int) -> FormFields:
    body = await read_body(request, max_bytes, "voices")
    if media_type(request) not in FORM_TYPES:
        raise invalid("body", "send a form (multipart/form-data, with the recordings as `voices` files)")
    return await form_fields(request, body, max_files=MAX_REFERENCES + 1)


def _time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def voice_body(saved: SavedVoice, owner: str) -> dict[str, Any]:
    """A saved voice in Fish's Voice shape (a voice from /v1/references shows its id as its title)."""
    details = saved.details
    texts = details.samples or (saved.reference_text,)
    samples = [
        {"title": f"sample {n}", "text": text or "", "task_id": f"{saved.id}-{n}", "audio": ""}
        for n, text in enumerate(texts, 1)
    ]
    return {
        "_id": saved.id,
        "type": "tts",
        "title": details.title or saved.id,
        "description": details.description,
        "cover_image": "",
        "train_mode": "fast",
        "state": "trained",
        "tags": list(details.tags),
        "samples": samples,
        "created_at": _time(saved.created_at),
        "updated_at": _time(saved.updated_at),
        "languages": [],
        "visibility": details.visibility,
        "lock_visibility": False,
        "like_count": 0,
        "mark_count": 0,
        "shared_count": 0,
        "task_count": 0,
        "liked": False,
        "marked": False,
        "author": {"_id": owner or "self", "nickname": "", "avatar": ""},
    }


async def create_voice(speech: SpeechService, namespace: str, form: VoiceCreateForm) -> str:
    """The form's recordings checked and joined into one voice, saved under a new id (returned)."""
    if len(form.texts) > len(form.voices):
        raise invalid("texts", f"one text per recording at most ({len(form.voices)} recordings)")
    texts: list[str | None] = [text.strip() or None for text in form.texts]
    texts += [None] * (len(form.voices) - len(texts))
    recordings = [
        await run_in_thread(reference_from_bytes, audio, text, f"voices.{n}")
        for n, (audio, text) in enumerate(zip(form.voices, texts, strict=True))
    ]
    voice = join_references(recordings)
    details = VoiceDetails(form.title, form.description, tuple(form.tags), form.visibility, tuple(texts))
    voice_id = uuid.uuid4().hex
    if not await speech.store.add_saved_voice(namespace, voice_id, voice, details):
        raise FishvoiceError("conflict", f"id: a voice {voice_id!r} exists already; try again", "id")
    try:  # encoded now, so its first use need not be
        await prepare_voice(speech.tts, voice)
    except FishvoiceError as exc:
        log.warning("voice %r not encoded yet: %s", voice_id, exc.message)
    return voice_id


def _found(voices: list[SavedVoice], title: str | None, tags: list[str] | None) -> list[SavedVoice]:
    """The voices whose title holds `title` (in any case) and that have any of `tags`, newest first (no
    voice's uses are counted, so Fish's default order by them is this one too)."""
    found = [
        saved
        for saved in voices
        if (not title or title.lower() in (saved.details.title or saved.id).lower())
        and (not tags or set(tags) & set(saved.details.tags))
    ]
    return sorted(found, key=lambda saved: (saved.created_at, saved.id), reverse=True)


def _updated(details: VoiceDetails, form: VoiceUpdateForm) -> VoiceDetails:
    return VoiceDetails(
        form.title if form.title is not None else details.title,
        form.description if form.description is not None else details.description,
        tuple(form.tags) if form.tags is not None else details.tags,
        form.visibility or details.visibility,
        details.samples,
    )


def build_voices_router(speech: SpeechService, auth: Auth, max_body_bytes: int) -> APIRouter:
    router = APIRouter(prefix="/model")
    caller = Depends(auth)
    store = speech.store

    async def find(namespace: str, voice_id: str) -> SavedVoice:
        if is_conversation_id(voice_id):
            for saved in await store.list_saved_voices(namespace):
                if saved.id == voice_id:
                    return saved
        raise FishvoiceError("not_found", f"id: no voice {voice_id[:60]!r}", "id")

    @router.post("", openapi_extra=form_model(VoiceCreateForm), status_code=201)
    async def create(request: Request, namespace: str = caller) -> JSONResponse:
        form: VoiceCreateForm = _validated(VoiceCreateForm, await _read_form(request, max_body_bytes))
        voice_id = await create_voice(speech, namespace, form)
        return JSONResponse(voice_body(await find(namespace, voice_id), namespace), status_code=201)

    @router.get("")
    async def list_voices(
        namespace: str = caller,
        page_size: Annotated[int, Query(ge=1, le=100)] = 10,
        page_number: Annotated[int, Query(ge=1)] = 1,
        title: Annotated[str | None, Query(max_length=256, description="a part of the title, in any case")] = None,
        tag: Annotated[list[str] | None, Query(description="voices with any of these tags")] = None,
        sort_by: Literal["task_count", "created_at"] = "task_count",
    ) -> JSONResponse:
        voices = _found(await store.list_saved_voices(namespace), title, tag)
        page = voices[(page_number - 1) * page_size : page_number * page_size]
        return JSONResponse({"total": len(voices), "items": [voice_body(saved, namespace) for saved in page]})

    @router.get("/{voice_id}")
    async def get_voice(voice_id: str, namespace: str = caller) -> JSONResponse:
        return JSONResponse(voice_body(await find(namespace, voice_id), namespace))

    @router.patch("/{voice_id}", openapi_extra=form_model(VoiceUpdateForm))
    async def update(voice_id: str, request: Request, namespace: str = caller) -> JSONResponse:
        form: VoiceUpdateForm = _validated(VoiceUpdateForm, await _read_form(request, max_body_bytes))
        changed = _updated((await find(namespace, voice_id)).details, form)
        if not await store.update_saved_voice(namespace, voice_id, changed):
            raise FishvoiceError("not_found", f"id: no voice {voice_id[:60]!r}", "id")  # deleted meanwhile
        return JSONResponse(voice_body(await find(namespace, voice_id), namespace))

    @router.delete("/{voice_id}")
    async def delete(voice_id: str, namespace: str = caller) -> JSONResponse:
        if not is_conversation_id(voice_id) or not await store.delete_saved_voice(namespace, voice_id):
            raise FishvoiceError("not_found", f"id: no voice {voice_id[:60]!r}", "id")
        return JSONResponse({"_id": voice_id, "deleted": True})

    return router
