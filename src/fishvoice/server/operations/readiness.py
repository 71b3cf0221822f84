"""Whether this server should take traffic (/ready): its stores answer, no backend is stalled, it is not
shutting down. The models are loaded and warmed before the port opens (app.serve), so a server that answers
at all has them."""

from __future__ import annotations

import asyncio

from .watched import Watched

CHECK_S = 2.0  # a store slower than this to answer a probe counts as not answering
_NO_VOICE = "0" * 64  # a voice hash no voice has: the read touches the store and finds nothing


async def unready(watched: Watched) -> list[str]:
    """Why the server is not ready; empty when it is."""
    reasons = ["the server is shutting down"] if watched.stopping else []
    for name, check in (
        ("job store", watched.job_counts()),
        ("conversation store", watched.conversations.get_voice(_NO_VOICE)),
    ):
        try:
            await asyncio.wait_for(check, CHECK_S)
        except Exception as exc:
            reasons.append(f"the {name} does not answer: {type(exc).__name__}: {exc}"[:300])
    for backend, progress in watched.progress()["progress"].items():
        if progress.get("stalled"):
            reasons.append(f"the {backend} is stalled: held without progress")
    return reasons
