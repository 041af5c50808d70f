"""Benchmark of the collateral service on loopback.

Run: ``python bench/bench_pccs.py [--requests N] [--concurrency C]``.

Serves a simulated platform (one state dir, encrypted-PPID quotes) and, in front of it, a caching
PCCS (SQLite in a temp dir), each on its own event loop in a background thread; an aiohttp client
in the main thread sends N GETs per case with C in flight and prints requests/s and latency
percentiles. Client and servers share one process (and the GIL), so the figures are a lower bound
for a dedicated server. Also times the upstream-answer validation per document kind.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
import timeit
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import aiohttp
from aiohttp import web

from sgx_quote_helper.abi.keyid import AttKeyId
from sgx_quote_helper.abi.quote import Quote
from sgx_quote_helper.engine.simulated import SimulatedEngine
from sgx_quote_helper.pccs.app import HttpGetter, make_app, start
from sgx_quote_helper.pccs.cache import CachingSource, CollateralCache
from sgx_quote_helper.pccs.document import upstream_document
from sgx_quote_helper.pccs.resource import parse_resource
from sgx_quote_helper.pccs.store import SimulatedStore
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.sim.qe import QE_TARGET_INFO


@contextmanager
def in_thread(make: web.Application | Callable[[], web.Application]) -> Iterator[str]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def boot() -> tuple[web.AppRunner, str]:
        app = make if isinstance(make, web.Application) else make()
        return await start(app, "127.0.0.1", 0)

    runner, url = asyncio.run_coroutine_threadsafe(boot(), loop).result(30)
    try:
        yield url
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


async def load(url: str, n: int, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        async with http.get(url) as resp:  # warm up (and fill caches)
            assert resp.status == 200, (resp.status, await resp.text())
            await resp.read()

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                t0 = time.perf_counter()
                async with http.get(url) as resp:
                    await resp.read()
                    assert resp.status == 200
                latencies.append(time.perf_counter() - t0)

        start_t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start_t, latencies


def report(name: str, elapsed: float, latencies: list[float]) -> None:
    q = statistics.quantiles(latencies, n=100)
    print(
        f"{name:34s} {len(latencies) / elapsed:8.0f} req/s   p50 {q[49] * 1e3:6.2f} ms   p99 {q[98] * 1e3:6.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        platform = Platform.init(Path(tmp) / "p", cert_data="encrypted-ppid")
        engine = SimulatedEngine(platform)
        key_id = AttKeyId.ecdsa_p256_qe3()
        engine.init_quote(key_id, True)
        quote = Quote.from_bytes(engine.get_quote(platform.ereport(QE_TARGET_INFO, b"bench"), key_id).quote)
        eppid = quote.certification_data.encrypted_ppid()
        ident = platform.identity
        fmspc = ident.fmspc.hex().upper()
        pck = (
            f"/sgx/certification/v4/pckcert?encrypted_ppid={eppid.encrypted_ppid.hex()}"
            f"&cpusvn={ident.cpusvn.hex()}&pcesvn={ident.pcesvn.to_bytes(2, 'little').hex()}&pceid=0000"
        )
        paths = {
            "healthz": "/healthz",
            "tcb": f"/sgx/certification/v4/tcb?fmspc={fmspc}",
            "pckcrl (der)": "/sgx/certification/v4/pckcrl?ca=processor&encoding=der",
            "pckcert (type 3)": pck,
        }
        store = SimulatedStore([platform], lambda: datetime.now(UTC))
        with in_thread(make_app(store)) as sim_url:

            def caching_app() -> web.Application:
                source = CachingSource(
                    CollateralCache(Path(tmp) / "cache.sqlite"),
                    sim_url,
                    HttpGetter(),
                    lambda: datetime.now(UTC),
                )
                return make_app(source)

            with in_thread(caching_app) as cache_url:
                for mode, base in (("simulated", sim_url), ("caching (hits)", cache_url)):
                    for name, path in paths.items():
                        elapsed, lat = asyncio.run(load(base + path, args.requests, args.concurrency))
                        report(f"{mode}: {name}", elapsed, lat)

        # validation cost of upstream answers (what caching mode does once per fetch)
        for name, path in paths.items():
            if name == "healthz":
                continue
            resource = parse_resource(*_split(path))
            assert resource is not None
            doc = asyncio.run(store.get(resource)).document
            assert doc is not None
            headers = dict(doc.headers)
            body = doc.body
            n = 200
            t = (
                min(timeit.repeat(partial(upstream_document, resource, headers, body), number=n, repeat=5))
                / n
            )
            print(f"validate upstream {name:20s} {t * 1e6:8.1f} us")


def _split(path: str) -> tuple[str, list[tuple[str, str]]]:
    p, _, q = path.partition("?")
    return p, [tuple(kv.split("=", 1)) for kv in q.split("&") if kv]  # type: ignore[misc]


if __name__ == "__main__":
    main()
