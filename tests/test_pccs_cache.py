"""pccs.cache (caching mode): in front of a fake PCS that serves REAL Intel collateral, over real
HTTP on loopback, with a fake clock. First request goes upstream, later ones don't; the upstream
down means cached answers; expired entries are refetched and stale ones refreshed ahead; malformed
answers and errors are never cached; dcap-qvl fetches and verifies through the cache."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Mapping
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

import aiohttp
import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sgx_quote_helper.errors import CollateralError
from sgx_quote_helper.pccs.app import HttpGetter, make_app
from sgx_quote_helper.pccs.cache import CachingSource, CollateralCache, UpstreamReply
from sgx_quote_helper.pccs.metrics import Metrics
from sgx_quote_helper.pccs.resource import parse_resource

from .conftest import real_dir
from .pccs_fakes import PHALA_FMSPC, PHALA_NOW, Clock, FakePcs, fake_pcs_app, serving

T = TypeVar("T")
TCB = f"/sgx/certification/v4/tcb?fmspc={PHALA_FMSPC}"
QE = "/sgx/certification/v4/qe/identity"
CRL_DER = "/sgx/certification/v4/pckcrl?ca=processor&encoding=der"
CRL_PEM = "/sgx/certification/v4/pckcrl?ca=processor&encoding=pem"
CRL_HEX = "/sgx/certification/v4/pckcrl?ca=processor"
ROOT = "/sgx/certification/v4/rootcacrl"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Env:
    """A fake PCS, our caching PCCS in front of it, and a client session."""

    def __init__(self, tmp: Path, **source_kw: Any) -> None:
        real_dir("phala-sgx-v3-processor")
        self.pcs = FakePcs()
        self.clock = Clock(PHALA_NOW)
        self.db = tmp / "cache.sqlite"
        self.source_kw = source_kw
        self.metrics = Metrics()

    async def __aenter__(self) -> Env:
        self._up = serving(fake_pcs_app(self.pcs))
        self.upstream = await self._up.__aenter__()
        self.getter = HttpGetter(timeout=5)
        self.source = CachingSource(
            CollateralCache(self.db),
            self.upstream,
            self.getter,
            self.clock,
            on_upstream=self.metrics.upstream_outcome,
            **self.source_kw,
        )
        self._me = serving(make_app(self.source, self.metrics))
        self.url = await self._me.__aenter__()
        self.http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.http.close()
        await self._me.__aexit__(None, None, None)
        await self.source.drain()
        await self.getter.close()
        await self.stop_upstream()
        self.source.cache.close()

    async def stop_upstream(self) -> None:
        if self._up is not None:
            await self._up.__aexit__(None, None, None)
            self._up = None  # type: ignore[assignment]

    async def get(
        self, path: str, headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes, Mapping[str, str]]:
        async with self.http.get(self.url + path, headers=headers) as resp:
            return resp.status, await resp.read(), resp.headers


def test_first_request_goes_upstream_later_ones_do_not(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Env(tmp_path) as env:
            c = env.pcs.c
            for path in (TCB, QE, CRL_DER, CRL_PEM, CRL_HEX, ROOT):
                first = await env.get(path)
                second = await env.get(path)
                assert first[0] == second[0] == 200, (path, first[1][:200])
                assert first[1] == second[1]
            assert len(env.pcs.hits) == 6  # one per resource, none for the repeats
            _status, body, headers = await env.get(TCB)
            assert c["tcb_info"].encode() in body and c["tcb_info_signature"].encode() in body
            assert unquote(headers["TCB-Info-Issuer-Chain"]) == c["tcb_info_issuer_chain"]
            assert headers["Content-Type"] == "application/json"
            _, der, h = await env.get(CRL_DER)
            assert der == bytes.fromhex(c["pck_crl"]) and h["Content-Type"] == "application/pkix-crl"
            assert unquote(h["SGX-PCK-CRL-Issuer-Chain"]) == c["pck_crl_issuer_chain"]
            _, pem, _ = await env.get(CRL_PEM)
            assert x509.load_pem_x509_crl(pem).public_bytes(Encoding.DER) == der
            _, hexed, _ = await env.get(CRL_HEX)
            assert hexed == der.hex().encode()  # hex text, as Intel's PCCS answers without encoding=der
            _, root, _ = await env.get(ROOT)
            assert root.decode() == c["root_ca_crl"]  # hex text, as PCCS answers
            assert len(env.pcs.hits) == 6
            metrics = env.metrics.render().decode()
            assert 'pccs_lookups_total{endpoint="sgx/v4/tcb",outcome="hit"} 2.0' in metrics
            assert 'pccs_upstream_requests_total{endpoint="sgx/v4/tcb",outcome="ok"} 1.0' in metrics

    run(scenario())


def test_dcap_qvl_fetches_and_verifies_through_the_cache(tmp_path: Path) -> None:
    quote = (real_dir("phala-sgx-v3-processor") / "quote.bin").read_bytes()
    now = int(PHALA_NOW.timestamp())

    async def scenario() -> None:
        async with Env(tmp_path) as env:
            collateral = await dcap_qvl.get_collateral(env.url, quote)
            result = dcap_qvl.verify(quote, collateral, now)
            assert result.status == "ConfigurationAndSWHardeningNeeded"
            assert sorted(result.advisory_ids) == ["INTEL-SA-00289", "INTEL-SA-00615"]
            hits = len(env.pcs.hits)
            await env.stop_upstream()
            again = await dcap_qvl.get_collateral(env.url, quote)  # all from the cache now
            assert dcap_qvl.verify(quote, again, now).status == "ConfigurationAndSWHardeningNeeded"
            assert len(env.pcs.hits) == hits

    run(scenario())


def test_upstream_down_serves_cached_and_refuses_uncached(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Env(tmp_path) as env:
            _, body, _ = await env.get(TCB)
            await env.stop_upstream()
            assert (await env.get(TCB))[1] == body
            env.clock.now += timedelta(days=2)  # past max_age: stale but valid
            status, again, _ = await env.get(TCB)
            assert status == 200 and again == body
            await env.source.drain()  # the background refresh failed quietly
            assert (await env.get(TCB))[1] == body
            status, err, headers = await env.get(QE)  # never cached
            assert status == 502 and headers["Content-Type"].startswith("application/json")
            assert b"upstream-unavailable" in err

    run(scenario())


def test_stale_entries_refresh_ahead_and_expired_ones_synchronously(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Env(tmp_path) as env:
            await env.get(TCB)
            assert len(env.pcs.hits) == 1
            env.clock.now += timedelta(hours=25)  # stale: served at once, refreshed behind
            assert (await env.get(TCB))[0] == 200
            await env.source.drain()
            assert len(env.pcs.hits) == 2
            assert (await env.get(TCB))[0] == 200  # fresh again: no new request
            assert len(env.pcs.hits) == 2
            env.clock.now = PHALA_NOW + timedelta(days=31)  # past nextUpdate: refetched before answering
            assert (await env.get(TCB))[0] == 200
            assert len(env.pcs.hits) == 3
            resource = parse_resource("/sgx/certification/v4/tcb", [("fmspc", PHALA_FMSPC)])
            assert resource is not None
            entry = env.source.cache.get(resource.key)
            assert entry is not None and entry.fetched_at == env.clock.now

    run(scenario())


@pytest.mark.parametrize(
    ("mode", "path"),
    [
        ("garbage", TCB),
        ("short-signature", TCB),
        ("no-chain", TCB),
        ("wrong-fmspc", TCB),
        ("bad-crl", CRL_DER),
        ("500", TCB),
        ("500", ROOT),
    ],
)
def test_malformed_answers_and_errors_are_not_cached(tmp_path: Path, mode: str, path: str) -> None:
    async def scenario() -> None:
        async with Env(tmp_path) as env:
            env.pcs.mode = mode
            status, _body, headers = await env.get(path)
            assert status == 502 and headers["Content-Type"].startswith("application/json")
            assert len(env.source.cache) == 0
            await env.get(path)
            assert len(env.pcs.hits) == 2  # nothing was cached: asked again
            env.pcs.mode = "ok"
            assert (await env.get(path))[0] == 200
            assert len(env.source.cache) == 1

    run(scenario())


def test_not_found_is_passed_on_and_not_cached(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Env(tmp_path) as env:
            for _ in range(2):
                status, body, _ = await env.get("/sgx/certification/v4/tcb?fmspc=112233445566")
                assert status == 404 and b"not-found" in body
            assert len(env.pcs.hits) == 2 and len(env.source.cache) == 0

    run(scenario())


def test_api_key_is_passed_upstream(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Env(tmp_path, api_key="configured") as env:
            await env.get(TCB)
            await env.get(QE, headers={"Ocp-Apim-Subscription-Key": "from-client"})
            assert env.pcs.api_keys == ["configured", "from-client"]

    run(scenario())


def test_root_crl_falls_back_to_the_distribution_point(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Env(tmp_path) as env:
            env.source.root_ca_crl_url = env.upstream + "/IntelSGXRootCA.der"
            env.pcs.mode = "no-rootcacrl"
            status, body, _ = await env.get(ROOT)
            assert status == 200 and body.decode() == env.pcs.c["root_ca_crl"]
            assert [h.split("?")[0] for h in env.pcs.hits] == [ROOT, "/IntelSGXRootCA.der"]

    run(scenario())


def test_cache_survives_restart_and_refresh_all(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Env(tmp_path) as env:
            for path in (TCB, QE, CRL_DER, ROOT):
                assert (await env.get(path))[0] == 200
            results = await env.source.refresh_all()
            assert sorted(results.values()) == ["ok"] * 4
            assert len(env.pcs.hits) == 8
            assert await env.source.refresh_all(due_only=True) == {}  # all fresh
        async with Env(tmp_path) as env2:  # same db file, new process state
            await env2.stop_upstream()
            for path in (TCB, QE, CRL_DER, ROOT):
                assert (await env2.get(path))[0] == 200
            results = await env2.source.refresh_all()
            assert all(v.startswith("failed") for v in results.values())
            assert (await env2.get(TCB))[0] == 200  # failed refreshes keep the old copy

    run(scenario())


class GatedGetter:
    """A getter that answers only when released, counting calls."""

    def __init__(self, reply: UpstreamReply | None = None) -> None:
        self.calls = 0
        self.started = asyncio.Event()
        self.gate = asyncio.Event()
        self.reply = reply

    async def __call__(self, url: str, headers: Mapping[str, str]) -> UpstreamReply:
        self.calls += 1
        self.started.set()
        await self.gate.wait()
        if self.reply is None:
            raise CollateralError("upstream unreachable")
        return self.reply


def test_concurrent_misses_share_one_upstream_request(tmp_path: Path) -> None:
    from .pccs_fakes import phala_collateral

    c = phala_collateral()
    body = ('{"tcbInfo":' + c["tcb_info"] + ',"signature":"' + c["tcb_info_signature"] + '"}').encode()
    reply = UpstreamReply(200, {"TCB-Info-Issuer-Chain": c["tcb_info_issuer_chain"]}, body)

    async def scenario(getter: GatedGetter, expect_ok: bool) -> None:
        source = CachingSource(
            CollateralCache(tmp_path / f"{expect_ok}.db"), "http://pcs.invalid", getter, Clock(PHALA_NOW)
        )
        resource = parse_resource("/sgx/certification/v4/tcb", [("fmspc", PHALA_FMSPC)])
        assert resource is not None
        tasks = [asyncio.create_task(source.get(resource)) for _ in range(5)]
        await getter.started.wait()
        getter.gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert getter.calls == 1
        if expect_ok:
            assert all(not isinstance(r, BaseException) and r.document is not None for r in results)
        else:
            assert all(isinstance(r, CollateralError) for r in results)

    run(scenario(GatedGetter(reply), True))
    run(scenario(GatedGetter(None), False))


def test_tdx_paths_through_the_cache_with_dcap_qvl(tmp_path: Path) -> None:
    quote = (real_dir("tdx/phala-tdx-v4") / "quote.bin").read_bytes()

    async def scenario() -> None:
        async with Env(tmp_path) as env:
            collateral = await dcap_qvl.get_collateral(env.url, quote)
            result = dcap_qvl.verify(quote, collateral, int(PHALA_NOW.timestamp()))
            assert result.status == "UpToDate"
            paths = {h.split("?")[0] for h in env.pcs.hits}
            assert {"/tdx/certification/v4/tcb", "/tdx/certification/v4/qe/identity"} <= paths
            hits = len(env.pcs.hits)
            await dcap_qvl.get_collateral(env.url, quote)
            assert len(env.pcs.hits) == hits

    run(scenario())


class RecordingGetter:
    """A getter that records URLs and answers from a table (404 otherwise)."""

    def __init__(self, table: dict[str, UpstreamReply]) -> None:
        self.table = table
        self.urls: list[str] = []

    async def __call__(self, url: str, headers: Mapping[str, str]) -> UpstreamReply:
        self.urls.append(url)
        return self.table.get(url, UpstreamReply(404, {}, b""))


def test_intel_pcs_upstream_takes_the_root_crl_from_its_distribution_point(tmp_path: Path) -> None:
    from .pccs_fakes import phala_collateral

    der = bytes.fromhex(phala_collateral()["root_ca_crl"])
    crl_url = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
    getter = RecordingGetter({crl_url: UpstreamReply(200, {}, der)})
    source = CachingSource(
        CollateralCache(tmp_path / "c.db"),
        "https://api.trustedservices.intel.com/sgx/certification/v4/",
        getter,
        Clock(PHALA_NOW),
        api_key="secret",
    )
    resource = parse_resource("/sgx/certification/v4/rootcacrl", [])
    tcb = parse_resource("/sgx/certification/v3/tcb", [("fmspc", PHALA_FMSPC)])
    assert resource is not None and tcb is not None

    async def scenario() -> None:
        lookup = await source.get(resource)
        assert lookup.document is not None and lookup.document.body == der.hex().encode()
        assert getter.urls == [crl_url]  # PCS has no /rootcacrl: not asked
        assert (await source.get(tcb)).outcome == "not-found"
        # base URL normalised; API v3 asks without update=standard
        assert (
            getter.urls[-1]
            == f"https://api.trustedservices.intel.com/sgx/certification/v3/tcb?fmspc={PHALA_FMSPC}"
        )

    run(scenario())


def test_refresh_loop_refreshes_due_entries(tmp_path: Path) -> None:
    from sgx_quote_helper.pccs.app import refresh_loop

    async def scenario() -> None:
        async with Env(tmp_path) as env:
            await env.get(TCB)
            await env.get(QE)
            rounds = 0

            async def fake_sleep(_: float) -> None:
                nonlocal rounds
                rounds += 1
                if rounds == 1:
                    return  # first round: nothing is due yet
                if rounds == 2:
                    env.clock.now += timedelta(hours=25)  # second round: both due
                    return
                raise asyncio.CancelledError

            with pytest.raises(asyncio.CancelledError):
                await refresh_loop(env.source, 60, sleep=fake_sleep)
            assert len(env.pcs.hits) == 4  # 2 first fetches + 2 refreshes in round 2

    run(scenario())


def test_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    from sgx_quote_helper.errors import ConfigError

    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError):
        CollateralCache(bad)


class ReadOnlyCache(CollateralCache):
    def put(self, key: str, document: Any, fetched_at: Any) -> None:
        raise CollateralError("cache: cannot store (read-only test double)")


def test_a_cache_that_cannot_store_still_serves_good_answers(tmp_path: Path) -> None:
    real_dir("phala-sgx-v3-processor")

    async def scenario() -> None:
        pcs = FakePcs()
        async with serving(fake_pcs_app(pcs)) as upstream:
            getter = HttpGetter(timeout=5)
            source = CachingSource(ReadOnlyCache(tmp_path / "ro.db"), upstream, getter, Clock(PHALA_NOW))
            resource = parse_resource("/sgx/certification/v4/qe/identity", [])
            assert resource is not None
            for _ in range(2):
                lookup = await source.get(resource)
                assert lookup.document is not None and lookup.outcome == "miss"
            assert len(pcs.hits) == 2
            await getter.close()

    run(scenario())


def test_a_caller_that_goes_away_does_not_cancel_the_fetch_for_others(tmp_path: Path) -> None:
    from .pccs_fakes import phala_collateral

    c = phala_collateral()
    body = (
        '{"enclaveIdentity":' + c["qe_identity"] + ',"signature":"' + c["qe_identity_signature"] + '"}'
    ).encode()
    getter = GatedGetter(
        UpstreamReply(200, {"SGX-Enclave-Identity-Issuer-Chain": c["qe_identity_issuer_chain"]}, body)
    )
    resource = parse_resource("/sgx/certification/v4/qe/identity", [])
    assert resource is not None

    async def scenario() -> None:
        source = CachingSource(
            CollateralCache(tmp_path / "c.db"), "http://pcs.invalid", getter, Clock(PHALA_NOW)
        )
        first = asyncio.create_task(source.get(resource))
        second = asyncio.create_task(source.get(resource))
        await getter.started.wait()
        first.cancel()
        getter.gate.set()
        lookup = await second
        assert lookup.document is not None and getter.calls == 1
        assert first.cancelled()
        assert (await source.get(resource)).outcome == "hit"

    run(scenario())


def test_our_verifier_fetches_real_collateral_through_the_cache(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sgx_quote_helper.cli import cli

    from .pccs_fakes import app_in_thread, fake_pcs_in_thread

    quote_file = real_dir("phala-sgx-v3-processor") / "quote.bin"
    with fake_pcs_in_thread() as (pcs, upstream):
        source = CachingSource(
            CollateralCache(tmp_path / "c.db"), upstream, HttpGetter(timeout=5), Clock(PHALA_NOW)
        )
        with app_in_thread(make_app(source)) as url:
            for _ in range(2):
                result = CliRunner().invoke(
                    cli,
                    [
                        "verify",
                        str(quote_file),
                        "--pccs",
                        url,
                        "--now",
                        str(int(PHALA_NOW.timestamp())),
                        "--json",
                    ],
                )
                verdict = json.loads(result.stdout)
                assert verdict["status"] == "ConfigurationAndSWHardeningNeeded", result.output
                assert sorted(verdict["advisory_ids"]) == ["INTEL-SA-00289", "INTEL-SA-00615"]
            assert len(pcs.hits) == 4  # pckcrl, tcb, qe/identity, rootcacrl: once each


def test_upstream_requests_in_flight_are_bounded(tmp_path: Path) -> None:
    getter = GatedGetter(UpstreamReply(404, {}, b""))

    async def scenario() -> None:
        source = CachingSource(
            CollateralCache(tmp_path / "c.db"),
            "http://pcs.invalid",
            getter,
            Clock(PHALA_NOW),
            max_upstream_requests=2,
        )
        resources = [parse_resource("/sgx/certification/v4/tcb", [("fmspc", f"{i:012X}")]) for i in range(5)]
        tasks = [asyncio.create_task(source.get(r)) for r in resources if r is not None]
        await getter.started.wait()
        for _ in range(10):  # let every task run as far as it can
            await asyncio.sleep(0)
        assert getter.calls == 2
        getter.gate.set()
        lookups = await asyncio.gather(*tasks)
        assert getter.calls == 5 and all(lk.outcome == "not-found" for lk in lookups)

    run(scenario())


def test_refresh_policy_states() -> None:
    from datetime import datetime

    from sgx_quote_helper.pccs.cache import CacheEntry, RefreshPolicy
    from sgx_quote_helper.pccs.document import Document

    t0 = datetime(2025, 6, 19, tzinfo=UTC)
    doc = Document(b"x", "application/json", (), next_update=t0 + timedelta(days=30), issue_date=t0)
    entry = CacheEntry("k", doc, fetched_at=t0)
    policy = RefreshPolicy()
    assert policy.state(entry, t0 + timedelta(hours=1)) == "fresh"
    assert policy.state(entry, t0 + timedelta(hours=25)) == "stale"  # older than max_age
    late = CacheEntry("k", doc, fetched_at=t0 + timedelta(days=29, hours=1))
    assert policy.state(late, t0 + timedelta(days=29, hours=2)) == "stale"  # within `ahead` of nextUpdate
    assert policy.state(entry, t0 + timedelta(days=30)) == "expired"  # nextUpdate is exclusive


def test_crl_by_distribution_point_through_the_cache(tmp_path: Path) -> None:
    from urllib.parse import quote

    async def scenario() -> None:
        async with Env(tmp_path) as env:
            root_url = env.upstream + "/IntelSGXRootCA.der"
            env.source.root_ca_crl_url = root_url  # the one non-Intel URL crl?uri= may fetch
            path = f"/sgx/certification/v4/crl?uri={quote(root_url, safe='')}"
            status, der, headers = await env.get(path)
            assert status == 200 and headers["Content-Type"] == "application/pkix-crl"
            assert der == bytes.fromhex(env.pcs.c["root_ca_crl"])  # raw DER
            # the fake PCS has no /crl: asked first, then the distribution point itself
            assert [h.split("?")[0] for h in env.pcs.hits] == [
                "/sgx/certification/v4/crl",
                "/IntelSGXRootCA.der",
            ]
            assert (await env.get(path))[1] == der
            assert len(env.pcs.hits) == 2  # from the cache
            # any other URL is never fetched for a client
            evil = env.upstream + "/anything.crl"
            status, _, _ = await env.get(f"/sgx/certification/v4/crl?uri={quote(evil, safe='')}")
            assert status == 404
            assert not any(h.startswith("/anything.crl") for h in env.pcs.hits)

    run(scenario())


@pytest.mark.parametrize(
    ("uri", "allowed"),
    [
        ("https://certificates.trustedservices.intel.com/IntelSGXRootCA.der", True),
        ("https://certificates.trustedservices.intel.com/IntelSGXRootCA.crl", True),
        ("https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=processor&encoding=der", True),
        ("https://x.az.sgxprod.adsdcsp.com/sgx/certification/v3/pckcrl?ca=platform", True),
        ("https://certificates.trustedservices.intel.com.evil.example/IntelSGXRootCA.der", False),
        ("https://evil.example/IntelSGXRootCA.der", False),
        ("http://certificates.trustedservices.intel.com/IntelSGXRootCA.der", False),
        ("https://api.trustedservices.intel.com/sgx/certification/v4/tcb?fmspc=00A067110000", False),
        ("http://127.0.0.1:8080/admin", False),
    ],
)
def test_crl_uri_allow_list(tmp_path: Path, uri: str, allowed: bool) -> None:
    source = CachingSource(
        CollateralCache(tmp_path / "c.db"), "http://pccs.invalid", RecordingGetter({}), Clock(PHALA_NOW)
    )
    assert source.crl_uri_allowed(uri) is allowed
