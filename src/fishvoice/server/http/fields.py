"""Checks of a JSON body's values on the routes that parse their own (OpenAI's chat and realtime): each
failure is an invalid_input error naming the field, in the contract's words.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import math
import re
from typing import Any

from ...errors import FishvoiceError

_LANGUAGE = re.compile(r"^[a-z]{2,3}$")


def invalid(field: str, message: str) -> FishvoiceError:
    return FishvoiceError("invalid_input", f"{field}: {message}", field)


def as_number(value: Any, field: str, low: float = -math.inf, high: float = math.inf) -> float:
    """A finite number (not a boolean) from `low` to `high`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid(field, f"must be a number (got {_kind(value)})")
    if not low <= value <= high:
        raise invalid(field, f"must be between {low:g} and {high:g} (got {value})")
    return float(value)


def as_integer(value: Any, field: str, low: float = -math.inf, high: float = math.inf) -> int:
    """An integer (not a boolean) from `low` to `high`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(field, f"must be an integer (got {_kind(value)})")
    if not low <= value <= high:
        raise invalid(field, f"must be between {low:g} and {high:g} (got {value})")
    return value


def as_boolean(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(field, f"must be true or false (got {_kind(value)})")
    return value


def as_language(value: Any, field: str) -> str:
    """A language code as Whisper names them (ISO 639-1, or its 3-letter codes such as "haw")."""
    if not isinstance(value, str) or not _LANGUAGE.match(value):
        raise invalid(field, f"must be an ISO 639-1 code such as 'en' (got {str(value)[:20]!r})")
    return value


def _kind(value: Any) -> str:
    """What a value is, in JSON's words, for an error message (a number is shown as itself)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return str(value)
    for kind, name in ((str, "a string"), (list, "an array"), (dict, "an object")):
        if isinstance(value, kind):
            return name
    return type(value).__name__
