"""Field checks shared by the routes: an invalid_input error naming the field, in the contract's words,
and the language code as a pydantic type (realtime sessions and transcriptions take one).

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, StrictStr

from ...errors import FishvoiceError

_LANGUAGE = re.compile(r"^[a-z]{2,3}$")


def invalid(field: str, message: str) -> FishvoiceError:
    return FishvoiceError("invalid_input", f"{field}: {message}", field)


def _language_code(value: str) -> str:
    """A language code as Whisper names them (ISO 639-1, or its 3-letter codes such as "haw")."""
    if not _LANGUAGE.match(value):
        raise ValueError(f"must be an ISO 639-1 code such as 'en' (got {value[:20]!r})")
    return value


LanguageCode = Annotated[StrictStr, AfterValidator(_language_code)]
