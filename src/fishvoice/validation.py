"""One translation of pydantic's validation errors into the contract's error: `invalid_input`, the field
at fault as a dotted path (`references.0.audio`), and a message saying what the field must be. Each API
keeps its own words for an unknown field and its own name for the whole body."""

from __future__ import annotations

import difflib

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from .errors import FishvoiceError

_KINDS = {
    "string_type": "a string",
    "float_type": "a number",
    "int_type": "an integer",
    "bool_type": "a boolean",
    "list_type": "a list",
    "model_type": "an object",
    "dict_type": "an object",
}
_BOUNDS = {
    "greater_than_equal": "at least",
    "less_than_equal": "at most",
    "greater_than": "more than",
    "less_than": "less than",
}
_UNION_MEMBERS = ("bytes", "str", "int", "float")  # plain types a union names its members by


_MISMATCH = frozenset({*_KINDS, "none_required", "literal_error", "is_instance_of"})


def best_error(errors: list[ErrorDetails]) -> ErrorDetails:
    """The error to tell: the first, unless a union's members disagree about it, when the one that got past
    the value's type (too short, a missing field inside) says more than "must be a string"."""
    where = field_path(errors[0])
    return next((e for e in errors if e["type"] not in _MISMATCH and field_path(e)[: len(where)] == where), errors[0])


def first_error(
    exc: ValidationError,
    model: type[BaseModel],
    *,
    whole: str,
    unknown: str = "unknown field",
    depth: int | None = None,
) -> FishvoiceError:
    """The first of `exc`'s errors in the contract's terms. `whole` names the body when the error is about
    all of it; `unknown` is what an unknown field is called; `depth` keeps only that many parts of the
    field's path (OpenAI names the top-level parameter)."""
    return field_error(best_error(exc.errors()), model, whole=whole, unknown=unknown, depth=depth, brackets=False)


def field_error(
    error: ErrorDetails,
    model: type[BaseModel],
    *,
    whole: str,
    unknown: str = "unknown field",
    depth: int | None = None,
    brackets: bool = False,
) -> FishvoiceError:
    """One error in the contract's terms (see `first_error`); `brackets` writes list positions as OpenAI does
    (`messages[0].content`), else as parts of the dotted path (`references.0.audio`)."""
    path = field_path(error)[:depth]
    field = _joined(path, brackets) or whole
    return FishvoiceError("invalid_input", f"{field}: {_message(error, path, model, unknown)}", field)


def field_path(error: ErrorDetails) -> list[str | int]:
    """The error's location without the union members pydantic names in it; an unknown field's own name
    (the caller's, whatever it looks like) is kept."""
    *within, last = error["loc"] or ("",)
    path = [part for part in within if not _is_member(part)]
    return [*path, last] if error["type"] == "extra_forbidden" or not _is_member(last) else path


def _is_member(part: str | int) -> bool:
    """A union's member as pydantic names it in a location: a type (str), a model (PcmFormat), a constrained
    or wrapped type (constrained-int, function-after[...]), a literal (literal['inf']) or a tag ("text part").
    A field named with brackets (timestamp_granularities[]) is not one."""
    if isinstance(part, int):
        return False
    bracketed = "[" in part and not part.endswith("[]")
    return part in _UNION_MEMBERS or part[:1].isupper() or " " in part or "-" in part or bracketed


def _joined(path: list[str | int], brackets: bool) -> str:
    field = ""
    for part in path:
        if isinstance(part, int) and brackets:
            field += f"[{part}]"
        else:
            field += f".{part}" if field else str(part)
    return field


def _message(error: ErrorDetails, path: list[str | int], model: type[BaseModel], unknown: str) -> str:
    kind, given = error["type"], error.get("input")
    context = error.get("ctx", {})
    if kind == "extra_forbidden":
        hint = difflib.get_close_matches(str(path[-1]), model.model_fields, n=1) if len(path) == 1 else []
        return unknown + (f"; did you mean {hint[0]}?" if hint else "")
    if kind == "missing":
        return "required"
    if kind in _KINDS:
        return f"must be {_KINDS[kind]} (got {type(given).__name__})"
    if kind == "literal_error":
        expected = str(context.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"must be one of {expected} (got {given!r:.40})"
    if kind in _BOUNDS:
        limit = next(iter(context.values()), "?")
        return f"must be {_BOUNDS[kind]} {limit} (got {given!r:.40})"
    if kind == "too_short":
        return f"must hold at least {context.get('min_length')} item(s)"
    if kind == "too_long":
        return f"must hold at most {context.get('max_length')} items (got {context.get('actual_length')})"
    if kind == "value_error":
        return str(context.get("error", error["msg"]))
    return error["msg"].lower()
