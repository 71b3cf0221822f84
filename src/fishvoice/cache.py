"""Where fishvoice keeps what it derives from installed files (the joined Whisper model, a Piper voice
patched to tell its timings): `$FISHVOICE_CACHE_DIR`, else `$XDG_CACHE_HOME/fishvoice`. Nothing in it is
downloaded, and a file appears whole or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def default_cache_dir() -> Path:
    if os.environ.get("FISHVOICE_CACHE_DIR"):
        return Path(os.environ["FISHVOICE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fishvoice"


def write_atomic(target: Path, write: Callable[[str], None]) -> None:
    """`write(path)` into a temporary file beside `target`, then renamed to it: readers in other processes
    never see a file half written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
