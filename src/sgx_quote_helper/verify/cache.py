"""A small thread-safe LRU map for verified collateral, PCK chains, QE reports and keys.

Items are stored with the validity windows they were verified under; the verifier re-checks the
windows against ``now`` on every hit (:func:`within`), so an entry is never used past its window
even when ``now`` moves, and an entry verified at one time is re-verified (and fails with the
precise step) when asked about a time outside it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from datetime import datetime
from typing import Generic, TypeVar

from .chain import Window

V = TypeVar("V")


def within(windows: Iterable[Window], now: datetime) -> bool:
    """``now`` lies inside every window (inclusive or exclusive upper bound as recorded)."""
    return all(lo <= now < hi or (inclusive and now == hi) for lo, hi, inclusive in windows)


class LruCache(Generic[V]):
    """A bounded mapping; the least recently used entry is evicted first. Safe across threads."""

    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: V) -> None:
        if self.maxsize <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


__all__ = ["LruCache", "within"]
