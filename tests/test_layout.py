"""The layering DESIGN.md describes, checked on what each package really imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

import fishvoice


def imported_by(module: str) -> set[str]:
    """The fishvoice modules (and pydantic) loaded by importing `module` in a fresh interpreter."""
    code = f"import sys, {module}; print(' '.join(m for m in sys.modules if m.startswith(('fishvoice', 'pydantic'))))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_the_public_surface_is_what_fishvoice_names():
    for name in fishvoice.__all__:
        assert getattr(fishvoice, name) is not None
    with pytest.raises(AttributeError):
        _ = fishvoice.Assistant  # internal: reached through its module only


def test_the_fish_engine_imports_nothing_else_of_fishvoice():
    pytest.importorskip("torch")
    loaded = imported_by("fishvoice.fish.engine")
    assert {m for m in loaded if not m.startswith("fishvoice.fish")} == {"fishvoice"}


@pytest.mark.parametrize("module", ["fishvoice.memory.sqlite", "fishvoice.memory.redis", "fishvoice.llm.openai"])
def test_backends_know_only_their_protocol_the_contract_and_audio(module):
    loaded = imported_by(module)
    edge = {"fishvoice.worker", "fishvoice.server", "fishvoice.config", "fishvoice.assistant", "fishvoice.factory"}
    assert not loaded & edge
    if module.startswith("fishvoice.memory"):
        assert not any(m.startswith("fishvoice.llm") for m in loaded)
