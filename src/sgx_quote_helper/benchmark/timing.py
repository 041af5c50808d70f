"""Measurement arithmetic: call rates, latency samples (mergeable across processes), percentiles."""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass


def rate(
    fn: Callable[[], object], seconds: float, *, warmup_calls: int = 5, batch: int = 10
) -> tuple[float, int]:
    """Calls per second of ``fn`` over about ``seconds`` of wall time (after ``warmup_calls``).

    Returns ``(calls_per_second, calls)``; at least one batch is always timed.
    """
    for _ in range(warmup_calls):
        fn()
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            fn()
        n += batch
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start), n


def timed_calls(fn: Callable[[], object], seconds: float, *, warmup_calls: int = 5) -> LatencySamples:
    """Call ``fn`` back to back for ``seconds`` and keep every call's duration."""
    for _ in range(warmup_calls):
        fn()
    samples = LatencySamples()
    clock = time.perf_counter_ns
    deadline = clock() + int(seconds * 1e9)
    while True:
        t0 = clock()
        fn()
        t1 = clock()
        samples.add(t1 - t0)
        if t1 >= deadline:
            return samples


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles (nearest rank) of a set of latencies, in microseconds."""

    count: int
    min_us: float
    mean_us: float
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready, rounded to 0.1 µs."""
        return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def percentile(ordered: array[int] | list[int], fraction: float) -> int:
    """Nearest-rank percentile of an ascending sequence (``fraction`` in [0, 1]); 0 when empty."""
    if not ordered:
        return 0
    index = min(len(ordered) - 1, max(0, int(fraction * len(ordered) + 0.5) - 1))
    return int(ordered[index])


class LatencySamples:
    """Latencies in nanoseconds; cheap to append, to ship between processes and to merge."""

    def __init__(self, values: Iterable[int] = ()) -> None:
        self._ns = array("q", values)

    def __len__(self) -> int:
        return len(self._ns)

    def add(self, nanoseconds: int) -> None:
        """Record one latency."""
        self._ns.append(nanoseconds)

    def to_bytes(self) -> bytes:
        """The raw samples (native int64), for :meth:`from_bytes` in another process."""
        return self._ns.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> LatencySamples:
        """Samples shipped by :meth:`to_bytes`."""
        samples = cls()
        samples._ns.frombytes(data)
        return samples

    def merge(self, other: LatencySamples) -> None:
        """Add all of ``other``'s samples."""
        self._ns.extend(other._ns)

    def summary(self) -> LatencySummary:
        """Percentiles in microseconds (all zero when there are no samples)."""
        ordered = sorted(self._ns)
        n = len(ordered)
        if n == 0:
            return LatencySummary(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        return LatencySummary(
            count=n,
            min_us=ordered[0] / 1e3,
            mean_us=sum(ordered) / n / 1e3,
            p50_us=percentile(ordered, 0.50) / 1e3,
            p90_us=percentile(ordered, 0.90) / 1e3,
            p99_us=percentile(ordered, 0.99) / 1e3,
            max_us=ordered[-1] / 1e3,
        )


__all__ = ["LatencySamples", "LatencySummary", "percentile", "rate", "timed_calls"]
