"""``bench attest``'s measurement: N concurrent HTTP clients posting one attestation request to an
attestation service for a fixed time; tokens/s, latency percentiles, errors by status, and the
service process's CPU time (so that tokens per CPU-second, "per core", survives a shared machine).

Speaks only HTTP (aiohttp client, keep-alive connections, one per client), so it measures any
MAA-compatible endpoint; the service under test is set up by :mod:`sgx_quote_helper.testing.attest`.

:func:`rsa_sign_rate` is the ceiling measured next to each run: RSA-2048 RS256 signatures per
CPU-second in this process. A token costs at least one; ``tokens per service CPU-second`` divided
by it (the token's cost in signatures) moves less with the machine's load than either figure.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

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
    #: RSA-2048 signatures per CPU-second in the bench process, measured just before the run
    rsa_signs_per_cpu_s: float | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_cpu_s(self) -> float | None:
        """Tokens per second of the service's CPU time (one core fully busy = 1 s/s)."""
        if not self.server_cpu_s:
            return None
        return self.tokens / self.server_cpu_s

    @property
    def rsa_signs_per_token(self) -> float | None:
        """Service CPU per token, in RSA-2048 signatures (1.0: the signature alone)."""
        per_cpu = self.tokens_per_cpu_s
        if not per_cpu or not self.rsa_signs_per_cpu_s:
            return None
        return self.rsa_signs_per_cpu_s / per_cpu

    def to_dict(self) -> dict[str, Any]:
        per_cpu = self.tokens_per_cpu_s
        rsa_rate, per_token = self.rsa_signs_per_cpu_s, self.rsa_signs_per_token
        return {
            "clients": self.clients,
            "seconds": round(self.seconds, 3),
            "tokens": self.tokens,
            "tokens_per_s": round(self.tokens_per_s, 1),
            "server_cpu_s": None if self.server_cpu_s is None else round(self.server_cpu_s, 3),
            "tokens_per_server_cpu_s": None if per_cpu is None else round(per_cpu, 1),
            "rsa_signs_per_cpu_s": None if rsa_rate is None else round(rsa_rate, 1),
            "cpu_per_token_in_rsa_signs": None if per_token is None else round(per_token, 3),
            "errors": dict(self.errors),
            "latency_us": self.latency.summary().to_dict(),
        }


def rsa_sign_rate(seconds: float = 0.5, *, message_size: int = 2048) -> float:
    """RSA-2048 PKCS#1 v1.5 SHA-256 signatures (what RS256 costs) per CPU-second of this process,
    over ``message_size`` bytes (a token's signing input), for about ``seconds`` of CPU."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    message = bytes(message_size)
    pad, alg = padding.PKCS1v15(), hashes.SHA256()
    key.sign(message, pad, alg)
    n = 0
    start = time.process_time()
    while True:
        for _ in range(20):
            key.sign(message, pad, alg)
        n += 20
        used = time.process_time() - start
        if used >= seconds:
            return n / used


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


__all__ = ["AttestResult", "rsa_sign_rate", "run_load"]
