"""Builds the backends and the assistant from settings: the one place the edge calls.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

from .asr.base import ASR
from .assistant import Assistant
from .config import REDIS_SCHEMES, Settings
from .errors import FishvoiceError
from .llm.base import LLM
from .memory.base import ConversationStore
from .tts.base import TTS, VoiceCodeStore

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
            stream_tools=settings.openai_stream_tools,
        )
    from .llm.llama_cpp import LlamaCppLLM

    return LlamaCppLLM(
        settings.llm_model_path,
        context=settings.llm_context,
        threads=settings.llm_threads,
        gpu_layers=settings.llm_gpu_layers,
        stall_s=settings.backend_timeout,
    )


def build_tts(settings: Settings, codes: VoiceCodeStore | None = None) -> TTS:
    """The voice the settings name; a cloning voice keeps its encoded references in `codes` (the store)."""
    if settings.voice == "fish":
        return build_fish_tts(settings, codes)
    from .tts.piper import PiperTTS

    return PiperTTS(settings.piper_model_path, cache_dir=settings.cache_dir)


def build_fish_tts(settings: Settings, codes: VoiceCodeStore | None = None) -> TTS:
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
        checkpoint = locate_checkpoint(settings.fish_checkpoint, settings.fish_cache_dir)
        engine = FishEngine.load(
            checkpoint,
            device=settings.fish_device,
            dtype=settings.fish_dtype,
            quant=settings.fish_quant,
            compile=settings.fish_compile,
            cuda_graphs=settings.fish_cuda_graphs,
            compile_cache=settings.fish_compile_cache,
            max_concurrency=settings.fish_max_batch,
            max_len=settings.fish_max_len,
            prefill_chunk=settings.fish_prefill_chunk,
        )
    except FishEngineError as exc:  # a checkpoint that does not load (CheckpointError), a failed warm-up
        raise engine_error(exc) from exc
    sampling = Sampling(
        temperature=settings.fish_temperature,
        top_p=settings.fish_top_p,
        top_k=settings.fish_top_k,
        seed=settings.fish_seed,
    )
    return FishTTS(engine, sampling, codes=codes, codec_id=codec_id(checkpoint), stall_s=settings.backend_timeout)


def codec_id(checkpoint: Path) -> str:
    """What names a checkpoint's codec in the keys of stored voice codes: workers with the same codec
    share them; another codec's codes are never taken for its own."""
    codec = checkpoint / "codec.pth"
    return f"fish:{checkpoint.name}:{codec.stat().st_size if codec.is_file() else 0}"


def jobs_at_once(configured: int | None, tts: TTS, default: int) -> int:
    """Jobs to run at once: as configured, else enough to fill the voice (the fish engine decodes its
    slots together, so one GPU worker takes that many jobs, as RunPod's vLLM worker does)."""
    return configured if configured is not None else max(default, tts.capacity)


def build_asr(settings: Settings) -> ASR | None:
    """The speech recognition the settings name, or None where it is off (FISHVOICE_ASR=none)."""
    if settings.asr == "none":
        return None
    from .asr.whisper import WhisperASR

    return WhisperASR(
        settings.asr_model_path,
        device=settings.asr_device,
        compute_type=settings.asr_compute_type,
        cache_dir=settings.cache_dir,
        stall_s=settings.backend_timeout,
    )


def build_store(settings: Settings) -> ConversationStore:
    if settings.store.startswith(REDIS_SCHEMES):
        from .memory.redis import RedisStore

        return RedisStore(settings.store, ttl_s=settings.conversation_ttl, prefix=settings.redis_prefix)
    from .memory.sqlite import SQLiteStore, sqlite_path

    return SQLiteStore(sqlite_path(settings.store), ttl_s=settings.conversation_ttl)


def build_assistant(settings: Settings) -> Assistant:
    """Load every model once; the returned assistant serves all requests."""
    store = build_store(settings)
    assistant = Assistant(
        build_llm(settings),
        build_tts(settings, codes=store),
        store,
        default_system_message=settings.default_system_message,
        backend_timeout_s=settings.backend_timeout,
        asr=build_asr(settings),
    )
    log.info(
        "assistant ready: llm=%s voice=%s asr=%s store=%s",
        assistant.llm.name,
        assistant.tts.name,
        assistant.asr.name if assistant.asr else "off",
        settings.store,
    )
    return assistant
