"""The PCCS as Intel's QCNL (the quote provider library's network layer) calls it, at the HTTP level.

Every request below is the exact string QCNL builds, restated from Intel's source
(SGXDataCenterAttestationPrimitives ``QuoteGeneration/qcnl/certification_service.cpp``, DCAP 1.23,
line numbers of that file): hex is upper case (``qcnl_util.cpp`` convert_value_to_ascii), the PCE SVN
and PCE ID are the bytes of the little-endian u16s, a missing encrypted PPID is 384 zero bytes, and
``customParameter`` is the caller's base64 with ``+ / =`` escaped. The requests are sent byte for byte
(no client-side re-quoting) for ``"pccs_api_version": "3.0"`` and ``"3.1"``, against the simulated
PCCS directly and through a caching PCCS whose upstream is that simulated PCCS on loopback, cold (the
cache empty: the caching PCCS goes upstream) and warm (served from the cache, no upstream request).
What QCNL collects is then handed to our verifier, as QvL would get it, and must verify.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
from cryptography import x509
from yarl import URL

from sgx_quote_helper.abi.quote import Quote
from sgx_quote_helper.pccs.app import HttpGetter, make_app
from sgx_quote_helper.pccs.cache import CachingSource, CollateralCache, UpstreamReply
from sgx_quote_helper.pccs.limits import RateLimiter
from sgx_quote_helper.pccs.store import SimulatedStore
from sgx_quote_helper.sim import collateral as C
from sgx_quote_helper.sim import pki
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.verify.chain import TrustedRoot
from sgx_quote_helper.verify.collateral import crl_to_der, from_pcs_responses
from sgx_quote_helper.verify.verifier import Verifier

from .pccs_fakes import Clock, app_in_thread, serving
from .test_pccs_store import FMSPC_B, Sim, _quote

CUSTOM_RAW = base64.b64encode(b"\xfb\xff\xfe custom data for ..._with_params").decode()  # has + / =


def custom_param_string(raw: str) -> str:
    """get_custom_param_string (lines 175-185): escape '+', '/', '=' of the base64 text."""
    return "customParameter=" + raw.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")


class Qcnl:
    """The request targets QCNL builds (relative to pccs_url, which ends in ``/sgx/certification/vN/``)."""

    def __init__(self, api_version: str, custom: str | None = None, update: str = "standard") -> None:
        self.api_version = api_version  # "pccs_api_version": "3.0" | "3.1"
        self.custom = custom
        self.update = update  # "tcb_update_type" (qcnl_config.cpp; default "standard")

    def _custom(self, sep: str) -> str:
        return sep + custom_param_string(self.custom) if self.custom else ""

    @staticmethod
    def pckcert(qe_id: bytes, encrypted_ppid: bytes | None, cpusvn: bytes, pcesvn: int, pceid: int) -> str:
        """build_pckcert_options (lines 187-226): qeid, encrypted_ppid (384 zero bytes when QE3 gave
        none, lines 199-203), cpusvn, pcesvn, pceid; no customParameter."""
        enc = encrypted_ppid if encrypted_ppid is not None else bytes(384)
        return (
            f"pckcert?qeid={qe_id.hex().upper()}&encrypted_ppid={enc.hex().upper()}"
            f"&cpusvn={cpusvn.hex().upper()}&pcesvn={pcesvn.to_bytes(2, 'little').hex().upper()}"
            f"&pceid={pceid.to_bytes(2, 'little').hex().upper()}"
        )

    def pckcrl(self, ca: str) -> str:
        """build_pckcrl_options (lines 256-270): &encoding=der only with 3.1 (or PCS)."""
        return f"pckcrl?ca={ca}" + ("&encoding=der" if self.api_version == "3.1" else "") + self._custom("&")

    def tcb(self, fmspc: bytes) -> str:
        """build_tcbinfo_options (lines 272-297)."""
        return f"tcb?fmspc={fmspc.hex().upper()}&update={self.update}" + self._custom("&")

    def qe_identity(self) -> str:
        """build_qeidentity_options (lines 299-317)."""
        return f"qe/identity?update={self.update}" + self._custom("&")

    def root_ca_crl(self, cdp: str) -> str:
        """build_root_ca_crl_options (lines 331-354): 3.0 rootcacrl[?customParameter] (hex text),
        3.1 crl?uri=<CDP, unescaped>[&customParameter] (raw DER)."""
        if self.api_version == "3.0":
            return "rootcacrl" + self._custom("?")
        return f"crl?uri={cdp}" + self._custom("&")


async def _get(base: str, target: str) -> tuple[int, bytes, dict[str, str]]:
    url = URL(base.rstrip("/") + "/sgx/certification/v4/" + target, encoded=True)  # byte for byte
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


class Front:
    """The simulated PCCS, and a caching PCCS in front of it that counts its upstream requests."""

    def __init__(self, sim: Sim, upstream: str, tmp: Path, trust: TrustedRoot | None = None) -> None:
        self.upstream_urls: list[str] = []
        self.http = HttpGetter(timeout=10)

        async def counting(u: str, headers: Any) -> UpstreamReply:
            self.upstream_urls.append(u)
            return await self.http(u, headers)

        self.source = CachingSource(
            CollateralCache(tmp / "front.sqlite"),
            upstream,
            counting,
            Clock(sim.clock.now),
            trust=trust or TrustedRoot.load(sim.root_der),
            limiter=RateLimiter(rate=1000, burst=1000),
        )

    async def close(self) -> None:
        await self.source.drain()
        await self.http.close()
        self.source.cache.close()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Sim:
    return Sim(tmp_path_factory.mktemp("qcnl-sim"))


@pytest.fixture(scope="module")
def simulated(sim: Sim) -> Iterator[str]:
    with app_in_thread(make_app(SimulatedStore([sim.a, sim.b, sim.c], sim.clock))) as base:
        yield base


def _chain(headers: dict[str, str], name: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(unquote(headers[name]).encode())  # QCNL unescape()s it


@pytest.mark.parametrize("api_version", ["3.0", "3.1"])
@pytest.mark.parametrize("which", ["a", "b", "c"])
def test_fresh_node_gets_its_pck_certificate_by_qe_id(
    sim: Sim, simulated: str, api_version: str, which: str
) -> None:
    """QE3 logic passes no encrypted PPID: QCNL sends 768 zero hex digits and the PCCS must find the
    platform by QE ID + PCE ID (the 0xe011 NO_PLATFORM_CERT_DATA of issue 16). Same form in 3.0 and 3.1."""
    platform = {"a": sim.a, "b": sim.b, "c": sim.c}[which]
    ident = platform.identity
    target = Qcnl.pckcert(ident.qe_id, None, ident.cpusvn, ident.pcesvn, ident.pce_id)
    assert "&encrypted_ppid=" + "0" * 768 + "&" in target

    status, body, headers = asyncio.run(_get(simulated, target))
    assert status == 200, body
    assert x509.load_pem_x509_certificate(body) == platform.certs["pck"]
    assert headers["SGX-TCBm"] == C.pck_cert_tcbm(platform) and len(headers["SGX-TCBm"]) == 36
    assert headers["SGX-FMSPC"] == ident.fmspc.hex().upper()
    assert headers["SGX-PCK-Certificate-CA-Type"] == ident.ca
    assert headers["Content-Type"] == "application/x-pem-file"
    assert _chain(headers, "SGX-PCK-Certificate-Issuer-Chain") == [
        platform.certs["pck_ca"],
        platform.certs["root"],
    ]
    # a QE ID nobody has, with the zero placeholder: 404 (QCNL then reports no cert data)
    assert (
        asyncio.run(_get(simulated, Qcnl.pckcert(b"\x77" * 16, None, ident.cpusvn, ident.pcesvn, 0)))[0]
        == 404
    )


def test_pck_certificate_selection_follows_the_raw_tcb(sim: Sim, simulated: str) -> None:
    """Intel's PCK certificate selection: the highest certificate the raw TCB is >= to."""
    ident = sim.a.identity

    def tcbm_for(cpusvn: bytes, pcesvn: int) -> str:
        status, body, headers = asyncio.run(
            _get(simulated, Qcnl.pckcert(ident.qe_id, None, cpusvn, pcesvn, 0))
        )
        assert status == 200, body
        cert = x509.load_pem_x509_certificate(body)
        assert cert.public_key() == sim.a.certs["pck"].public_key()  # same PCK key, another TCB
        return headers["SGX-TCBm"]

    own = C.pck_cert_tcbm(sim.a)
    assert tcbm_for(ident.cpusvn, ident.pcesvn) == own
    assert tcbm_for(bytes([0xFF] * 16), 0xFFFF) == own  # above every level: still the platform's own
    below = bytes([14, 14, 3, 3, 255, 255, 1] + [0] * 9)  # the SWHardeningNeeded level exactly
    assert tcbm_for(below, 13) == C.tcbm(below, 13)
    assert tcbm_for(below, 12) == C.tcbm(bytes([12, 12, 3, 3, 255, 255, 1] + [0] * 9), 11)  # PCESVN lower
    assert tcbm_for(bytes(16), 0) == "00" * 18  # the floor


def _collect(
    base: str, qcnl: Qcnl, quote: bytes, platform: Platform
) -> dict[str, tuple[int, bytes, dict[str, str]]]:
    """What QCNL fetches for one quote and its verification collateral (get_quote_config +
    get_quote_verification_collateral_with_params)."""
    ident = platform.identity
    enc = Quote.from_bytes(quote).certification_data
    eppid = enc.encrypted_ppid().encrypted_ppid if ident.cert_data == "encrypted-ppid" else None
    targets = {
        "pckcert": Qcnl.pckcert(ident.qe_id, eppid, ident.cpusvn, ident.pcesvn, ident.pce_id),
        "pckcrl": qcnl.pckcrl(ident.ca),
        "tcb": qcnl.tcb(ident.fmspc),
        "qe": qcnl.qe_identity(),
        "root": qcnl.root_ca_crl(pki.ROOT_CRL_URL),
    }

    async def run() -> dict[str, tuple[int, bytes, dict[str, str]]]:
        return {k: await _get(base, t) for k, t in targets.items()}

    return asyncio.run(run())


def _check_and_verify(
    sim: Sim, got: dict[str, tuple[int, bytes, dict[str, str]]], api_version: str, quote: bytes
) -> None:
    for name, (status, body, _) in got.items():
        assert status == 200, (name, body[:200])
    _, root_body, root_headers = got["root"]
    _, crl_body, crl_headers = got["pckcrl"]
    assert root_headers["Content-Type"] == "application/pkix-crl"
    if api_version == "3.0":  # hex-encoded DER (rootcacrlService.js, pckcrlService.js)
        assert bytes.fromhex(root_body.decode())[:1] == b"\x30"
        assert bytes.fromhex(crl_body.decode())[:1] == b"\x30"
        assert crl_headers["Content-Type"] == "application/x-pem-file"
    else:  # raw DER (crlService.js; pckcrl&encoding=der)
        assert root_body[:1] == b"\x30" and crl_body[:1] == b"\x30"
        assert crl_headers["Content-Type"] == "application/pkix-crl"
    x509.load_der_x509_crl(crl_to_der(root_body)).is_signature_valid(sim.a.certs["root"].public_key())  # type: ignore[arg-type]
    _, tcb_body, tcb_headers = got["tcb"]
    _, qe_body, qe_headers = got["qe"]
    _, pck_body, pck_headers = got["pckcert"]
    collateral = from_pcs_responses(
        tcb_info_response=tcb_body,
        tcb_info_issuer_chain=tcb_headers["TCB-Info-Issuer-Chain"],
        qe_identity_response=qe_body,
        qe_identity_issuer_chain=qe_headers["SGX-Enclave-Identity-Issuer-Chain"],
        pck_crl=crl_body,
        pck_crl_issuer_chain=crl_headers["SGX-PCK-CRL-Issuer-Chain"],
        root_ca_crl=root_body,
    )
    # setup_quote_config (lines 126-173): cert data = PCK leaf || issuer chain
    pck_chain = pck_body + unquote(pck_headers["SGX-PCK-Certificate-Issuer-Chain"]).encode()
    verdict = Verifier(TrustedRoot.load(sim.root_der)).verify(
        quote, collateral, sim.clock.now, pck_chain=pck_chain
    )
    assert verdict.status == "UpToDate"
    assert verdict.tcb_evaluation_data_number == 17  # tcb_update_type "standard"


@pytest.mark.parametrize("api_version", ["3.0", "3.1"])
def test_qcnl_collects_verifiable_collateral_from_the_simulated_pccs(
    sim: Sim, simulated: str, api_version: str
) -> None:
    qcnl = Qcnl(api_version, custom=CUSTOM_RAW)
    assert "%2B" in custom_param_string(CUSTOM_RAW) and "%3D" in custom_param_string(CUSTOM_RAW)
    for _ in range(2):  # cold, then warm (the store's own re-use of issued documents)
        _check_and_verify(sim, _collect(simulated, qcnl, sim.quote_b, sim.b), api_version, sim.quote_b)


@pytest.mark.parametrize("api_version", ["3.0", "3.1"])
def test_qcnl_through_a_caching_pccs_cold_then_warm(
    sim: Sim, simulated: str, api_version: str, tmp_path: Path
) -> None:
    qcnl = Qcnl(api_version, custom=CUSTOM_RAW)

    async def scenario() -> None:
        front = Front(sim, simulated, tmp_path)
        try:
            async with serving(make_app(front.source)) as base:
                for quote, platform in ((sim.quote_b, sim.b), (sim.quote_a, sim.a)):
                    before = len(front.upstream_urls)
                    cold = await asyncio.to_thread(_collect, base, qcnl, quote, platform)
                    await asyncio.to_thread(_check_and_verify, sim, cold, api_version, quote)
                    assert len(front.upstream_urls) > before  # cold: went upstream
                    asked = len(front.upstream_urls)
                    warm = await asyncio.to_thread(_collect, base, qcnl, quote, platform)
                    await asyncio.to_thread(_check_and_verify, sim, warm, api_version, quote)
                    assert len(front.upstream_urls) == asked  # warm: all from the cache
                    assert {k: v[1] for k, v in warm.items()} == {k: v[1] for k, v in cold.items()}
                # the caching PCCS asked its upstream without QCNL's customParameter
                assert not any("customParameter" in u for u in front.upstream_urls)
        finally:
            await front.close()

    asyncio.run(scenario())


def test_caching_pccs_does_not_cache_what_does_not_chain_to_its_root(
    sim: Sim, simulated: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Default trust is Intel's root: the SIMULATED collateral is served once with a warning and never
    stored (so every request goes upstream again)."""
    qcnl = Qcnl("3.1")

    async def scenario() -> None:
        front = Front(sim, simulated, tmp_path, trust=TrustedRoot.intel())
        try:
            async with serving(make_app(front.source)) as base:
                for _ in range(2):
                    status, _, _ = await _get(base, qcnl.tcb(FMSPC_B))
                    assert status == 200
                assert len(front.upstream_urls) == 2
                assert len(front.source.cache) == 0
        finally:
            await front.close()

    with caplog.at_level(logging.WARNING, logger="sgx_quote_helper.pccs"):
        asyncio.run(scenario())
    assert any(
        "does not end at the trusted root CA; served once, not cached" in r.getMessage()
        for r in caplog.records
    )


def test_attacker_ppid_with_victim_qe_id_does_not_poison_the_victim(
    sim: Sim, simulated: str, tmp_path: Path
) -> None:
    """Issue 13: a request with an attacker's PPID and a victim's QE ID used to overwrite the victim's
    QE-ID entry. The victim (platform B) is seen first; then the attacker (platform D, another PPID
    under the same PKI) pairs its own encrypted PPID with B's QE ID. B's fresh-node lookups (zero PPID)
    must still get B's certificate."""
    victim = sim.b
    attacker = Platform.init(
        sim.tmp / "attacker", cert_data="encrypted-ppid", fmspc=FMSPC_B, pki_from=sim.tmp / "a"
    )
    quote_d = _quote(attacker)

    async def scenario() -> None:
        with app_in_thread(make_app(SimulatedStore([sim.a, victim, attacker], sim.clock))) as up:
            front = Front(sim, up, tmp_path)
            try:
                async with serving(make_app(front.source)) as base:
                    vi, ai = victim.identity, attacker.identity
                    v_eppid = Quote.from_bytes(sim.quote_b).certification_data.encrypted_ppid().encrypted_ppid
                    a_eppid = Quote.from_bytes(quote_d).certification_data.encrypted_ppid().encrypted_ppid
                    ok = await _get(base, Qcnl.pckcert(vi.qe_id, v_eppid, vi.cpusvn, vi.pcesvn, vi.pce_id))
                    assert ok[0] == 200
                    # the attack: attacker's encrypted PPID, victim's QE ID
                    bad = await _get(base, Qcnl.pckcert(vi.qe_id, a_eppid, ai.cpusvn, ai.pcesvn, ai.pce_id))
                    # asked upstream by the PPID only (as of PCS): the attacker gets its own certificate
                    assert bad[0] == 200 and x509.load_pem_x509_certificate(bad[1]) == attacker.certs["pck"]
                    fresh = await _get(base, Qcnl.pckcert(vi.qe_id, None, vi.cpusvn, vi.pcesvn, vi.pce_id))
                    assert fresh[0] == 200
                    assert x509.load_pem_x509_certificate(fresh[1]) == victim.certs["pck"]
                    assert (
                        front.source.cache.bound_ppid(vi.qe_id.hex().upper(), "0000") == vi.ppid.hex().upper()
                    )
            finally:
                await front.close()

    asyncio.run(scenario())


def _registration(platform: Platform, quote: bytes | None, **over: Any) -> dict[str, Any]:
    """The PCK ID retrieval tool's registration body (PLATFORM_REG_SCHEMA of Intel's PCCS)."""
    ident = platform.identity
    eppid = (
        Quote.from_bytes(quote).certification_data.encrypted_ppid().encrypted_ppid if quote else bytes(384)
    )
    body = {
        "qe_id": ident.qe_id.hex(),
        "pce_id": ident.pce_id.to_bytes(2, "little").hex(),
        "cpu_svn": ident.cpusvn.hex(),
        "pce_svn": ident.pcesvn.to_bytes(2, "little").hex(),
        "enc_ppid": eppid.hex(),
    }
    body.update(over)
    return body


async def _post(base: str, version: int, body: Any) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with http.post(
            f"{base}/sgx/certification/v{version}/platforms",
            data=data,
            headers={"Content-Type": "application/json"},
        ) as resp:
            return resp.status, await resp.read()


def test_platform_registration_in_simulated_mode(sim: Sim, simulated: str) -> None:
    async def scenario() -> None:
        for version in (3, 4):
            assert await _post(simulated, version, _registration(sim.b, sim.quote_b)) == (
                200,
                b"Operation successful.",
            )
        assert (await _post(simulated, 4, _registration(sim.a, None)))[0] == 200  # zero PPID: by QE ID
        manifest_only = {
            "qe_id": sim.a.identity.qe_id.hex(),
            "pce_id": "0000",
            "platform_manifest": "ab" * 100,
        }
        assert (await _post(simulated, 4, manifest_only))[0] == 200
        assert (await _post(simulated, 4, _registration(sim.a, None, qe_id="77" * 16)))[0] == 404
        for bad in (b"not json", b"[]", {"pce_id": "0000"}, _registration(sim.a, None, cpu_svn="zz" * 16)):
            assert (await _post(simulated, 4, bad))[0] == 400
        assert (await _post(simulated, 4, b"{" * 70_000))[0] in (400, 413)

    asyncio.run(scenario())


def test_registration_lets_a_caching_pccs_answer_a_fresh_node(
    sim: Sim, simulated: str, tmp_path: Path
) -> None:
    """Caching mode in front of a PCS-like upstream: the retrieval tool registers platform B (its real
    encrypted PPID); then QCNL's zero-PPID requests for B are answered, for the registered raw TCB
    from the cache and for another raw TCB by asking upstream with the bound encrypted PPID."""

    async def scenario() -> None:
        front = Front(sim, simulated, tmp_path)
        try:
            async with serving(make_app(front.source)) as base:
                assert (await _post(base, 4, _registration(sim.b, sim.quote_b)))[0] == 200
                ident = sim.b.identity
                asked = len(front.upstream_urls)
                status, body, _ = await _get(
                    base, Qcnl.pckcert(ident.qe_id, None, ident.cpusvn, ident.pcesvn, 0)
                )
                assert status == 200 and x509.load_pem_x509_certificate(body) == sim.b.certs["pck"]
                assert len(front.upstream_urls) == asked  # from the cache
                lower = bytes([14, 14, 3, 3, 255, 255, 1] + [0] * 9)
                status, body, headers = await _get(base, Qcnl.pckcert(ident.qe_id, None, lower, 13, 0))
                assert status == 200 and headers["SGX-TCBm"] == C.tcbm(lower, 13)
                last = front.upstream_urls[-1]
                assert "encrypted_ppid=" in last and "qeid=" not in last  # PCS-style, by the bound PPID
        finally:
            await front.close()

    asyncio.run(scenario())


def test_every_answer_carries_a_request_id(sim: Sim, simulated: str) -> None:
    """Intel's PCCS (middleware/addRequestId.js): the client's Request-ID echoed, else a new one."""

    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            url = f"{simulated}/sgx/certification/v4/qe/identity"
            async with http.get(url) as resp:
                first = resp.headers["Request-ID"]
            async with http.get(url) as resp:
                assert re.fullmatch(r"[0-9a-f]{32}", first) and resp.headers["Request-ID"] != first
            async with http.get(url, headers={"Request-ID": "qcnl-42"}) as resp:
                assert resp.headers["Request-ID"] == "qcnl-42"
            async with http.get(url + "x", headers={"Request-ID": "bad id\twith junk"}) as resp:
                assert resp.status == 404 and re.fullmatch(r"[0-9a-f]{32}", resp.headers["Request-ID"])

    asyncio.run(scenario())
