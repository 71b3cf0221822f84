"""A client for RunPod's job API, against RunPod's cloud or our own server; and the `fishvoice client` CLI.

from fishvoice.client import Client
client = Client("http://127.0.0.1:8000")            # or Client.for_runpod(endpoint_id, api_key)
result = client.run_and_wait({"message": "Hello!", "audio_format": "wav"})
print(result["output"]["text"])
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import sys
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

RUNPOD_BASE = "https://api.runpod.ai/v2"
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})


class ClientError(Exception):
    """A call that did not work: unreachable server, refused key, unknown job, failed job, time limit."""


class Client:
    """RunPod's job API: run, runsync, status, stream, cancel, health. Transient errors are retried."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 30.0, retries: int = 3):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        transport = httpx.HTTPTransport(retries=retries)  # retries failed connections
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    @classmethod
    def for_runpod(cls, endpoint_id: str, api_key: str, **options: Any) -> Client:
        return cls(f"{RUNPOD_BASE}/{endpoint_id}", api_key, **options)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, json=body, timeout=timeout or httpx.USE_CLIENT_DEFAULT)
        except httpx.TransportError as exc:
            raise ClientError(f"cannot reach {self.base_url}: {exc}") from exc
        if response.status_code == 401:
            raise ClientError("unauthorized: the API key was refused (check --api-key)")
        try:
            payload: dict[str, Any] = response.json()  # the job API answers JSON objects
        except ValueError:
            raise ClientError(
                f"{method} {path}: HTTP {response.status_code}, not JSON: {response.text[:200]}"
            ) from None
        if response.status_code >= 400:
            raise ClientError(f"{method} {path}: HTTP {response.status_code}: {payload.get('error', payload)}")
        return payload

    def run(self, job_input: dict[str, Any]) -> dict[str, Any]:
        """Queue a job; returns `{"id", "status"}`."""
        return self._call("POST", "/run", {"input": job_input})

    def runsync(self, job_input: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        """Run a job and wait; a job still running when the server stops waiting comes back IN_PROGRESS."""
        return self._call("POST", "/runsync", {"input": job_input}, timeout=timeout)

    def status(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/status/{job_id}")

    def stream(self, job_id: str) -> dict[str, Any]:
        """The events produced since the last call: `{"status", "stream": [{"output": event}, ...]}`."""
        return self._call("GET", f"/stream/{job_id}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/cancel/{job_id}")

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def wait(
        self,
        job_id: str,
        *,
        timeout: float = 300.0,
        interval: float = 0.5,
        on_poll: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll /status until the job ends; ClientError if it has not ended in `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.status(job_id)
            if on_poll:
                on_poll(job)
            if job["status"] in FINAL_STATES:
                return job
            if time.monotonic() > deadline:
                raise ClientError(f"job {job_id} still {job['status']} after {timeout:g} s")
            time.sleep(interval)

    def run_and_wait(self, job_input: dict[str, Any], **options: Any) -> dict[str, Any]:
        return self.wait(self.run(job_input)["id"], **options)

    def events(self, job_id: str, *, timeout: float = 300.0, interval: float = 0.25) -> Iterator[dict[str, Any]]:
        """Yield the job's events as they are produced, polling /stream, until the job ends."""
        deadline = time.monotonic() + timeout
        while True:
            part = self.stream(job_id)
            for item in part.get("stream", []):
                yield item["output"]
            if part["status"] in FINAL_STATES and not part.get("stream"):
                return
            if time.monotonic() > deadline:
                raise ClientError(f"job {job_id} still {part['status']} after {timeout:g} s")
            if not part.get("stream"):
                time.sleep(interval)


# ---- the CLI ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="our server, e.g. http://127.0.0.1:8000")
    target.add_argument("--endpoint", help="a RunPod endpoint id (RunPod's cloud)")
    parser.add_argument("--api-key", help="bearer key (RunPod's API key for --endpoint)")
    said = parser.add_mutually_exclusive_group(required=True)
    said.add_argument("--message")
    said.add_argument("--user-audio", type=Path, help="the message as speech: an audio file, transcribed by the server")
    parser.add_argument("--system")
    parser.add_argument("--system-audio", type=Path, help="reference voice, an audio file")
    parser.add_argument("--reference-text")
    parser.add_argument("--conversation-id")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument("--audio-format", default="wav", choices=["wav", "flac", "mp3", "opus", "pcm16"])
    parser.add_argument("--output-dir", type=Path, default=Path("."))
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--stream", action="store_true", help="poll /stream and write audio as it arrives")
    mode.add_argument("--sync", action="store_true", help="use /runsync")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the job")


def job_input(args: argparse.Namespace) -> dict[str, Any]:
    fields = {
        "message": args.message,
        "system_message": args.system,
        "reference_text": args.reference_text,
        "conversation_id": args.conversation_id,
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
        "audio_format": "pcm16" if args.stream else args.audio_format,
    }
    if args.user_audio:
        fields["user_audio"] = base64.b64encode(args.user_audio.read_bytes()).decode()
    if args.system_audio:
        fields["system_audio"] = base64.b64encode(args.system_audio.read_bytes()).decode()
    return {k: v for k, v in fields.items() if v is not None}


_EXTENSION = {"wav": "wav", "flac": "flac", "mp3": "mp3", "opus": "ogg", "pcm16": "pcm"}


def save(output: dict[str, Any], out_dir: Path, audio_written: Path | None = None) -> Path:
    """Write response.<ext>, response.txt and response.json (audio left out of the JSON)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    audio_path = audio_written
    if audio_path is None and output.get("audio"):
        audio_path = out_dir / f"response.{_EXTENSION[output['audio_format']]}"
        audio_path.write_bytes(base64.b64decode(output["audio"]))
    (out_dir / "response.txt").write_text(output.get("text", "") + "\n")
    summary = {**output, "audio": str(audio_path) if audio_path else None}
    (out_dir / "response.json").write_text(json.dumps(summary, indent=2) + "\n")
    return audio_path or out_dir / "response.txt"


def _progress(started: float) -> Callable[[dict[str, Any]], None]:
    spinner = itertools.cycle("|/-\\")

    def show(job: dict[str, Any]) -> None:
        print(
            f"\r{next(spinner)} {job['status']:<12} {time.monotonic() - started:6.1f} s",
            end="",
            file=sys.stderr,
            flush=True,
        )

    return show


def _streamed(client: Client, job_id: str, args: argparse.Namespace) -> dict[str, Any]:
    """Write PCM chunks into response.wav as they arrive; return the finished job."""
    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / "response.wav"
    writer: wave.Wave_write | None = None
    done: dict[str, Any] | None = None
    with contextlib.ExitStack() as stack:  # the file opens with the first audio event
        for event in client.events(job_id, timeout=args.timeout):
            if event["type"] == "text":
                print(event["text"], end="", flush=True)
            elif event["type"] == "audio":
                if writer is None:
                    writer = stack.enter_context(wave.open(str(path), "wb"))
                    writer.setnchannels(1)
                    writer.setsampwidth(2)
                    writer.setframerate(event["sample_rate"])
                writer.writeframes(base64.b64decode(event["audio"]))
            elif event["type"] in ("done", "error"):
                done = event
    print()
    job = client.status(job_id)
    if done is not None and job["status"] == "COMPLETED":
        save({**job["output"], "audio": None}, args.output_dir, audio_written=path)
    return job


def run_cli(args: argparse.Namespace) -> int:
    if args.endpoint and not args.api_key:
        print("error: --endpoint needs --api-key", file=sys.stderr)
        return 2
    base = args.url or f"{RUNPOD_BASE}/{args.endpoint}"
    try:
        with Client(base, args.api_key) as client:
            if args.sync:
                job = client.runsync(job_input(args), timeout=args.timeout)
                if job["status"] not in FINAL_STATES:
                    job = client.wait(job["id"], timeout=args.timeout, on_poll=_progress(time.monotonic()))
            else:
                submitted = client.run(job_input(args))
                if submitted["status"] in FINAL_STATES:
                    job = submitted
                elif args.stream:
                    job = _streamed(client, submitted["id"], args)
                else:
                    job = client.wait(submitted["id"], timeout=args.timeout, on_poll=_progress(time.monotonic()))
                    print(file=sys.stderr)
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if job["status"] != "COMPLETED":
        print(f"error: job {job['id']} {job['status']}: {job.get('error', '')}", file=sys.stderr)
        return 1
    output = job["output"]
    if "transcript" in output:
        print(f"you said: {output['transcript']['text']}", file=sys.stderr)
    if not args.stream:
        print(output["text"])
        written = save(output, args.output_dir)
    else:
        written = args.output_dir / "response.wav"
    print(f"{written} ({output['duration_s']} s at {output['sample_rate']} Hz)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fishvoice client", description="Send a job to fishvoice (our server or RunPod's cloud)."
    )
    add_arguments(parser)
    return run_cli(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
