"""Prometheus metrics of the attestation service (one registry per app). Labels are bounded: the
route is one of the fixed attestation types or a fixed word, never the raw request path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    """What ``/metrics`` exposes: requests, verdicts, latency, collateral fetches and cache age."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "attest_requests",
            "HTTP requests answered, by endpoint and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.verdicts = Counter(
            "attest_verdicts",
            "Attestation outcomes by route and result (issued, draft, denied, invalid-quote, "
            "bad-request, collateral-unavailable) and TCB status (empty when the quote did not verify).",
            ["route", "result", "tcb_status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "attest_request_duration_seconds",
            "Time to answer a request, by endpoint.",
            ["endpoint"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.collateral_fetches = Counter(
            "attest_collateral_fetches",
            "Collateral fetched from the PCCS (cache misses), by outcome (ok, error).",
            ["outcome"],
            registry=self.registry,
        )
        self.collateral_age = Gauge(
            "attest_collateral_cache_age_seconds",
            "Age of the oldest cached collateral entry (0 when the cache is empty or collateral is a file).",
            registry=self.registry,
        )
        self.collateral_entries = Gauge(
            "attest_collateral_cache_entries",
            "Platforms whose collateral is cached.",
            registry=self.registry,
        )
        self.keys = Gauge(
            "attest_signing_keys_published",
            "Keys in the JWKS (the active one and older ones whose tokens may be alive).",
            registry=self.registry,
        )

        # labelled children by label values: ``labels()`` locks and checks its arguments on every
        # call; the values here come from small fixed sets, so each child is looked up once
        self._children: dict[tuple[object, ...], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def answered(self, endpoint: str, status: int, seconds: float) -> None:
        """One HTTP request answered: ``requests`` and ``duration``."""
        self._child(self.requests, endpoint, str(status)).inc()
        self._child(self.duration, endpoint).observe(seconds)

    def verdict(self, route: str, result: str, tcb_status: str) -> None:
        """One attestation outcome."""
        self._child(self.verdicts, route, result, tcb_status).inc()

    def collateral_fetch(self, outcome: str) -> None:
        """One collateral fetch (a cache miss): ``ok`` or ``error``."""
        self._child(self.collateral_fetches, outcome).inc()

    def render(self, ages: Callable[[], list[float]] | None = None) -> bytes:
        """The Prometheus text exposition (``ages``: current collateral cache ages)."""
        if ages is not None:
            current = ages()
            self.collateral_age.set(max(current, default=0.0))
            self.collateral_entries.set(len(current))
        return generate_latest(self.registry)


__all__ = ["Metrics"]
