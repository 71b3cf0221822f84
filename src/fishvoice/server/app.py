"""The FastAPI application and `fishvoice serve`: models load before the port opens."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

from .. import __version__
from ..asr.base import ASR
from ..assistant import Assistant
from ..config import Settings
from ..exclusive import ReportsProgress
from ..speech_service import SpeechService, WorkLimit
from ..threads import stream_threads
from .fish_audio import build_fish_audio_router
from .fish_audio.live import LiveLimits, OpenLive
from .http.auth import Auth
from .http.errors import install_error_handlers
from .http.openapi import install_openapi, operation_id
from .http.tracing import RequestTracing, name_route
from .jobs import build_job_runner
from .jobs.routes import ENDPOINT_PREFIX, build_router, endpoint_id
from .openai.captioned import build_captioned_router
from .openai.chat import build_chat_router
from .openai.speech import LISTED_MODELS, build_openai_router
from .openai.transcriptions import build_transcriptions_router
from .operations.routes import build_operations_router
from .operations.timed_store import timed_store
from .operations.watched import Watched
from .page.routes import build_page_router
from .realtime.connection import RealtimeLimits
from .realtime.routes import OpenSessions, build_realtime_router

log = logging.getLogger(__name__)

_FISH_ROUTES = ("/v1/tts", "/v1/asr", "/model", "/v1/references")  # Fish's API: answers carry X-Generation-Id


def _progress(
    assistant: Assistant, asr: ASR | None, speech: SpeechService, sessions: OpenSessions, live: OpenLive
) -> dict[str, Any]:
    """What /health adds: each backend's holder and stall (the ones that say), and what is in use."""
    reporting = {"llm": assistant.llm, "voice": assistant.tts, "asr": asr}
    return {
        "progress": {name: b.progress() for name, b in reporting.items() if isinstance(b, ReportsProgress)},
        "in_use": {
            "stream_threads": stream_threads(),
            "work": speech.work.in_use,
            "realtime_sessions": sessions.count,
            "tts_live_sockets": live.count,
        },
    }


def create_app(assistant: Assistant, settings: Settings, asr: ASR | None = None) -> FastAPI:
    """The RunPod-compatible job API, and OpenAI's speech, transcription and chat APIs, over an assistant whose
    models are already loaded. The routes hear with `asr`, else the assistant's own recogniser; with none,
    audio input is unavailable (503 naming the audio's parameter)."""
    asr = asr if asr is not None else assistant.asr
    store_backend = type(assistant.store).__name__
    assistant.store = timed_store(assistant.store, "conversations")
    jobs = build_job_runner(assistant, settings)
    jobs.store = timed_store(jobs.store, "jobs")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await jobs.start()
        try:
            yield
        finally:
            watched.stopping = True
            await jobs.stop()

    app = FastAPI(
        title="fishvoice",
        version=__version__,
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        dependencies=[Depends(name_route)],
    )
    install_openapi(app)
    app.state.jobs = jobs
    speech = SpeechService(
        assistant.tts, assistant.store, WorkLimit(jobs.limits.concurrency), assistant.backend_timeout_s
    )
    app.state.speech = speech
    backends = {"llm": assistant.llm.name, "voice": assistant.tts.name, "store": store_backend, "jobs": jobs.store.name}
    auth = Auth(settings.api_keys())
    max_body_bytes = int(settings.max_body_mb * 2**20)
    sessions = OpenSessions()
    live = OpenLive(settings.realtime_sessions)
    progress = lambda: _progress(assistant, asr, speech, sessions, live)  # noqa: E731
    watched = Watched(
        jobs.counts, lambda: jobs.running_here, jobs.limits.concurrency, progress, assistant.store, assistant.tts
    )

    wait_s = settings.runsync_wait
    router = build_router(
        jobs, auth, runsync_wait_s=wait_s, max_body_bytes=max_body_bytes, backends=backends, progress=progress
    )
    app.include_router(router)
    app.include_router(router, prefix=ENDPOINT_PREFIX, dependencies=[Depends(endpoint_id)])
    _include_speech_apis(app, assistant, speech, asr, auth, LiveLimits(settings.realtime_idle, max_body_bytes), live)
    app.include_router(build_page_router())
    app.include_router(build_operations_router(watched, auth, metrics_auth=settings.metrics_auth))
    realtime_limits = RealtimeLimits(settings.realtime_sessions, settings.realtime_idle, max_body_bytes)
    app.include_router(build_realtime_router(assistant, asr, speech, auth, realtime_limits, sessions))

    install_error_handlers(app, debug=settings.debug)
    app.add_middleware(RequestTracing, generation_routes=_FISH_ROUTES)
    return app


def _include_speech_apis(
    app: FastAPI,
    assistant: Assistant,
    speech: SpeechService,
    asr: ASR | None,
    auth: Auth,
    live_limits: LiveLimits,
    live: OpenLive,
) -> None:
    """Fish's and OpenAI's routes."""
    max_body_bytes = live_limits.max_message_bytes
    app.include_router(build_fish_audio_router(speech, asr, auth, max_body_bytes, live_limits, live))
    app.include_router(build_openai_router(speech, auth, max_body_bytes=max_body_bytes))
    app.include_router(build_captioned_router(speech, auth, max_body_bytes=max_body_bytes))
    app.include_router(
        build_transcriptions_router(speech, asr, auth, models=LISTED_MODELS, max_body_bytes=max_body_bytes)
    )
    app.include_router(
        build_chat_router(assistant, speech, asr, auth, models=LISTED_MODELS, max_body_bytes=max_body_bytes)
    )


def serve(settings: Settings) -> None:
    """Load the models, then serve; the port opens only once the models are ready."""
    import uvicorn

    from ..factory import build_assistant

    assistant = build_assistant(settings)
    app = create_app(assistant, settings)
    auth = f"bearer auth with {len(settings.api_keys())} key(s)" if settings.api_keys() else "no auth"
    log.info(
        "serving on http://%s:%d (%s, %d jobs at once)",
        settings.host,
        settings.port,
        auth,
        app.state.jobs.limits.concurrency,
    )
    # uvicorn's lines go through our handler (the format, the trace, the redaction); RequestTracing logs each
    # request with its route and duration, in place of uvicorn's access line.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
