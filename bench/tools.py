"""What a forced function call costs the embedded LLM (llama.cpp in process): its arguments generated under a
JSON-schema grammar, and the call coming whole (nothing of it reaches the caller before its last token).

The same question is answered freely, freely from the forced call's prompt (the functions described in its
system message), and with a call the model must make (`tool_choice: required`), in turns; prints each one's
median time to its first item, time to its end, time per generated token, and the ratios: the grammar's cost is
the forced call's time per token over the same prompt's free one.

    python bench/tools.py [--rounds 8] [--model PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from contextlib import aclosing

from fishvoice.contract import ChatMessage, Tools, Usage
from fishvoice.llm.llama_cpp import LlamaCppLLM, _with_functions

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather now in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
RUNS = itertools.count()
ASKED: list[ChatMessage] = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "What is the weather in Paris?"},
]


async def one(llm: LlamaCppLLM, tools: Tools | None, messages: list[ChatMessage]) -> tuple[float, float, int]:
    """Seconds to the first item, seconds to the end, tokens generated. A number of its own at the system
    message's start keeps llama.cpp from reusing the last run's prompt: each run evaluates its own."""
    numbered: list[ChatMessage] = [{"role": "system", "content": f"[{next(RUNS)}] {messages[0]['content']}"}]
    started = time.perf_counter()
    first, tokens = 0.0, 0
    reply = llm.stream(numbered + messages[1:], temperature=0.2, max_tokens=48, tools=tools)
    async with aclosing(reply) as items:  # closed (the generation stopped) on any way out
        async for item in items:
            if isinstance(item, Usage):
                tokens = item.completion_tokens
            elif not first:
                first = time.perf_counter() - started
    return first, time.perf_counter() - started, tokens


async def main(rounds: int, model: str | None) -> None:
    llm = LlamaCppLLM(model)
    forced = Tools((WEATHER,), "required")
    described = _with_functions(ASKED, forced)
    cases: dict[str, tuple[Tools | None, list[ChatMessage]]] = {
        "free reply": (None, ASKED),
        "described": (None, described),
        "forced call": (forced, ASKED),
    }
    for tools, messages in cases.values():  # warm: the model's first evaluation, the grammar's first build
        await one(llm, tools, messages)
    runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (tools, messages) in cases.items():
            runs[name].append(await one(llm, tools, messages))
    median = {name: [statistics.median(r[i] for r in results) for i in range(3)] for name, results in runs.items()}
    for name, (first, whole, tokens) in median.items():
        print(f"{name:12s} first item {first * 1000:7.1f} ms  whole {whole * 1000:7.1f} ms  {tokens:4.0f} tokens")
    decode = {name: (whole - first) / max(tokens - 1, 1) for name, (first, whole, tokens) in median.items()}
    # A forced call's first item is its whole: its decoding is what it took past the same prompt's first token.
    _, call_whole, call_tokens = median["forced call"]
    decode["forced call"] = (call_whole - median["described"][0]) / max(call_tokens - 1, 1)
    print("decode ms/token: " + ", ".join(f"{name} {value * 1000:.1f}" for name, value in decode.items()))
    print(
        f"decode per token, forced / described (the grammar's cost): {decode['forced call'] / decode['described']:.2f}x"
    )
    first_ratio = median["forced call"][0] / median["free reply"][0]
    print(f"first item, forced call / free reply: {first_ratio:.2f}x (a call comes whole, its prompt is longer)")
    await llm.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--model", help="a GGUF file (default: the embedded SmolLM2)")
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.model))
