"""``bench attest``'s measurement: N concurrent HTTP clients posting one attestation request to an
attestation service for a fixed time; tokens/s, latency percentiles, errors by status, and the
service process's CPU time (so that tokens per CPU-second, "per core", survives a shared machine).

Speaks only HTTP (aiohttp client, keep-alive connections, one per client), so it measures any
MAA-compatible endpoint; the service under test is set up by :mod:`sgx_quote_helper.testing.attest`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .machine import cpu_seconds
from .timing import LatencySamples


@dataclass
class AttestResult:
    """One run: clients, seconds, tokens, errors, latency and the server's CPU seconds."""

    clients: int
    seconds: float
    tokens: int
    errors: dict[str, int] = field(default_factory=dict)
    latency: LatencySamples = field(default_factory=LatencySamples)
    server_cpu_s: float | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_cpu_s(self) -> float | None:
        """Tokens per second of the service's CPU time (one core fully busy = 1 s/s)."""
        if not self.server_cpu_s:
            return None
        return self.tokens / self.server_cpu_s

    def to_dict(self) -> dict[str, Any]:
        per_cpu = self.tokens_per_cpu_s
        return {
            "clients": self.clients,
            "seconds": round(self.seconds, 3),
            "tokens": self.tokens,
            "tokens_per_s": round(self.tokens_per_s, 1),
            "server_cpu_s": None if self.server_cpu_s is None else round(self.server_cpu_s, 3),
            "tokens_per_server_cpu_s": None if per_cpu is None else round(per_cpu, 1),
            "errors": dict(self.errors),
            "latency_us": self.latency.summary().to_dict(),
        }


async def _client(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    deadline: float,
    out: AttestResult,
    errors: Counter[str],
) -> None:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    while True:
        t0 = time.perf_counter_ns()
        if t0 / 1e9 >= deadline:
            return
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                payload = await resp.read()
                ok = resp.status == 200 and payload.startswith(b'{"token":')
                if not ok:
                    errors[f"http-{resp.status}"] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            errors[type(exc).__name__] += 1
            ok = False
        if ok:
            out.tokens += 1
            out.latency.add(time.perf_counter_ns() - t0)


async def run_load(
    url: str, body: bytes, clients: int, seconds: float, *, server_pid: int | None = None,
    ssl_context: ssl.SSLContext | None = None, warmup: float = 0.5,
) -> AttestResult:  # fmt: skip
    """POST ``body`` to ``url`` from ``clients`` connections for ``seconds`` (after ``warmup``)."""
    connector = aiohttp.TCPConnector(limit=clients, ssl=ssl_context if ssl_context is not None else False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        scratch = AttestResult(clients, 0.0, 0)
        warm_deadline = time.perf_counter() + warmup
        await asyncio.gather(
            *(_client(session, url, body, warm_deadline, scratch, Counter()) for _ in range(clients))
        )
        result = AttestResult(clients, 0.0, 0)
        errors: Counter[str] = Counter()
        cpu0 = cpu_seconds(server_pid) if server_pid is not None else None
        start = time.perf_counter()
        await asyncio.gather(
            *(_client(session, url, body, start + seconds, result, errors) for _ in range(clients))
        )
        result.seconds = time.perf_counter() - start
        cpu1 = cpu_seconds(server_pid) if server_pid is not None else None
        if cpu0 is not None and cpu1 is not None:
            result.server_cpu_s = cpu1 - cpu0
        result.errors = dict(errors)
        return result


__all__ = ["AttestResult", "run_load"]
