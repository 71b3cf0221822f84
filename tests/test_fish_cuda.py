"""The Fish engine on a GPU: the captured frame step (CUDA graphs, with and without compilation) gives
the greedy codes of the eager step, nothing recompiles once the engine has warmed up, and 16 streams
run at once. Skipped without CUDA (CI has none).

It runs as it is on a GPU machine with PyTorch, tokenizers and safetensors, without the rest of the
project's dependencies (the suite's conftest is not needed):

    PYTHONPATH=src python3 -m pytest --noconftest -q tests/test_fish_cuda.py     # or: python3 tests/test_fish_cuda.py
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

torch = pytest.importorskip("torch", reason="the Fish engine needs the `fish` extra (torch)")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from fishvoice.fish.engine import FishEngine  # noqa: E402
from fishvoice.fish.generate import Sampling  # noqa: E402
from fishvoice.fish.prompt import build_prompt  # noqa: E402
from fishvoice.fish.scheduler import FrameRequest  # noqa: E402
from tests.fish_tiny import write_checkpoint, write_codec  # noqa: E402

GREEDY = Sampling(top_k=1)
TEXTS = [
    "Hello world.",
    "This is a tiny voice test.",
    "Hello.",
    "system user assistant",
    "Text Speech. Hello world.",
    "world",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cuda") / "tiny-s2"
    write_checkpoint(path, "s2-pro", seed=5, talkative=True)
    write_codec(path, seed=6, quantizer_layers=2, window=8)
    return path


def greedy_codes(engine: FishEngine) -> list[list[list[int]]]:
    """Six requests at once, joining together and leaving at different frames: their codes."""
    requests = [
        FrameRequest(build_prompt(engine.tokenizer, 4, text), 20 + 7 * i, GREEDY) for i, text in enumerate(TEXTS)
    ]
    results: list[list[list[int]]] = [[] for _ in requests]

    def run(index: int) -> None:
        results[index] = [frame.tolist() for frame in engine.scheduler.submit(requests[index])]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return results


def test_captured_steps_give_the_greedy_codes_of_the_eager_step(checkpoint):
    codes = {}
    for name, options in {"eager": {"cuda_graphs": False}, "graphs": {}, "compiled": {"compile": True}}.items():
        engine = FishEngine.load(checkpoint, device="cuda", dtype="float32", max_concurrency=8, **options)
        try:
            codes[name] = greedy_codes(engine)
            if name != "eager":
                assert engine.stats()["graph_replays"] == engine.stats()["steps"] > 0
        finally:
            engine.close()
    assert [len(c) for c in codes["eager"]] == [19 + 7 * i for i in range(len(TEXTS))]
    assert codes["graphs"] == codes["eager"]
    assert codes["compiled"] == codes["eager"]


def test_nothing_recompiles_after_warm_up_and_sixteen_streams_run_at_once(checkpoint):
    import torch._dynamo

    engine = FishEngine.load(checkpoint, device="cuda", compile=True, max_concurrency=16)  # bf16, as served
    try:
        compiled = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        audio: list[list] = [[] for _ in range(16)]

        def speak(index: int) -> None:
            audio[index] = list(engine.stream(TEXTS[index % len(TEXTS)], None, Sampling(seed=index)))

        threads = [threading.Thread(target=speak, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        stats = engine.stats()
        assert (
            torch._dynamo.utils.counters["stats"]["unique_graphs"] == compiled
        )  # every step replayed a captured graph
        assert stats["graph_replays"] == stats["steps"]
        assert all(chunks for chunks in audio), "a stream produced no audio"
        frames = sum(sum(len(c) for c in chunks) for chunks in audio) // 2048
        assert stats["steps"] < frames / 4  # the streams were decoded together, not one after another
        assert all(bool(torch.isfinite(torch.from_numpy(c)).all()) for chunks in audio for c in chunks)
    finally:
        engine.close()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "--noconftest", "-q"]))
