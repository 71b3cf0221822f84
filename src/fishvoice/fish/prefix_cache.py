"""Prompt prefixes prefilled once: a voice's system turn (its reference text and codes) comes first in
every sentence spoken in that voice, and its keys and values do not depend on what follows. They are
kept here (least recently used first out, within a budget of positions) and copied into a slot's
cache, so the prefill computes only the sentence's own part."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from torch import Tensor

from .model import DualAR

Entry = list[tuple[Tensor, Tensor]]  # per slow-transformer layer: keys, values (kv_heads, positions, head_dim)


class PrefixCache:
    def __init__(self, model: DualAR, max_positions: int):
        self.model, self.max_positions = model, max_positions
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._positions = 0
        self.hits = self.misses = 0

    @staticmethod
    def _key(prefix: Tensor) -> bytes:
        return hashlib.blake2b(prefix.contiguous().cpu().numpy().tobytes(), digest_size=16).digest()

    def restore(self, slot: int, prefix: Tensor) -> bool:
        """Copy the cached keys and values of `prefix` (1 + num_codebooks, P) into `slot`'s first P
        positions; False when it is not cached."""
        entry = self._entries.get(key := self._key(prefix))
        if entry is None:
            self.misses += 1
            return False
        self._entries.move_to_end(key)
        length = prefix.shape[1]
        for cache, (k, v) in zip(self.model.kv_caches(), entry, strict=True):
            cache.k_cache[slot, :, :length] = k
            cache.v_cache[slot, :, :length] = v
        self.hits += 1
        return True

    def store(self, slot: int, prefix: Tensor) -> None:
        """Keep the keys and values of `slot`'s first P positions, just prefilled from `prefix`."""
        length = prefix.shape[1]
        if length > self.max_positions or (key := self._key(prefix)) in self._entries:
            return
        self._entries[key] = [
            (cache.k_cache[slot, :, :length].clone(), cache.v_cache[slot, :, :length].clone())
            for cache in self.model.kv_caches()
        ]
        self._positions += length
        while self._positions > self.max_positions:
            _, evicted = self._entries.popitem(last=False)
            self._positions -= evicted[0][0].shape[1]
