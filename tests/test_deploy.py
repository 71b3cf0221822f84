"""The RunPod image and Hub files: the JSON parses, the Hub's test inputs pass our validation, and the
CPU Dockerfile's steps build a working worker in a fresh virtual environment (no Docker engine here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fishvoice.contract import parse_request

from .conftest import ROOT

pytestmark = pytest.mark.model  # loads models (or starts a server that does)


def test_hub_json_describes_a_serverless_worker_with_its_settings():
    hub = json.loads((ROOT / ".runpod" / "hub.json").read_text())
    assert hub["type"] == "serverless" and hub["title"] and hub["config"]["runsOn"] in ("GPU", "CPU")
    keys = {entry["key"] for entry in hub["config"]["env"]}
    assert {"FISHVOICE_VOICE", "FISHVOICE_FISH_CHECKPOINT", "FISHVOICE_STORE"} <= keys
    from fishvoice.config import Settings

    assert all(key.removeprefix("FISHVOICE_").lower() in Settings.model_fields for key in keys)


def test_hub_tests_inputs_pass_our_validation():
    tests = json.loads((ROOT / ".runpod" / "tests.json").read_text())["tests"]
    assert len(tests) >= 2
    for case in tests:
        assert parse_request(case["input"]).message and case["name"] and case["timeout"] > 0


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cpu"])
def test_dockerfiles_copy_what_exists_and_start_the_handler(dockerfile):
    sys.path.insert(0, str(ROOT / "scripts"))
    from check_dockerfile import instructions

    steps = instructions(ROOT / dockerfile)
    for op, args in steps:
        if op == "COPY" and not args.startswith("--"):
            assert all((ROOT / source).exists() for source in args.split()[:-1]), args
    assert steps[-1] == ("CMD", '["python", "-u", "handler.py"]')


def test_cpu_dockerfile_steps_build_a_worker_that_runs_a_job():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_dockerfile.py"), "Dockerfile.cpu"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Local testing complete" in done.stdout
