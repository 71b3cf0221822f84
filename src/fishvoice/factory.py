"""Builds the backends and the assistant from settings: the one place the edge calls.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import logging

from .assistant import Assistant
from .config import REDIS_SCHEMES, Settings
from .errors import FishvoiceError
from .llm.base import LLM
from .memory.base import ConversationStore
from .tts.base import TTS

log = logging.getLogger(__name__)


def build_llm(settings: Settings) -> LLM:
    if settings.llm == "openai":
        from .llm.openai import OpenAICompatibleLLM

        return OpenAICompatibleLLM(
            settings.openai_base_url,
            api_key=settings.openai_api_key,
            model=settings.openai_model,
            context=settings.openai_context,
            timeout=settings.openai_timeout,
        )
    from .llm.llama_cpp import LlamaCppLLM

    return LlamaCppLLM(
        settings.llm_model_path,
        context=settings.llm_context,
        threads=settings.llm_threads,
        gpu_layers=settings.llm_gpu_layers,
    )


def build_tts(settings: Settings) -> TTS:
    if settings.voice == "fish":
        return build_fish_tts(settings)
    from .tts.piper import PiperTTS

    return PiperTTS(settings.piper_model_path)


def build_fish_tts(settings: Settings) -> TTS:
    try:
        from .fish.checkpoints import locate_checkpoint
        from .fish.engine import FishEngine
        from .fish.errors import FishEngineError
        from .fish.generate import Sampling
        from .tts.fish import FishTTS, engine_error
    except ImportError as exc:
        raise FishvoiceError(
            "backend_unavailable", f"FISHVOICE_VOICE=fish needs the fish extra (pip install 'fishvoice[fish]'): {exc}"
        ) from exc
    if not settings.fish_checkpoint:
        raise FishvoiceError(
            "backend_unavailable", "FISHVOICE_VOICE=fish needs FISHVOICE_FISH_CHECKPOINT (a directory or a hub repo id)"
        )
    try:
        engine = FishEngine(
            locate_checkpoint(settings.fish_checkpoint, settings.fish_cache_dir),
            device=settings.fish_device,
            dtype=settings.fish_dtype,
            compile=settings.fish_compile,
            cuda_graphs=settings.fish_cuda_graphs,
            compile_cache=settings.fish_compile_cache,
            max_concurrency=settings.fish_max_batch,
            max_len=settings.fish_max_len,
        )
    except FishEngineError as exc:  # a checkpoint that does not load (CheckpointError), a failed warm-up
        raise engine_error(exc) from exc
    sampling = Sampling(
        temperature=settings.fish_temperature,
        top_p=settings.fish_top_p,
        top_k=settings.fish_top_k,
        seed=settings.fish_seed,
    )
    return FishTTS(engine, sampling)


def jobs_at_once(configured: int | None, tts: TTS, default: int) -> int:
    """Jobs to run at once: as configured, else enough to fill the voice (the fish engine decodes its
    slots together, so one GPU worker takes that many jobs, as RunPod's vLLM worker does)."""
    return configured if configured is not None else max(default, tts.capacity)


def build_store(settings: Settings) -> ConversationStore:
    if settings.store.startswith(REDIS_SCHEMES):
        from .memory.redis import RedisStore

        return RedisStore(settings.store, ttl_s=settings.conversation_ttl, prefix=settings.redis_prefix)
    from .memory.sqlite import SQLiteStore, sqlite_path

    return SQLiteStore(sqlite_path(settings.store), ttl_s=settings.conversation_ttl)


def build_assistant(settings: Settings) -> Assistant:
    """Load every model once; the returned assistant serves all requests."""
    assistant = Assistant(
        build_llm(settings),
        build_tts(settings),
        build_store(settings),
        default_system_message=settings.default_system_message,
        backend_timeout_s=settings.backend_timeout,
    )
    log.info("assistant ready: llm=%s voice=%s store=%s", assistant.llm.name, assistant.tts.name, settings.store)
    return assistant
