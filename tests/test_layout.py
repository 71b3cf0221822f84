"""The layering docs/ARCHITECTURE.md describes, checked on what each package really imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

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


def sources() -> list[tuple[str, ast.Module]]:
    package = Path(fishvoice.__file__).parent
    return [(str(path.relative_to(package)), ast.parse(path.read_text())) for path in sorted(package.rglob("*.py"))]


def owned_names(scope: ast.AST) -> set[str]:
    """Names an `async with` in `scope` closes on every path: `aclosing(x) as y` (x and y), or `async with x`."""
    names: set[str] = set()
    for node in ast.walk(scope):
        if isinstance(node, ast.AsyncWith):
            for item in node.items:
                managed, target = item.context_expr, item.optional_vars
                if isinstance(managed, ast.Call) and getattr(managed.func, "id", None) == "aclosing":
                    names |= {n.id for n in managed.args if isinstance(n, ast.Name)}
                    names |= {target.id} if isinstance(target, ast.Name) else set()
                elif isinstance(managed, ast.Name):
                    names.add(managed.id)
    return names


def test_every_async_for_iterates_a_stream_its_owner_closes():
    """A bare `async for` over a generator leaves it open when a cancel lands between two items (at any other
    await of the loop's body): its thread and backend stay held until garbage collection. So each is
    `async with aclosing(stream) as items: async for ... in items` (or the stream's own `async with`)."""
    loose = []
    for path, tree in sources():
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        for function in functions:
            owned = owned_names(function)
            loops = [n.iter for n in ast.walk(function) if isinstance(n, ast.AsyncFor)]
            loops += [
                g.iter for n in ast.walk(function) if isinstance(n, ast.comprehension) and n.is_async for g in [n]
            ]
            loose += [f"{path}:{it.lineno}" for it in loops if not (isinstance(it, ast.Name) and it.id in owned)]
    assert not loose, f"async for over a stream nobody closes: {sorted(set(loose))}"


def test_blocking_work_runs_through_run_in_thread():
    """asyncio.to_thread returns to a cancelled caller while its work runs on: a slot the caller held would be
    free while the backend is still busy. threads.run_in_thread waits the work out."""
    found = [
        f"{path}:{node.lineno}"
        for path, tree in sources()
        if path != "threads.py"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in ("to_thread", "run_in_executor")
    ]
    assert not found


def test_streaming_responses_close_their_streams():
    """Starlette's StreamingResponse leaves its body open when the client goes: server/http/responses.py's closes it."""
    found = [
        f"{path}:{node.lineno}"
        for path, tree in sources()
        if path != "server/http/responses.py"
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and node.id == "StreamingResponse"
    ]
    assert not found


FEATURES = ("jobs", "openai", "fish_audio", "realtime", "page")


def fishvoice_imports(path: str, tree: ast.Module) -> set[str]:
    """The fishvoice modules a source file imports, relative imports resolved (`path` is from fishvoice/)."""
    package = ["fishvoice", *Path(path).parent.parts]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found |= {module} | {f"{module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.startswith("fishvoice")}


def test_no_feature_package_of_the_server_imports_another():
    """Each API lives in its own package under server/; what two share lives in server/http/ or below."""
    crossing = []
    for path, tree in sources():
        parts = Path(path).parts
        if parts[0] != "server" or len(parts) < 3:
            continue
        own = parts[1]
        others = {f"fishvoice.server.{f}" for f in (*FEATURES, "app") if f != own}
        crossing += [
            f"{path} imports {name}"
            for name in fishvoice_imports(path, tree)
            if any(name == other or name.startswith(other + ".") for other in others)
        ]
    assert not crossing, crossing
    assert {p for p, _ in sources() if p.startswith("server/") and p.count("/") == 1} == {
        "server/__init__.py",
        "server/app.py",
    }


def test_modules_classes_and_functions_stay_short():
    """A module outside the Fish engine holds at most 500 lines, a class 250 and a function 60: past that,
    a piece has more than one job and wants splitting."""
    long = []
    for path, tree in sources():
        lines = max((getattr(node, "end_lineno", 0) or 0) for node in ast.walk(tree))
        if lines > 500 and not path.startswith("fish/"):
            long.append(f"{path}: {lines} lines")
        for node in ast.walk(tree):
            limit = 250 if isinstance(node, ast.ClassDef) else 60
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > limit:
                    long.append(f"{path}: {node.name} {size} lines")
    assert not long, long
