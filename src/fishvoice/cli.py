"""The `fishvoice` command: `say` (voice only), `chat` (a terminal conversation), `fish quantize`.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import sys
import uuid
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path

import numpy as np
import webvtt
from pydantic import ValidationError

from .audio import MAX_SPEED, MIN_SPEED, SAMPLE_RATES, Audio, ByteFormat, encode_bytes
from .config import Settings
from .contract import DoneEvent, ErrorEvent, Reply, TextEvent, TranscriptEvent, WordTiming, guarded, parse_request
from .errors import FishvoiceError
from .factory import build_assistant, build_tts
from .pipeline import Speak, Words, speak_text, voice_speaker
from .process import prepare_process

_CAPTIONS = (".srt", ".vtt", ".json")
_EXTENSIONS: dict[str, ByteFormat] = {".wav": "wav", ".flac": "flac", ".mp3": "mp3", ".ogg": "opus", ".opus": "opus"}


def _write_audio(samples_b64: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(samples_b64))


def cmd_say(args: argparse.Namespace, settings: Settings) -> int:
    fmt = _EXTENSIONS.get(args.output.suffix.lower())
    if fmt is None:
        raise FishvoiceError(
            "invalid_input", f"output: use one of {', '.join(_EXTENSIONS)} as the file extension", "output"
        )
    if args.words not in (None, "-") and Path(args.words).suffix.lower() not in _CAPTIONS:
        raise FishvoiceError(
            "invalid_input", f"words: use one of {', '.join(_CAPTIONS)} as the file extension", "words"
        )
    text = args.text.strip()
    if not text:
        raise FishvoiceError("invalid_input", "text: must not be empty", "text")
    tts = build_tts(settings)
    speak = voice_speaker(
        tts, None, args.sample_rate, settings.backend_timeout, args.speed, word_timings=args.words is not None
    )
    audio, words = asyncio.run(_say(text, speak, args.sample_rate))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(encode_bytes(audio, fmt)[0])
    print(f"{args.output}: {audio.duration_s:.2f} s at {audio.sample_rate} Hz ({tts.name})")
    if args.words == "-":
        for word in words:
            print(f"{word.start:8.3f} {word.end:8.3f}  {word.word}")
    elif args.words is not None:
        _write_words(words, Path(args.words))
        print(f"{args.words}: {len(words)} words")
    return 0


async def _say(text: str, speak: Speak, sample_rate: int) -> tuple[Audio, list[WordTiming]]:
    """The whole speech of `text`, and its words' timings where the speaker gives them."""
    pieces: list[Audio] = []
    words: list[WordTiming] = []
    async with aclosing(speak_text(text, speak)) as spoken:
        async for piece in spoken:
            if isinstance(piece, Words):
                words += piece.words
            else:
                pieces.append(piece.audio)
    samples = np.concatenate([piece.samples for piece in pieces]) if pieces else np.zeros(0, np.float32)
    return Audio(samples, sample_rate), words


def _write_words(words: list[WordTiming], path: Path) -> None:
    """The words as captions, one a cue (.srt, .vtt), or as JSON (.json)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps([dataclasses.asdict(word) for word in words], indent=1) + "\n", encoding="utf-8")
        return
    captions = webvtt.WebVTT()
    for word in words:
        captions.captions.append(webvtt.Caption(_clock(word.start), _clock(word.end), word.word))
    with path.open("w", encoding="utf-8") as out:
        captions.write(out, format=path.suffix.lower()[1:])


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(seconds, 60)
    return f"{int(minutes // 60):02d}:{int(minutes % 60):02d}:{seconds:06.3f}"


def _speed(value: str) -> float:
    """`--speed`: a number from 0.25 to 4.0 (argparse reports the error)."""
    try:
        speed = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise argparse.ArgumentTypeError(f"must be between {MIN_SPEED} and {MAX_SPEED} (got {value})")
    return speed


def cmd_chat(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_chat(args, settings))


async def _chat(args: argparse.Namespace, settings: Settings) -> int:
    assistant = build_assistant(settings)
    conversation_id = args.conversation_id or f"chat-{uuid.uuid4().hex[:12]}"
    system_audio = base64.b64encode(args.system_audio.read_bytes()).decode() if args.system_audio else None
    print(
        f"conversation {conversation_id}; replies are written to {args.output_dir}/. Ctrl-D or /quit ends.",
        file=sys.stderr,
    )
    speak_in = base64.b64encode(args.speak_in.read_bytes()).decode() if args.speak_in else None
    turn = 0
    while True:
        said: dict[str, str]
        if speak_in and turn == 0:
            said, speak_in = {"user_audio": speak_in}, None  # the first turn is the speech, once
        else:
            try:
                line = input("you> ").strip()
            except EOFError:
                break
            if line in ("/quit", "/exit"):
                break
            if not line:
                continue
            said = {"message": line}
        raw: dict[str, object] = {
            **said,
            "conversation_id": conversation_id,
            "audio_format": "wav",
            "max_tokens": args.max_tokens,
        }
        if args.system and turn == 0:
            raw["system_message"] = args.system
        if system_audio and turn == 0:
            raw["system_audio"] = system_audio
        try:
            request = parse_request(raw)
        except FishvoiceError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            continue
        if request.user_audio is None:  # a spoken turn's prompt comes after what was heard, once
            print("assistant> ", end="", flush=True)
        async with aclosing(guarded(assistant.respond(request), debug=settings.debug)) as events:
            async for event in events:
                if isinstance(event, TranscriptEvent):
                    print(f"(you said: {event.text})\nassistant> ", end="", flush=True)
                elif isinstance(event, TextEvent):
                    print(event.text, end="", flush=True)
                elif isinstance(event, ErrorEvent):
                    print(f"\nerror: {event.error.message}", file=sys.stderr)
                elif isinstance(event, DoneEvent):
                    turn += 1
                    _show_reply(event.response, args.output_dir / f"reply-{turn:03d}.wav")
    await assistant.llm.close()
    return 0


def _show_reply(response: Reply, path: Path) -> None:
    if isinstance(response.audio, str):
        _write_audio(response.audio, path)
    print(f"\n[{path}: {response.duration_s:.1f} s, first audio {response.timings_ms.first_audio} ms]")
    for warning in response.warnings:
        print(f"[warning: {warning}]", file=sys.stderr)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from .server.app import serve

    overrides = {
        k: v
        for k, v in {"host": args.host, "port": args.port, "concurrency": args.concurrency}.items()
        if v is not None
    }
    serve(settings.model_copy(update=overrides))
    return 0


def cmd_client(args: argparse.Namespace, settings: Settings) -> int:
    from .client import run_cli

    return run_cli(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fishvoice", description="A voice assistant: the LLM's reply, spoken.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve RunPod's job API over HTTP with the configured models")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1, FISHVOICE_HOST)")
    serve.add_argument("--port", type=int, help="port (default 8000, FISHVOICE_PORT)")
    serve.add_argument("--concurrency", type=int, help="jobs run at once (FISHVOICE_CONCURRENCY)")
    serve.set_defaults(run=cmd_serve)

    from .client import add_arguments

    client = commands.add_parser(
        "client", help="send a job to fishvoice: our server (--url) or RunPod's cloud (--endpoint)"
    )
    add_arguments(client)
    client.set_defaults(run=cmd_client)

    say = commands.add_parser("say", help="speak a text to an audio file (voice only, no LLM)")
    say.add_argument("text")
    say.add_argument("-o", "--output", type=Path, default=Path("out.wav"), help="file to write (.wav .flac .mp3 .ogg)")
    say.add_argument("--sample-rate", type=int, choices=SAMPLE_RATES, default=44100)
    say.add_argument("--speed", type=_speed, default=1.0, help="speaking rate, 0.25 to 4.0 (pitch kept; default 1)")
    say.add_argument(
        "--words",
        nargs="?",
        const="-",
        metavar="FILE",
        help="when each word is heard: printed, or written to FILE (.srt .vtt .json)",
    )
    say.set_defaults(run=cmd_say)

    chat = commands.add_parser(
        "chat", help="talk with the assistant in the terminal; each reply's audio goes to a file"
    )
    chat.add_argument("--system", help="system message for the conversation")
    chat.add_argument("--system-audio", type=Path, help="reference voice (audio file)")
    chat.add_argument("--conversation-id", help="continue a stored conversation")
    chat.add_argument("--speak-in", type=Path, help="an audio file of speech: the first turn's message (user_audio)")
    chat.add_argument("--max-tokens", type=int, default=256)
    chat.add_argument("--output-dir", type=Path, default=Path("fishvoice-replies"))
    chat.set_defaults(run=cmd_chat)

    fish = commands.add_parser("fish", help="the Fish engine's tools")
    fish_tools = fish.add_subparsers(dest="fish_command", required=True)
    quantize = fish_tools.add_parser(
        "quantize", help="write a checkpoint's int8 copy (weight-only, per output channel) that loads as it is"
    )
    quantize.add_argument("checkpoint", type=Path, help="a Fish Speech checkpoint directory")
    quantize.add_argument("out", type=Path, help="a new directory for the int8 checkpoint")
    quantize.set_defaults(run=cmd_fish_quantize)
    return parser


def cmd_fish_quantize(args: argparse.Namespace, settings: Settings) -> int:
    try:
        from .fish.checkpoints import save_quantized
        from .fish.errors import CheckpointError
    except ImportError as exc:
        raise FishvoiceError("backend_unavailable", f"the Fish engine needs the fish extra: {exc}") from exc
    try:
        weights = save_quantized(args.checkpoint, args.out)
    except CheckpointError as exc:
        raise FishvoiceError("invalid_input", str(exc), "checkpoint") from exc
    print(f"{args.out}: int8 checkpoint ({weights.stat().st_size / 1e6:.1f} MB of weights)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        for error in exc.errors():
            print(f"error: FISHVOICE_{str(error['loc'][0]).upper()}: {error['msg']}", file=sys.stderr)
        return 2
    prepare_process(settings)
    run: Callable[[argparse.Namespace, Settings], int] = args.run
    try:
        return run(args, settings)
    except FishvoiceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
