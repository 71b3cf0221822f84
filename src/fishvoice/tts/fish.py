"""The `fish` voice backend: Fish Speech through our own engine; clones a reference voice.

A reference is encoded once: `prepare` (awaited before speaking) takes its codes from this process's
cache, else from the store every worker shares (by codec and content hash), else encodes them and
stores them there for the others.

The engine raises its own errors (fish/errors.py); here they become the API's, code and message."""

from __future__ import annotations

import copy
import dataclasses
import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..audio import Audio, resample
from ..errors import ErrorCode, FishvoiceError, is_out_of_memory
from ..fish.errors import FishEngineError, InvalidRequestError
from ..threads import run_in_thread
from ..voices import VoiceReference
from .base import VoiceCodeStore

if TYPE_CHECKING:  # annotations only: importing this module needs no torch
    from torch import Tensor

    from ..fish.engine import FishEngine
    from ..fish.sampling import Sampling

log = logging.getLogger(__name__)


def engine_error(exc: FishEngineError) -> FishvoiceError:
    """The API's error for an engine's: a refused request is the caller's to fix; anything else (a
    checkpoint that does not load, an engine shut down, a failed step) means the voice is unavailable."""
    code: ErrorCode = "invalid_input" if isinstance(exc, InvalidRequestError) else "backend_unavailable"
    return FishvoiceError(code, str(exc))


class FishTTS:
    """Speaks with a FishEngine. Reference voices are encoded once, then served from a cache by content hash
    (this process's, and the shared `codes` store's where given; `codec_id` names the codec in its keys)."""

    name = "fish"
    can_clone = True
    renders_markers = True

    def __init__(
        self,
        engine: FishEngine,
        sampling: Sampling,
        cache_size: int = 64,
        *,
        codes: VoiceCodeStore | None = None,
        codec_id: str = "fish",
        stall_s: float = 120.0,
    ):
        self.engine = engine
        self.sampling = sampling
        self.sample_rate = engine.sample_rate
        self.family = engine.model.config.layout  # s1-mini or s2-pro: what a client's `model` names
        self.capacity = engine.max_concurrency  # requests the engine decodes together
        self.codes = codes
        self.codec_id = codec_id
        self._cache: OrderedDict[str, Tensor] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self.encodes = 0  # references encoded here so far (a miss of both caches each)
        self.stall_s = stall_s
        self._stall_logged = False

    async def prepare(self, voice: VoiceReference) -> None:
        """Have `voice`'s codes at hand: from this process, from the shared store, or encoded once and stored."""
        if self._cached(voice.hash) is not None:
            return
        key = f"{self.codec_id}:{voice.hash}"
        data = await self.codes.voice_codes(key) if self.codes is not None else None
        if data is not None:
            try:
                self._remember(voice.hash, codes_from_bytes(data))
                return
            except ValueError as exc:  # written by another version, or damaged: encode afresh
                log.warning("stored codes of voice %s… unreadable (%s); encoding again", voice.hash[:12], exc)
        codes = await run_in_thread(self._reference_codes, voice)
        if self.codes is not None:
            await self.codes.put_voice_codes(key, await run_in_thread(codes_to_bytes, codes))

    def tuned(
        self, *, temperature: float | None = None, top_p: float | None = None, seed: int | None = None
    ) -> FishTTS:
        """This voice with some sampling settings of one request (the rest as configured): same engine,
        same reference cache."""
        tuned = copy.copy(self)
        tuned.sampling = dataclasses.replace(
            self.sampling,
            temperature=self.sampling.temperature if temperature is None else temperature,
            top_p=self.sampling.top_p if top_p is None else top_p,
            seed=self.sampling.seed if seed is None else seed,
        )
        return tuned

    def stream(
        self, text: str, voice: VoiceReference | None = None, stop: threading.Event | None = None
    ) -> Iterator[Audio]:
        reference = (self._reference_codes(voice), voice.reference_text or "") if voice is not None else None
        try:
            for chunk in self.engine.stream(text, reference, self.sampling, stop):
                yield Audio(chunk, self.sample_rate)
        except FishEngineError as exc:
            raise engine_error(exc) from exc
        except Exception as exc:
            if is_out_of_memory(exc):  # outside a frame step (the engine fails those requests itself)
                self.engine.release_memory()
                raise  # the assistant fails the job and asks for a fresh worker
            log.exception("fish voice failed")
            raise FishvoiceError("backend_unavailable", f"the voice failed: {type(exc).__name__}: {exc}") from exc

    def engine_stats(self) -> dict[str, Any]:
        """The engine's totals and load, for /metrics."""
        return self.engine.stats()

    def progress(self) -> dict[str, Any]:
        """The engine's slots, and whether its scheduler still steps (/health). A scheduler stuck inside a
        step (a device call that never returns) cannot be taken back in this process: it is reported, and
        logged, so the worker can be replaced."""
        stats = self.engine.stats()
        busy = stats["running"] + stats["waiting"] > 0
        stalled = busy and stats["since_progress_s"] > self.stall_s
        if stalled and not self._stall_logged:
            log.error("the fish engine has not stepped for %.0f s with requests in it", stats["since_progress_s"])
        self._stall_logged = stalled
        return {
            "slots": stats["slots"],
            "running": stats["running"],
            "waiting": stats["waiting"],
            "since_progress_s": round(stats["since_progress_s"], 3) if busy else 0.0,
            "stalled": stalled,
        }

    def _cached(self, voice_hash: str) -> Tensor | None:
        with self._cache_lock:
            if voice_hash in self._cache:
                self._cache.move_to_end(voice_hash)
                return self._cache[voice_hash]
        return None

    def _remember(self, voice_hash: str, codes: Tensor) -> None:
        with self._cache_lock:
            self._cache[voice_hash] = codes
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _reference_codes(self, voice: VoiceReference) -> Tensor:
        """The codes from this process's cache, else encoded now (a voice `prepare` did not see)."""
        cached = self._cached(voice.hash)
        if cached is not None:
            return cached
        codes = self.engine.encode_reference(resample(voice.audio, self.sample_rate).samples)
        with self._cache_lock:
            self.encodes += 1
        self._remember(voice.hash, codes)
        log.info("encoded reference voice %s… (%d frames)", voice.hash[:12], codes.shape[1])
        return codes


def codes_to_bytes(codes: Tensor) -> bytes:
    """A reference's codes as the store keeps them: a .npy file (shape and dtype with the numbers)."""
    buffer = io.BytesIO()
    np.save(buffer, codes.cpu().numpy(), allow_pickle=False)
    return buffer.getvalue()


def codes_from_bytes(data: bytes) -> Tensor:
    """The codes `codes_to_bytes` wrote; ValueError for anything else."""
    import torch

    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, EOFError, ValueError) as exc:
        raise ValueError(f"not a .npy array: {exc}") from None
    if not isinstance(array, np.ndarray) or array.ndim != 2 or array.dtype.kind not in "iu":
        raise ValueError("not a 2-d integer array")
    return torch.from_numpy(array)
