"""Bounds on what clients can make the caching PCCS do upstream.

- :class:`AttemptLog`: when each key was last asked of the upstream, bounded in size and age (an
  LRU of at most ``max_entries`` keys, each forgotten ``max_age`` after it was recorded, kept as a
  16-byte digest whatever the key's length), so any number of distinct unknown keys costs a fixed,
  small amount of memory (under a MiB).
- :class:`RateLimiter`: a token bucket in front of the upstream (``rate`` requests per second,
  ``burst`` at once); a request that would wait longer than ``max_wait`` is refused instead of
  queueing without bound.

Time is a parameter (a monotonic ``clock`` in seconds, an async ``sleep``).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..errors import CollateralError

Monotonic = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass
class AttemptLog:
    """Last upstream attempt per key: at most ``max_entries`` keys, none older than ``max_age`` s."""

    max_entries: int = 4096
    max_age: float = 3600.0
    clock: Monotonic = time.monotonic
    _last: OrderedDict[bytes, float] = field(default_factory=OrderedDict, init=False)

    @staticmethod
    def _digest(key: str) -> bytes:
        return hashlib.blake2b(key.encode(), digest_size=16).digest()

    def record(self, key: str) -> None:
        """Note an attempt for ``key`` now (the oldest keys go once the log is full)."""
        digest = self._digest(key)
        self._last[digest] = self.clock()
        self._last.move_to_end(digest)
        self._expire()

    def since(self, key: str) -> float | None:
        """Seconds since the last attempt for ``key`` (``None``: none remembered)."""
        self._expire()
        last = self._last.get(self._digest(key))
        return None if last is None else self.clock() - last

    def _expire(self) -> None:
        horizon = self.clock() - self.max_age
        while self._last and (
            len(self._last) > self.max_entries or next(iter(self._last.values())) < horizon
        ):
            self._last.popitem(last=False)

    def __len__(self) -> int:
        return len(self._last)


@dataclass
class RateLimiter:
    """A token bucket: ``rate`` upstream requests per second on average, ``burst`` at once."""

    rate: float = 20.0
    burst: int = 40
    max_wait: float = 10.0
    clock: Monotonic = time.monotonic
    sleep: Sleep = asyncio.sleep
    _tokens: float = field(default=0.0, init=False)
    _at: float | None = field(default=None, init=False)

    def _refill(self) -> None:
        now = self.clock()
        if self._at is None:  # first use: a full bucket
            self._tokens, self._at = float(self.burst), now
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now

    async def acquire(self) -> None:
        """Take one token, waiting for it if needed.

        Raises:
            CollateralError: the wait would exceed ``max_wait`` (too many requests queued).
        """
        self._refill()
        self._tokens -= 1.0  # reserve now: later callers queue behind this one
        if self._tokens >= 0:
            return
        wait = -self._tokens / self.rate
        if wait > self.max_wait:
            self._tokens += 1.0
            raise CollateralError(
                f"upstream rate limit ({self.rate:g}/s) reached; try again in a few seconds"
            )
        await self.sleep(wait)


__all__ = ["AttemptLog", "RateLimiter"]
