"""Shared fixtures: the real embedded models (loaded once), a fresh store per test, real audio."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fishvoice.assistant import Assistant
from fishvoice.audio import Audio, encode_bytes, resample
from fishvoice.llm.llama_cpp import LlamaCppLLM, default_model_path
from fishvoice.memory.sqlite import SQLiteStore
from fishvoice.tts.base import synthesize
from fishvoice.tts.piper import PiperTTS
from fishvoice.worker import make_handler

ROOT = Path(__file__).resolve().parents[1]
SYSTEM = "You are a helpful voice assistant. Answer in plain sentences."


@pytest.fixture(scope="session")
def llm() -> LlamaCppLLM:
    return LlamaCppLLM(context=2048)


@pytest.fixture(scope="session")
def tts() -> PiperTTS:
    return PiperTTS()


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore(tmp_path / "conversations.sqlite3")


@pytest.fixture
def assistant(llm: LlamaCppLLM, tts: PiperTTS, store: SQLiteStore) -> Assistant:
    return Assistant(llm, tts, store, default_system_message=SYSTEM)


@pytest.fixture
def handler(assistant: Assistant):
    return make_handler(assistant)


@pytest.fixture(scope="session")
def speech(tts: PiperTTS) -> Audio:
    """About three seconds of real speech, at 22.05 kHz."""
    return synthesize(tts, "The quick brown fox jumps over the lazy dog, and then it runs away.")


def speech_b64(audio: Audio, fmt: str = "wav", rate: int | None = None) -> str:
    data, _ = encode_bytes(resample(audio, rate or audio.sample_rate), fmt)
    return base64.b64encode(data).decode("ascii")


@pytest.fixture
def reference_b64(speech: Audio) -> str:
    return speech_b64(speech, "wav")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen[Any], timeout: float = 120.0) -> None:
    """Poll `url` until it answers, failing early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            httpx.get(url, timeout=2.0)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


def stop(process: subprocess.Popen[Any]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """A real redis-server on a free local port, for the session."""
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A real redis-server on a free local port, for the block."""
    import shutil

    binary = shutil.which("redis-server")
    assert binary, "redis-server is needed (Debian: apt-get install redis-server; make test installs it)"
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "redis-server did not start"
                time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process)


class AnswerLosingProxy:
    """A TCP proxy to Redis that can lose the answer to one command: Redis runs it, and the connection
    closes as its answer comes back (what a restart under load does to a client, which sends it again)."""

    def __init__(self, redis_url: str):
        host, port = redis_url.removeprefix("redis://").split("/")[0].split(":")
        self._target = (host, int(port))
        self._armed, self._skip = False, 0
        self.lost = asyncio.Event()  # set once an answer was lost

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    def lose_next_answer(self, after: int = 0) -> None:
        """The next command any client sends through the proxy after `after` others runs, but its answer
        never arrives."""
        self._skip, self._armed = after, True
        self.lost.clear()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self._target)
        lose = asyncio.Event()

        async def upstream() -> None:
            while data := await client_reader.read(65536):
                if self._armed and self._skip:
                    self._skip -= 1
                elif self._armed:
                    self._armed = False
                    lose.set()
                server_writer.write(data)
                await server_writer.drain()

        async def downstream() -> None:
            while data := await server_reader.read(65536):
                if lose.is_set():
                    self.lost.set()
                    client_writer.transport.abort()
                    return
                client_writer.write(data)
                await client_writer.drain()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)
        server_writer.close()

    def close(self) -> None:
        self._server.close()


@pytest.fixture
async def lossy_redis(redis_url) -> AsyncIterator[AnswerLosingProxy]:
    """An AnswerLosingProxy in front of the session's Redis."""
    proxy = AnswerLosingProxy(redis_url)
    yield proxy
    proxy.close()


def _llama_cpp_server(*options: str) -> Iterator[str]:
    """llama-cpp-python's own OpenAI-compatible server, serving the embedded GGUF on a free port."""
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(default_model_path())]
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/v1/models", process)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(process)


@pytest.fixture(scope="session")
def llama_server() -> Iterator[str]:
    """llama-cpp-python's server with the GGUF's own chat template."""
    yield from _llama_cpp_server()


@pytest.fixture(scope="session")
def llama_tools_server() -> Iterator[str]:
    """llama-cpp-python's server with its function-calling chat format: with tool_choice "auto" the model itself
    chooses between a function and a message (under a grammar), as a function-calling LLM server does."""
    yield from _llama_cpp_server("--chat_format", "chatml-function-calling")


async def run_job(handler, **fields: Any) -> dict[str, Any]:
    return await handler({"id": "test", "input": fields})


def pcm16_samples(b64: str):
    import numpy as np

    return np.frombuffer(base64.b64decode(b64), dtype="<i2")


@pytest.fixture(scope="session")
def question(tts: PiperTTS) -> bytes:
    """The realtime tests' spoken question, as pcm16 at 24 kHz."""
    from tests.realtime_client import QUESTION, pcm

    return pcm(synthesize(tts, QUESTION))


@pytest.fixture(scope="session")
def interruption(tts: PiperTTS) -> bytes:
    """What the realtime tests say over a reply, as pcm16 at 24 kHz."""
    from tests.realtime_client import INTERRUPTION, pcm

    return pcm(synthesize(tts, INTERRUPTION))
