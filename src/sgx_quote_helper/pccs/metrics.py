"""Prometheus metrics of the collateral service (one registry per app, so tests and several apps in
one process never collide). Labels are bounded: endpoint labels come from :attr:`Resource.endpoint`
or a fixed word, never from the raw request path."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    """The counters and histograms ``/metrics`` exposes."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "pccs_requests",
            "HTTP requests answered, by endpoint and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.lookups = Counter(
            "pccs_lookups",
            "Collateral lookups by outcome (hit, stale, miss, refreshed, not-found, simulated).",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.upstream = Counter(
            "pccs_upstream_requests",
            "Requests to the upstream PCS/PCCS by outcome (ok, not-found, error, malformed).",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "pccs_request_duration_seconds",
            "Time to answer a request, by endpoint.",
            ["endpoint"],
            registry=self.registry,
        )

    def track_cache_size(self, size: Callable[[], int]) -> None:
        """Export ``pccs_cache_entries`` (read from ``size`` at each scrape)."""
        gauge = Gauge("pccs_cache_entries", "Entries in the SQLite collateral cache.", registry=self.registry)
        gauge.set_function(lambda: float(size()))

    def upstream_outcome(self, endpoint: str, outcome: str) -> None:
        """Count one upstream request (the ``on_upstream`` hook of the caching source)."""
        self.upstream.labels(endpoint, outcome).inc()

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


__all__ = ["Metrics"]
