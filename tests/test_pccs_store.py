"""pccs.store (simulated mode) over real HTTP on loopback: dcap-qvl's ``get_collateral`` fetches from
it and ``verify_with_root_ca`` says UpToDate; our verifier's ``--pccs`` does the same, including a
type-3 (encrypted PPID) platform whose PCK certificate comes from ``pckcert``; documents are
re-signed as time passes; unknown FMSPCs and platforms are 404."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import unquote
from urllib.request import urlopen

import aiohttp
import dcap_qvl
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from sgx_quote_helper.abi.keyid import AttKeyId
from sgx_quote_helper.abi.quote import Quote
from sgx_quote_helper.cli import cli
from sgx_quote_helper.engine.simulated import SimulatedEngine
from sgx_quote_helper.errors import ConfigError
from sgx_quote_helper.pccs.app import make_app
from sgx_quote_helper.pccs.resource import parse_resource
from sgx_quote_helper.pccs.store import SimulatedStore
from sgx_quote_helper.sim import collateral as C
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.sim.qe import QE_TARGET_INFO
from sgx_quote_helper.verify.chain import TrustedRoot
from sgx_quote_helper.verify.tcbinfo import TcbInfo

from .pccs_fakes import Clock, app_in_thread

KEY_ID = AttKeyId.ecdsa_p256_qe3()
FMSPC_B = bytes.fromhex("00906ED50000")
FMSPC_C = bytes.fromhex("00606A000000")


def _quote(platform: Platform) -> bytes:
    engine = SimulatedEngine(platform)
    engine.init_quote(KEY_ID, True)
    report = platform.ereport(QE_TARGET_INFO, b"pccs test", mr_enclave=b"\x21" * 32, mr_signer=b"\x43" * 32)
    return engine.get_quote(report, KEY_ID).quote


class Sim:
    """Three platforms under one SIMULATED PKI (A: PCK chain in quotes; B: encrypted PPID, other FMSPC;
    C: Platform CA), a quote from each, and the root; the store's clock starts at creation + 2 days."""

    def __init__(self, tmp: Path) -> None:
        created = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
        self.a = Platform.init(tmp / "a", now=created)
        self.b = Platform.init(
            tmp / "b", now=created, cert_data="encrypted-ppid", fmspc=FMSPC_B, pki_from=tmp / "a"
        )
        self.c = Platform.init(tmp / "c", now=created, ca="platform", fmspc=FMSPC_C, pki_from=tmp / "a")
        self.quote_a = _quote(self.a)
        self.quote_b = _quote(self.b)
        self.quote_c = _quote(self.c)
        self.root_der = C.root_ca_der(self.a)
        self.clock = Clock(created + timedelta(days=2))
        self.tmp = tmp

    @property
    def now(self) -> int:
        return int(self.clock.now.timestamp())


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Sim:
    return Sim(tmp_path_factory.mktemp("pccs-sim"))


@pytest.fixture(scope="module")
def url(sim: Sim) -> Any:
    store = SimulatedStore([sim.a, sim.b, sim.c], sim.clock)
    with app_in_thread(make_app(store)) as base:
        yield base


def _get(url: str) -> tuple[int, bytes, Any]:
    try:
        with urlopen(url, timeout=10) as resp:
            return resp.status, resp.read(), resp.headers
    except HTTPError as exc:
        return exc.code, exc.read(), exc.headers


def _raw_verify(cert_pem: str, signature: bytes, data: bytes) -> None:
    key = x509.load_pem_x509_certificates(cert_pem.encode())[0].public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    key.verify(der, data, ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("which", ["a", "b", "c"])
def test_dcap_qvl_get_collateral_then_verify_with_root_ca(sim: Sim, url: str, which: str) -> None:
    quote = {"a": sim.quote_a, "b": sim.quote_b, "c": sim.quote_c}[which]

    async def fetch() -> Any:
        return await dcap_qvl.get_collateral(url, quote)

    collateral = asyncio.run(fetch())
    result = dcap_qvl.verify_with_root_ca(quote, collateral, sim.root_der, sim.now)
    assert result.status == "UpToDate"
    # and plain verify (Intel's production root pinned) refuses the SIMULATED chain
    with pytest.raises(Exception):  # noqa: B017  (dcap-qvl raises a plain ValueError/RuntimeError)
        dcap_qvl.verify(quote, collateral, sim.now)


@pytest.mark.parametrize("which", ["a", "b", "c"])
def test_our_verifier_with_pccs(sim: Sim, url: str, which: str) -> None:
    quote_file = sim.tmp / f"quote-{which}.bin"
    quote_file.write_bytes({"a": sim.quote_a, "b": sim.quote_b, "c": sim.quote_c}[which])
    root_file = sim.tmp / "root.der"
    root_file.write_bytes(sim.root_der)
    result = CliRunner().invoke(
        cli,
        [
            "verify",
            str(quote_file),
            "--pccs",
            url,
            "--root-ca",
            str(root_file),
            "--now",
            str(sim.now),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    assert verdict["status"] == "UpToDate"
    if which == "b":
        assert Quote.from_bytes(sim.quote_b).pck_chain_pem is None  # the chain came from /pckcert


def test_documents_are_resigned_as_time_passes(sim: Sim) -> None:
    store = SimulatedStore([sim.a], Clock(sim.clock.now))
    fmspc = sim.a.identity.fmspc.hex()
    with app_in_thread(make_app(store)) as base:
        assert (
            _get(f"{base}/sgx/certification/v4/pckcrl?ca=platform")[0] == 404
        )  # no Platform-CA platform here
        tcb = f"{base}/sgx/certification/v4/tcb?fmspc={fmspc}"
        status, first, headers = _get(tcb)
        assert status == 200
        assert _get(tcb)[1] == first  # stable between re-issues
        store.clock.now += timedelta(days=2)  # type: ignore[attr-defined]
        later = _get(tcb)[1]
        assert later != first
        for body in (first, later):
            obj = json.loads(body)
            text = body.decode().split('"tcbInfo":', 1)[1].rsplit(',"signature"', 1)[0]
            _raw_verify(
                unquote(headers["TCB-Info-Issuer-Chain"]), bytes.fromhex(obj["signature"]), text.encode()
            )
        issue = datetime.fromisoformat(json.loads(later)["tcbInfo"]["issueDate"])
        assert issue > datetime.fromisoformat(json.loads(first)["tcbInfo"]["issueDate"])
        assert datetime.fromisoformat(json.loads(later)["tcbInfo"]["nextUpdate"]) > store.clock.now  # type: ignore[attr-defined]


def test_v3_tcb_is_tcb_info_v2_with_the_v3_header(sim: Sim, url: str) -> None:
    status, body, headers = _get(f"{url}/sgx/certification/v3/tcb?fmspc={sim.a.identity.fmspc.hex()}")
    assert status == 200
    assert "SGX-TCB-Info-Issuer-Chain" in headers and "TCB-Info-Issuer-Chain" not in headers
    text = body.decode().split('"tcbInfo":', 1)[1].rsplit(',"signature"', 1)[0]
    info = TcbInfo.parse(text)
    assert info.version == 2
    _raw_verify(
        unquote(headers["SGX-TCB-Info-Issuer-Chain"]),
        bytes.fromhex(json.loads(body)["signature"]),
        text.encode(),
    )
    # pckcrl as Intel's PCCS answers it: hex text of the DER by default, DER or PEM on request
    der = _get(f"{url}/sgx/certification/v4/pckcrl?ca=processor&encoding=der")[1]
    assert der[:1] == b"\x30"
    assert _get(f"{url}/sgx/certification/v3/pckcrl?ca=processor")[1] == der.hex().encode()
    assert _get(f"{url}/sgx/certification/v3/pckcrl?ca=processor&encoding=pem")[1].startswith(
        b"-----BEGIN X509 CRL-----"
    )


def test_pckcert_headers_and_refusals(sim: Sim, url: str) -> None:
    ident = sim.b.identity
    eppid = Quote.from_bytes(sim.quote_b).certification_data.encrypted_ppid()
    base = f"{url}/sgx/certification/v4/pckcert?cpusvn={ident.cpusvn.hex()}&pcesvn={ident.pcesvn.to_bytes(2, 'little').hex()}&pceid=0000"
    status, body, headers = _get(f"{base}&encrypted_ppid={eppid.encrypted_ppid.hex()}&qeid={'00' * 16}")
    assert status == 200
    assert x509.load_pem_x509_certificate(body) == sim.b.certs["pck"]
    assert headers["SGX-TCBm"] == C.pck_cert_tcbm(sim.b)
    assert headers["SGX-FMSPC"] == FMSPC_B.hex().upper()
    assert headers["SGX-PCK-Certificate-CA-Type"] == "processor"
    chain = x509.load_pem_x509_certificates(unquote(headers["SGX-PCK-Certificate-Issuer-Chain"]).encode())
    assert chain == [sim.b.certs["pck_ca"], sim.b.certs["root"]]
    assert _get(f"{base}&ppid={ident.ppid.hex()}")[0] == 200
    qe_id = Quote.from_bytes(sim.quote_b).header.user_data[:16]
    assert qe_id == ident.qe_id
    assert _get(f"{base}&qeid={qe_id.hex()}")[1] == body  # a "registered" platform, by QE ID alone
    assert _get(f"{base}&qeid={'00' * 16}")[0] == 404
    assert _get(f"{base}&ppid={'00' * 16}")[0] == 404
    assert _get(f"{base}&encrypted_ppid={'01' * 384}")[0] == 404  # not encrypted to any platform
    # a raw TCB at the floor level gets the platform's floor certificate (PCK certificate selection)
    lower = f"{url}/sgx/certification/v4/pckcert?cpusvn={'00' * 16}&pcesvn=0000&pceid=0000&ppid={ident.ppid.hex()}"
    status, floor, headers = _get(lower)
    assert status == 200 and headers["SGX-TCBm"] == "00" * 18
    assert x509.load_pem_x509_certificate(floor).public_key() == sim.b.certs["pck"].public_key()


@pytest.mark.parametrize(
    "path",
    [
        "/sgx/certification/v4/tcb?fmspc=112233445566",
        "/tdx/certification/v4/tcb?fmspc=112233445566",
        "/tdx/certification/v4/tcb?fmspc=00906ED50000&tcbEvaluationDataNumber=99",
        "/tdx/certification/v3/tcb?fmspc=00906ED50000",  # TDX exists in API v4 only
        "/tdx/certification/v4/qve/identity",
        "/sgx/certification/v4/qve/identity",
    ],
)
def test_unknown_collateral_is_404_json(url: str, path: str) -> None:
    status, body, headers = _get(url + path)
    assert status == 404 and headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["error"] == "not-found"


def test_platforms_of_different_pkis_are_refused(sim: Sim, tmp_path: Path) -> None:
    other = Platform.init(tmp_path / "other")
    with pytest.raises(ConfigError):
        SimulatedStore([sim.a, other], sim.clock)
    with pytest.raises(ConfigError):
        SimulatedStore([], sim.clock)


def test_caching_pccs_in_front_of_a_simulated_pccs(sim: Sim, url: str, tmp_path: Path) -> None:
    """Another PCCS as the upstream: a type-3 quote's PCK certificate, TCB Info, QE Identity and CRLs
    all pass through the cache (and come from it the second time)."""
    from sgx_quote_helper.pccs.app import HttpGetter
    from sgx_quote_helper.pccs.cache import CachingSource, CollateralCache, UpstreamReply

    from .pccs_fakes import serving

    urls: list[str] = []

    async def scenario() -> None:
        http = HttpGetter(timeout=10)

        async def counting(u: str, headers: Any) -> UpstreamReply:
            urls.append(u)
            return await http(u, headers)

        source = CachingSource(
            CollateralCache(tmp_path / "c.db"),
            url,
            counting,
            Clock(sim.clock.now),
            trust=TrustedRoot.load(sim.root_der),
        )
        try:
            async with serving(make_app(source)) as front:
                for _ in range(2):
                    collateral = await dcap_qvl.get_collateral(front, sim.quote_b)
                    result = dcap_qvl.verify_with_root_ca(sim.quote_b, collateral, sim.root_der, sim.now)
                    assert result.status == "UpToDate"
                    assert len(urls) == 5  # pckcert, pckcrl, tcb, qe/identity, rootcacrl: once each
                # the PCK certificate was also filed under the QE ID: QCNL-style lookups hit the cache
                ident = sim.b.identity
                by_qeid = (
                    f"{front}/sgx/certification/v4/pckcert?qeid={ident.qe_id.hex()}&cpusvn={ident.cpusvn.hex()}"
                    f"&pcesvn={ident.pcesvn.to_bytes(2, 'little').hex()}&pceid=0000"
                )
                async with aiohttp.ClientSession() as client, client.get(by_qeid) as resp:
                    assert resp.status == 200
                    assert x509.load_pem_x509_certificate(await resp.read()) == sim.b.certs["pck"]
                assert len(urls) == 5
                results = await source.refresh_all()
                assert sorted(results.values()) == ["ok"] * 5  # the QE-ID alias rides on its PPID entry
                assert len(urls) == 10
        finally:
            await http.close()
            source.cache.close()

    asyncio.run(scenario())
    assert any("/pckcert?" in u and "encrypted_ppid=" in u for u in urls)


def test_a_clock_set_back_gets_documents_issued_before_it(sim: Sim) -> None:
    clock = Clock(sim.clock.now)
    store = SimulatedStore([sim.a], clock)
    resource = parse_resource("/sgx/certification/v4/qe/identity", [])
    assert resource is not None
    later = asyncio.run(store.get(resource)).document
    clock.now -= timedelta(hours=5)
    earlier = asyncio.run(store.get(resource)).document
    assert later is not None and earlier is not None and later.issue_date and earlier.issue_date
    assert earlier.issue_date <= clock.now < later.issue_date


def test_crl_by_distribution_point(sim: Sim, url: str) -> None:
    """``crl?uri=`` (what Intel's QCNL asks with "pccs_api_version": "3.1"): raw DER of the CRL the
    distribution point names, escaped or not."""
    from urllib.parse import quote

    from sgx_quote_helper.sim import pki

    root_hex = _get(f"{url}/sgx/certification/v4/rootcacrl")[1]
    root_cdp = sim.a.certs["root"].extensions.get_extension_for_class(x509.CRLDistributionPoints)
    cdp_url = root_cdp.value[0].full_name[0].value
    status, der, headers = _get(f"{url}/sgx/certification/v4/crl?uri={quote(cdp_url, safe='')}")
    assert status == 200 and headers["Content-Type"] == "application/pkix-crl"
    assert x509.load_der_x509_crl(der).issuer == sim.a.certs["root"].subject
    assert x509.load_der_x509_crl(der).public_bytes(Encoding.DER) == bytes.fromhex(root_hex.decode())
    # the PCK CRL's distribution point, appended unescaped (its ? and & are part of the URI)
    status, pck_der, _ = _get(f"{url}/sgx/certification/v3/crl?uri={pki.pck_crl_url('platform')}")
    assert status == 200 and x509.load_der_x509_crl(pck_der).issuer == sim.c.certs["pck_ca"].subject
    assert _get(f"{url}/sgx/certification/v4/crl?uri=https%3A%2F%2Fexample.com%2Fother.crl")[0] == 404
    assert _get(f"{url}/sgx/certification/v4/crl?uri=ftp%3A%2F%2Fexample.com%2Fx.crl")[0] == 400
