"""What a long-running fishvoice process (`serve`, the RunPod worker, the CLI) sets up before anything else.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

from .config import Settings

log = logging.getLogger(__name__)
M_ARENA_MAX = -8  # glibc's mallopt parameter number


def prepare_process(settings: Settings) -> None:
    """What a long-running fishvoice process sets up first: logging, and a cap on malloc arenas."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per HTTP call drowns what matters
    cap_malloc_arenas()


def cap_malloc_arenas(arenas: int = 2) -> None:
    """Keep glibc to a few malloc arenas. Each backend call runs in a thread, and by default every
    thread may get an arena of its own that fragments: under bench/load.py the servers grew 61 and 34 MB
    from round 1 to round 5 (200 jobs a round); with two arenas, 2 and 5 MB from round 1 to round 3.
    MALLOC_ARENA_MAX, if set, wins."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_ARENA_MAX, arenas)
    except (OSError, AttributeError):  # not glibc (musl, say): nothing to cap
        log.debug("malloc arenas left as they are")
