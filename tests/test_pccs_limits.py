"""A caching PCCS cannot be run out of memory or made to flood its upstream (issue 13): the attempt
log is bounded in size and age (30,000 distinct unknown keys grow RSS by a few MiB at most, measured
in /proc), identical concurrent misses are one upstream request, and upstream requests are
rate-limited."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sgx_quote_helper.errors import CollateralError
from sgx_quote_helper.pccs.cache import CachingSource, CollateralCache, UpstreamReply
from sgx_quote_helper.pccs.limits import AttemptLog, RateLimiter
from sgx_quote_helper.pccs.resource import parse_target

from .pccs_fakes import PHALA_NOW, Clock


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)  # the clock stands still: every request comes at the same instant
        await asyncio.sleep(0)


def test_attempt_log_is_bounded_in_size_and_age() -> None:
    t = FakeTime()
    log = AttemptLog(max_entries=100, max_age=60, clock=t)
    for i in range(1000):
        log.record(f"/sgx/certification/v4/tcb?fmspc={i:012X}")
    assert len(log) == 100
    assert log.since("/sgx/certification/v4/tcb?fmspc=000000000000") is None  # evicted (oldest)
    assert log.since(f"/sgx/certification/v4/tcb?fmspc={999:012X}") == 0
    t.now += 61
    assert log.since(f"/sgx/certification/v4/tcb?fmspc={999:012X}") is None  # aged out
    assert len(log) == 0


def test_rate_limiter_spaces_requests_and_refuses_a_long_queue() -> None:
    t = FakeTime()
    limiter = RateLimiter(rate=10, burst=5, max_wait=1.0, clock=t, sleep=t.sleep)

    async def scenario() -> None:
        for _ in range(5):
            await limiter.acquire()  # the burst: no waiting
        assert t.slept == []
        for _ in range(10):  # then one every 0.1 s: the tenth waits 1.0 s
            await limiter.acquire()
        assert t.slept == pytest.approx([0.1 * k for k in range(1, 11)])
        with pytest.raises(CollateralError, match="rate limit"):
            await limiter.acquire()  # would wait 1.1 s > max_wait
        t.now += 2.0  # two seconds on, the queue has drained and the bucket refilled
        t.slept.clear()
        await limiter.acquire()
        assert t.slept == []

    asyncio.run(scenario())


def test_identical_concurrent_misses_are_one_upstream_request(tmp_path: Path) -> None:
    calls: list[str] = []

    async def scenario() -> None:
        release = asyncio.Event()

        async def slow(url: str, headers: object) -> UpstreamReply:
            calls.append(url)
            await release.wait()
            return UpstreamReply(404, {}, b"")

        source = CachingSource(
            CollateralCache(tmp_path / "c.sqlite"), "http://127.0.0.1:9", slow, Clock(PHALA_NOW)
        )
        resource = parse_target("/sgx/certification/v4/tcb", "fmspc=00906ED50000")
        assert resource is not None
        waiters = [asyncio.ensure_future(source.get(resource)) for _ in range(50)]
        await asyncio.sleep(0.05)
        release.set()
        lookups = await asyncio.gather(*waiters)
        assert {lk.outcome for lk in lookups} == {"not-found"}
        source.cache.close()

    asyncio.run(scenario())
    assert len(calls) == 1


def test_upstream_requests_go_through_the_rate_limiter(tmp_path: Path) -> None:
    t = FakeTime()
    calls: list[str] = []

    async def scenario() -> None:
        async def getter(url: str, headers: object) -> UpstreamReply:
            calls.append(url)
            return UpstreamReply(404, {}, b"")

        source = CachingSource(
            CollateralCache(tmp_path / "c.sqlite"),
            "http://127.0.0.1:9",
            getter,
            Clock(PHALA_NOW),
            limiter=RateLimiter(rate=2, burst=2, max_wait=0.6, clock=t, sleep=t.sleep),
        )
        outcomes = []
        for i in range(5):  # distinct keys: no coalescing; the bucket admits 2 + one queued 0.5 s
            resource = parse_target("/sgx/certification/v4/tcb", f"fmspc={i:012X}")
            assert resource is not None
            try:
                outcomes.append((await source.get(resource)).outcome)
            except CollateralError:
                outcomes.append("limited")
        source.cache.close()
        assert outcomes == ["not-found"] * 3 + ["limited"] * 2
        assert t.slept == [pytest.approx(0.5)]

    asyncio.run(scenario())
    assert len(calls) == 3


RSS_SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, json, sys
    from datetime import UTC, datetime
    from sgx_quote_helper.pccs.cache import CachingSource, CollateralCache, UpstreamReply
    from sgx_quote_helper.pccs.limits import RateLimiter
    from sgx_quote_helper.pccs.resource import parse_target

    def rss_kib():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    async def getter(url, headers):
        return UpstreamReply(404, {}, b"")

    async def ask(source, n, offset):
        for i in range(offset, offset + n):
            if i % 2:
                r = parse_target("/sgx/certification/v4/tcb", f"fmspc={i:012X}&update=early")
            else:  # pckcert keys are long: a distinct 768-digit encrypted PPID each
                r = parse_target(
                    "/sgx/certification/v4/pckcert",
                    f"qeid={i:032X}&encrypted_ppid={i:0768X}&cpusvn={'0' * 32}&pcesvn=0000&pceid=0000",
                )
            assert (await source.get(r)).outcome == "not-found"

    async def main(n):
        now = datetime(2026, 1, 1, tzinfo=UTC)
        source = CachingSource(
            CollateralCache(sys.argv[2]), "http://127.0.0.1:9", getter, lambda: now,
            limiter=RateLimiter(rate=1e9, burst=10**9),
        )
        await ask(source, 5000, 10**6)  # warm up allocator, caches, sqlite
        gc.collect()
        before = rss_kib()
        await ask(source, n, 0)
        gc.collect()
        after = rss_kib()
        print(json.dumps({"before_kib": before, "after_kib": after, "attempts": len(source.attempts),
                          "cached": len(source.cache)}))

    asyncio.run(main(int(sys.argv[1])))
    """
)


@pytest.mark.slow
def test_30000_distinct_unknown_keys_do_not_grow_rss(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, "30000", str(tmp_path / "rss.sqlite")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result = json.loads(out.stdout)
    grown_mib = (result["after_kib"] - result["before_kib"]) / 1024
    assert result["cached"] == 0 and result["attempts"] <= AttemptLog().max_entries
    assert grown_mib < 3.0, result
