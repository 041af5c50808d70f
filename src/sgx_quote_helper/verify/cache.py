"""A small thread-safe bounded map for verified collateral, PCK chains, QE reports and keys.

Items are stored with the one window inside all the validity windows they were verified under
(:func:`intersect`); the verifier re-checks it against ``now`` on every hit, so an entry is never
used past its window even when ``now`` moves, and an entry verified at one time is re-verified
(and fails with the precise step) when asked about a time outside it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

from .chain import Window

V = TypeVar("V")


def intersect(windows: Iterable[Window]) -> Window:
    """The one window inside all of ``windows`` (exclusive upper bound wins a tie)."""
    ws = list(windows)
    lo = max(w[0] for w in ws)
    hi = min(w[1] for w in ws)
    return (lo, hi, all(w[2] for w in ws if w[1] == hi))


class BoundedCache(Generic[V]):
    """A bounded mapping; the oldest entry is evicted first. Safe across threads (writes locked)."""

    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        #: ``get(key)``: the value or None. Lock-free (a dict read is atomic): the mapping's own
        #: ``get``, called directly (it is on every verification's path)
        self.get: Callable[[Hashable], V | None] = self._data.get

    def put(self, key: Hashable, value: V) -> None:
        if self.maxsize <= 0:
            return
        with self._lock:
            self._data[key] = value
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


__all__ = ["BoundedCache", "intersect"]
