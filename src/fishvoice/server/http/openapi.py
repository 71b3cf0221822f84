"""What `/openapi.json` says of the bodies the routes read themselves (within their size limits, with
their own errors): the pydantic model a route validates its body against, referenced from the route and
defined once among the schema's components."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

_REF = "#/components/schemas/{model}"
_BODIES: set[type[BaseModel]] = set()  # every model a route names as its body


def json_body(model: type[BaseModel], *media_types: str) -> dict[str, Any]:
    """A route's `openapi_extra`: its body is `model`, as JSON (and any other `media_types`)."""
    _BODIES.add(model)
    schema = {"schema": {"$ref": _REF.format(model=model.__name__)}}
    return {
        "requestBody": {"required": True, "content": {media: schema for media in ("application/json", *media_types)}}
    }


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
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = schema  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema
