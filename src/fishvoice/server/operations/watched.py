"""What the operations routes read of the running server, handed over by the app (no feature package
imports another)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ...memory.base import ConversationStore
from ...tts.base import TTS


@dataclass
class Watched:
    job_counts: Callable[[], Awaitable[dict[str, int]]]  # jobs by state (RunPod's: IN_QUEUE, ...), fleet-wide
    jobs_running: Callable[[], int]  # this server's
    job_workers: int
    progress: Callable[[], dict[str, Any]]  # /health's `progress` (backends' stalls) and `in_use`
    conversations: ConversationStore
    voice: TTS
    stopping: bool = False  # set as the server shuts down: not ready for new traffic
