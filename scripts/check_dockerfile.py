"""Run a Dockerfile's steps without Docker: its pip installs into a fresh virtual environment, its
COPY lines into a fresh app directory, its ENV, then its CMD (which runs test_input.json).

There is no Docker engine here; this proves the image's Python steps and entry point work.
System package steps (apt-get) are listed and skipped: the host provides their equivalents.

    python scripts/check_dockerfile.py [Dockerfile.cpu]
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL_JOB = {
    "input": {"message": "Say hello.", "max_tokens": 12, "audio_format": "wav", "conversation_id": "docker-check"}
}


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current += line.removesuffix("\\").strip() + " "
        if not line.endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def main() -> int:
    dockerfile = ROOT / (sys.argv[1] if len(sys.argv) > 1 else "Dockerfile.cpu")
    with tempfile.TemporaryDirectory(prefix="dockerfile-check-") as tmp:
        env_dir, app = Path(tmp) / "venv", Path(tmp) / "app"
        venv.create(env_dir, with_pip=True)
        env = {**os.environ, "PATH": f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(env_dir)}
        env.pop("PYTHONPATH", None)
        workdir = app
        for op, args in instructions(dockerfile):
            if op == "WORKDIR":
                workdir = app / args.lstrip("/").removeprefix("app").lstrip("/")
                workdir.mkdir(parents=True, exist_ok=True)
            elif op == "COPY":
                *sources, target = shlex.split(args)
                destination = workdir / target if not target.startswith("/") else app / target.lstrip("/")
                for source in sources:
                    copy = shutil.copytree if (ROOT / source).is_dir() else shutil.copy2
                    copy(
                        ROOT / source,
                        destination / Path(source).name if target.endswith("/") or target == "./" else destination,
                    )
            elif op == "ENV":
                parts = shlex.split(args)
                pairs = parts if all("=" in p for p in parts) else [f"{parts[0]}={' '.join(parts[1:])}"]
                for pair in pairs:
                    key, value = pair.split("=", 1)
                    if key != "PIP_NO_CACHE_DIR":  # an image-size setting; here the wheel cache saves a llama.cpp build
                        env[key] = value.replace("$PATH", env["PATH"])
            elif op == "RUN" and "pip install" in args and "apt-get" not in args:
                print(f"+ {args}", flush=True)
                subprocess.run(args + " -q", shell=True, cwd=workdir, env=env, check=True)
            elif op in ("RUN", "FROM", "ARG"):
                print(f"- skipped {op} {args[:80]}", flush=True)
            elif op == "CMD":
                # The image's own command, on a short job (test_input.json's story takes a while on a CPU).
                command = [*json.loads(args), "--test_input", json.dumps(SMALL_JOB)]
                env["FISHVOICE_STORE"] = str(Path(tmp) / "conversations.sqlite3")
                print(f"+ {' '.join(command)}", flush=True)
                done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
                print(done.stdout[-1500:], done.stderr[-1500:], sep="\n")
                return done.returncode
    print("no CMD in", dockerfile)
    return 1


if __name__ == "__main__":
    sys.exit(main())
