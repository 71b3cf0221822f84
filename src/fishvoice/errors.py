"""The one error type of fishvoice, and the codes the API contract names."""

from __future__ import annotations

from typing import Any, Literal

ErrorCode = Literal[
    "invalid_input",
    "invalid_audio",
    "payload_too_large",
    "unauthorized",
    "not_found",
    "conflict",
    "cancelled",
    "timeout",
    "backend_unavailable",
    "internal",
]


def is_out_of_memory(exc: BaseException) -> bool:
    """A GPU (or allocator) out-of-memory error: the worker should be replaced, not reused."""
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


class FishvoiceError(Exception):
    """An error the caller is told about: a code from the contract, a message and the field at fault."""

    def __init__(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        """The error as the contract shows it: `{"error", "error_code", "field"}`."""
        return {"error": self.message, "error_code": self.code, "field": self.field}

    def __repr__(self) -> str:
        return f"FishvoiceError({self.code!r}, {self.message!r}, field={self.field!r})"


def as_api_error(exc: BaseException) -> FishvoiceError:
    """`exc` as a caller is told of it: itself when it is ours; anything else is `internal`, named by its type
    only (its message may hold paths or data the caller has no business seeing)."""
    if isinstance(exc, FishvoiceError):
        return exc
    return FishvoiceError("internal", f"internal error: {type(exc).__name__}")
