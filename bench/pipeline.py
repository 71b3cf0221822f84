"""Time to first audio: the streaming pipeline against the sequential one (whole text, then whole speech).

Runs the embedded models (SmolLM2-135M + Piper) on the same prompts in one run and prints, per prompt
and in total, time to first audio for both, their ratio, the real-time factor of the voice, and the
streaming reply's gaps: the silence a listener playing each piece as it comes would hear once the first
audio has started (a piece that comes after the one before has finished playing), which an early first
chunk must not buy.

    python bench/pipeline.py [--rounds 2] [--max-tokens 160] [--voice-in] [--chunks]

With --voice-in each prompt goes in as speech (Piper speaks it, Whisper base hears it): voice-to-voice time,
speech in to first audio out, streaming against sequential (transcribe, whole text, whole speech).
With --chunks each streaming reply's spoken chunks are printed as they come: when, how long, the text.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import re
import statistics
import tempfile
import time
from pathlib import Path

from fishvoice.asr.whisper import WhisperASR
from fishvoice.assistant import Assistant
from fishvoice.audio import encode_bytes
from fishvoice.contract import AudioEvent, DoneEvent, parse_request
from fishvoice.llm.base import Usage
from fishvoice.llm.llama_cpp import LlamaCppLLM
from fishvoice.memory.sqlite import SQLiteStore
from fishvoice.text import normalize_for_speech
from fishvoice.tts.base import synthesize
from fishvoice.tts.piper import PiperTTS

SYSTEM = "You are a storyteller. Answer in four to six short sentences."
PROMPTS = [
    "Tell me a short story about a robot who learns to paint.",
    "Describe a walk through a forest in autumn.",
    "Explain how a lighthouse keeper spends a stormy night.",
    "Tell me about a cat who wants to visit the moon.",
]


def sentences(text: str) -> int:
    return len([s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s])


SPOKEN: dict[str, str] = {}  # prompt -> base64 WAV of it, with --voice-in
SHOW_CHUNKS = False


async def streaming(assistant: Assistant, prompt: str, max_tokens: int) -> tuple[float, float, float, str, float]:
    """(first audio s, total s, audio s, text, gaps s) through the real pipeline."""
    said = {"user_audio": SPOKEN[prompt]} if prompt in SPOKEN else {"message": prompt}
    request = parse_request({**said, "system_message": SYSTEM, "max_tokens": max_tokens, "temperature": 0.3})
    started = time.perf_counter()
    first = None
    played_until, gaps = 0.0, 0.0  # when the pieces so far finish playing, and the silences between them
    async for event in assistant.respond(request):
        if isinstance(event, AudioEvent):
            now = time.perf_counter() - started
            gap = 0.0 if first is None else max(0.0, now - played_until)
            first, gaps = first or now, gaps + gap
            seconds = len(base64.b64decode(event.audio)) / 2 / event.sample_rate  # pcm16: 2 bytes a sample
            if SHOW_CHUNKS:
                print(f"  {now * 1000:6.0f}ms {seconds:5.2f}s gap {gap * 1000:4.0f}ms  {event.text}")
            played_until = max(played_until, now) + seconds
        if isinstance(event, DoneEvent):
            reply = event.response
            return first or 0.0, time.perf_counter() - started, reply.duration_s, reply.text, gaps
    raise RuntimeError("no reply")


async def sequential(
    llm: LlamaCppLLM, tts: PiperTTS, prompt: str, max_tokens: int, asr: WhisperASR | None = None
) -> tuple[float, float, str]:
    """(first audio s, audio s): the whole text first, then the whole speech (after the transcript, by voice)."""
    started = time.perf_counter()
    if asr is not None and prompt in SPOKEN:
        from fishvoice.voices import load_speech

        prompt = (await asyncio.to_thread(asr.transcribe, load_speech(SPOKEN[prompt]))).text
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
    text = "".join(
        [d async for d in llm.stream(messages, temperature=0.3, max_tokens=max_tokens) if not isinstance(d, Usage)]
    )
    audio = await asyncio.to_thread(synthesize, tts, normalize_for_speech(text))
    return time.perf_counter() - started, audio.duration_s, text


async def main() -> None:
    global SHOW_CHUNKS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--voice-in", action="store_true", help="prompts as speech: voice-to-voice time")
    parser.add_argument("--chunks", action="store_true", help="print each streaming reply's spoken chunks")
    args = parser.parse_args()

    llm, tts = LlamaCppLLM(context=2048), PiperTTS()
    asr = WhisperASR() if args.voice_in else None
    if args.voice_in:
        for prompt in PROMPTS:
            SPOKEN[prompt] = base64.b64encode(encode_bytes(synthesize(tts, prompt), "wav")[0]).decode()
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "bench.sqlite3")
        assistant = Assistant(llm, tts, store, default_system_message=SYSTEM, asr=asr)
        await streaming(assistant, "Hello.", 8)  # warm-up: first-call costs out of the figures
        SHOW_CHUNKS = args.chunks
        rows = []
        for _ in range(args.rounds):
            for prompt in PROMPTS:
                seq_first, _, seq_text = await sequential(llm, tts, prompt, args.max_tokens, asr)
                first, total, audio_s, text, gaps = await streaming(assistant, prompt, args.max_tokens)
                rows.append(
                    (prompt, sentences(text), first, seq_first, sentences(seq_text), total / audio_s, audio_s, gaps)
                )

    print(f"{'prompt':44} {'sent':>4} {'stream':>8} {'seq':>8} {'ratio':>6} {'RTF':>5} {'gaps':>7}")
    for prompt, n, first, seq_first, _, rtf, _, gaps in rows:
        print(
            f"{prompt[:44]:44} {n:4d} {first * 1000:7.0f}ms {seq_first * 1000:7.0f}ms"
            f" {first / seq_first:6.3f} {rtf:5.3f} {gaps * 1000:5.0f}ms"
        )
    long = [r for r in rows if r[1] >= 3 and r[4] >= 3]
    for label, subset in (("all replies", rows), ("replies of 3+ sentences", long)):
        if subset:
            first = statistics.median(r[2] for r in subset)
            seq_first = statistics.median(r[3] for r in subset)
            print(
                f"{label}: n={len(subset)} median first audio streaming {first * 1000:.0f} ms,"
                f" sequential {seq_first * 1000:.0f} ms, ratio {first / seq_first:.3f} (goal < 0.333);"
                f" median RTF {statistics.median(r[5] for r in subset):.3f};"
                f" gaps after the first audio: median {statistics.median(r[7] for r in subset) * 1000:.0f} ms,"
                f" most {max(r[7] for r in subset) * 1000:.0f} ms"
            )


if __name__ == "__main__":
    asyncio.run(main())
