"""The `fish` voice backend: Fish Speech through our own engine; clones a reference voice.

The engine raises its own errors (fish/errors.py); here they become the API's, code and message."""

from __future__ import annotations

import copy
import dataclasses
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..audio import Audio, resample
from ..errors import ErrorCode, FishvoiceError, is_out_of_memory
from ..fish.errors import FishEngineError, InvalidRequestError
from ..voices import VoiceReference

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
    """Speaks with a FishEngine. Reference voices are encoded once, then served from a cache by content hash."""

    name = "fish"
    can_clone = True

    def __init__(self, engine: FishEngine, sampling: Sampling, cache_size: int = 64):
        self.engine = engine
        self.sampling = sampling
        self.sample_rate = engine.sample_rate
        self.capacity = engine.max_concurrency  # requests the engine decodes together
        self._cache: OrderedDict[str, Tensor] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self.encodes = 0  # references encoded so far (a cache miss each)

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

    def _reference_codes(self, voice: VoiceReference) -> Tensor:
        with self._cache_lock:
            if voice.hash in self._cache:
                self._cache.move_to_end(voice.hash)
                return self._cache[voice.hash]
        codes = self.engine.encode_reference(resample(voice.audio, self.sample_rate).samples)
        with self._cache_lock:
            self.encodes += 1
            self._cache[voice.hash] = codes
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        log.info("encoded reference voice %s… (%d frames)", voice.hash[:12], codes.shape[1])
        return codes
