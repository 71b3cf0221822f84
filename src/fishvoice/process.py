"""What a long-running fishvoice process (`serve`, the RunPod worker, the CLI) sets up before anything else.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from . import tracing
from .config import Settings

log = logging.getLogger(__name__)
M_ARENA_MAX = -8  # glibc's mallopt parameter number


# A secret in a URL's query (`?api_key=...`, as browsers must send it to /v1/realtime), up to the next separator.
_SECRET_IN_QUERY = re.compile(r"([?&;](?:api[_-]?key|access[_-]?token|token|key)=)[^&;#\s\"']+", re.IGNORECASE)
REDACTED = "[redacted]"


def prepare_process(settings: Settings) -> None:
    """What a long-running fishvoice process sets up first: logging (keys redacted, each line with its request's
    trace), and a cap on malloc arenas."""
    handler = logging.StreamHandler()
    handler.addFilter(_with_trace)
    handler.setFormatter(_JSON if settings.log_format == "json" else _TextFormatter(_TEXT))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per HTTP call drowns what matters
    redact_logs(settings.api_keys())
    cap_malloc_arenas()


_TEXT = "%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s"
# One object a line: the request's fields (trace_id, route, job_id; a request's line adds its method, path, status
# and duration_ms) beside the time, level, logger and message.
_JSON = JsonFormatter(
    "%(asctime)s %(levelname)s %(name)s %(message)s",
    rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
)


def _with_trace(record: logging.LogRecord) -> bool:
    """Every line says which request it belongs to (empty outside one)."""
    trace = tracing.current()
    record.trace_id, record.route, record.job_id = trace.trace_id, trace.route, trace.job_id
    return True


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ids = {"trace": getattr(record, "trace_id", ""), "job": getattr(record, "job_id", "")}
        found = " ".join(f"{name}={value}" for name, value in ids.items() if value)
        record.context = f" [{found}]" if found else ""
        return super().format(record)


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """`text` with the given secrets, and any key in a URL's query, replaced by [redacted]."""
    text = _SECRET_IN_QUERY.sub(rf"\1{REDACTED}", text)
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def redact_logs(secrets: Sequence[str]) -> None:
    """Every log record, whoever writes it (uvicorn's access and WebSocket lines print the URL with its
    query), has its message, its arguments and its traceback redacted as it is made: whatever the format,
    no key reaches a log line."""
    make_record = logging.getLogRecordFactory()
    keys = sorted({secret for secret in secrets if secret}, key=len, reverse=True)

    def redacted(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        record.msg = redact(record.msg, keys) if isinstance(record.msg, str) else record.msg
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a, keys) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {k: redact(v, keys) if isinstance(v, str) else v for k, v in record.args.items()}
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), keys)
        return record

    logging.setLogRecordFactory(redacted)


def cap_malloc_arenas(arenas: int = 2) -> None:
    """Keep glibc to a few malloc arenas. Each backend call runs in a thread, and by default every
    thread may get an arena of its own that fragments: under bench/load.py the servers grew 61 and 34 MB
    from round 1 to round 5 (200 jobs a round); with two arenas, 2 and 5 MB from round 1 to round 3.
    MALLOC_ARENA_MAX, if set, wins."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return
    try:
        _libc().mallopt(M_ARENA_MAX, arenas)
    except (OSError, AttributeError):  # not glibc (musl, say): nothing to cap
        log.debug("malloc arenas left as they are")


def release_free_memory() -> None:
    """Give the system back the memory malloc keeps freed (glibc's malloc_trim). A reply's native buffers
    (the voice's audio, llama.cpp's and ONNX Runtime's scratch) are freed when it ends, but glibc keeps
    most of them: over 100 realtime sessions a server's memory grew 20 to 30 MB that a trim gives back
    (tracemalloc saw 0.2 MB more Python objects: nothing is kept)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc: its allocator returns memory its own way
        _libc().malloc_trim(0)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
