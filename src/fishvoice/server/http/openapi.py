"""What `/openapi.json` says of the bodies the routes read themselves (within their size limits, with
their own errors) and of their answers: the pydantic model a route validates its body against, referenced
from the route and defined once among the schema's components; the media a route answers in; and on every
route, the error body of its API (OpenAI's under /v1 and /model, the contract's elsewhere)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from .errors import openai_shaped

_REF = "#/components/schemas/{model}"
_BODIES: set[type[BaseModel]] = set()  # every model a route names as its body or its answer
_BINARY = {"type": "string", "format": "binary"}


class ErrorBody(BaseModel):
    """An error as the job API and /health answer it."""

    error: str = Field(description="what went wrong, naming the field at fault")
    error_code: str = Field(description="invalid_input, unauthorized, not_found, timeout, internal...")
    field: str | None = Field(description="the field at fault, as a dotted path")


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, authentication_error, not_found_error, server_error...")
    param: str | None = Field(description="the parameter at fault")
    code: str = Field(description="the job API's code: invalid_input, unauthorized, not_found...")


class OpenAIErrorBody(BaseModel):
    """An error as the /v1 routes answer it (OpenAI's shape, for Fish's routes too)."""

    error: OpenAIErrorDetail


def answers(
    description: str, *media_types: str, model: type[BaseModel] | None = None
) -> dict[int | str, dict[str, Any]]:
    """A route's `responses`: what it answers with success, as `model` (JSON) or in `media_types` (bytes)."""
    content: dict[str, Any] = {}
    if model is not None:
        _BODIES.add(model)
        content["application/json"] = {"schema": {"$ref": _REF.format(model=model.__name__)}}
    for media in media_types:
        content[media] = {"schema": {"type": "string"} if media.startswith("text/") else _BINARY}
    return {200: {"description": description, "content": content}}


def json_body(model: type[BaseModel], *media_types: str) -> dict[str, Any]:
    """A route's `openapi_extra`: its body is `model`, as JSON (and any other `media_types`)."""
    _BODIES.add(model)
    schema = {"schema": {"$ref": _REF.format(model=model.__name__)}}
    return {
        "requestBody": {"required": True, "content": {media: schema for media in ("application/json", *media_types)}}
    }


def form_model(model: type[BaseModel]) -> dict[str, Any]:
    """A route's `openapi_extra`: its body is a multipart form of `model`'s fields."""
    _BODIES.add(model)
    schema = {"schema": {"$ref": _REF.format(model=model.__name__)}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": schema}}}


def schema_body(schema: dict[str, Any]) -> dict[str, Any]:
    """A route's `openapi_extra`: its body is JSON described by `schema` (a route that checks its body by hand)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def form_body(fields: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    """A route's `openapi_extra`: its body is a multipart form of `fields` (JSON schemas by name)."""
    schema = {"type": "object", "properties": fields, "required": required}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def operation_id(route: APIRoute) -> str:
    """Unique per method and path: a route served under two prefixes, or for two methods, gets one each."""
    methods = "_".join(sorted(method.lower() for method in route.methods or ()))
    return re.sub(r"\W+", "_", f"{route.name}_{route.path_format}_{methods}").strip("_")


def install_openapi(app: FastAPI) -> None:
    """The app's schema with the routes' body models among its components."""

    def schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
            _, defined = models_json_schema(
                [(model, "validation") for model in sorted(_BODIES, key=lambda m: m.__name__)], ref_template=_REF
            )
            spec.setdefault("components", {}).setdefault("schemas", {}).update(defined.get("$defs", {}))
            _error_answers(spec)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = schema  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema
    _BODIES.update((ErrorBody, OpenAIErrorBody))


def _error_answers(spec: dict[str, Any]) -> None:
    """Every operation answers its errors (4XX, 5XX) in its API's error body."""
    for path, operations in spec.get("paths", {}).items():
        model = OpenAIErrorBody if openai_shaped(path) else ErrorBody
        body = {"application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}}
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)  # FastAPI's own validation answer: its errors are ours, as above
            responses["4XX"] = {"description": "the request was refused: the error names the field", "content": body}
            responses["5XX"] = {"description": "the server could not answer: busy, a backend down", "content": body}
