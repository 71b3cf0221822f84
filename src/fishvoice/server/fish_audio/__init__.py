"""Fish Audio's API: /v1/tts (also with timestamps), /v1/tts/live, /v1/asr, saved voices (/v1/references/*, /model)."""

from __future__ import annotations

from fastapi import APIRouter

from ...asr.base import ASR
from ...speech_service import SpeechService
from ..http.auth import Auth
from .asr import build_asr_router
from .live import LiveLimits, OpenLive, build_live_router
from .references import build_references_router
from .timestamps import build_timestamps_router
from .tts import build_fish_router
from .voices import build_voices_router


def build_fish_audio_router(
    speech: SpeechService, asr: ASR | None, auth: Auth, max_body_bytes: int, live: LiveLimits, open_live: OpenLive
) -> APIRouter:
    """Every route of Fish's API, in one router."""
    router = APIRouter()
    router.include_router(build_fish_router(speech, auth, max_body_bytes))
    router.include_router(build_timestamps_router(speech, auth, max_body_bytes))
    router.include_router(build_live_router(speech, auth, live, open_live))
    router.include_router(build_asr_router(speech, asr, auth, max_body_bytes))
    router.include_router(build_references_router(speech, auth, max_body_bytes))
    router.include_router(build_voices_router(speech, auth, max_body_bytes))
    return router
