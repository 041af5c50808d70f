"""TCB baselines (issue 13): PCS v4 ``update=early|standard`` and ``tcbEvaluationDataNumber=N`` on tcb
and qe/identity, and ``tcbevaluationdatanumbers``, in simulated mode (the simulated TCB history
publishes 18 early, 17 standard, 16 older) and in caching mode (the key includes the choice)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sgx_quote_helper.pccs.app import HttpGetter, make_app
from sgx_quote_helper.pccs.cache import CachingSource, CollateralCache, UpstreamReply
from sgx_quote_helper.pccs.document import EVALUATION_CHAIN, upstream_document
from sgx_quote_helper.pccs.limits import RateLimiter
from sgx_quote_helper.pccs.resource import parse_target
from sgx_quote_helper.pccs.store import SimulatedStore
from sgx_quote_helper.pccs.trust import check_trusted
from sgx_quote_helper.verify.chain import TrustedRoot
from sgx_quote_helper.verify.collateral import from_pcs_responses
from sgx_quote_helper.verify.verifier import Verifier

from .pccs_fakes import Clock, app_in_thread, serving
from .test_pccs_store import Sim

SGX = "/sgx/certification/v4"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Sim:
    return Sim(tmp_path_factory.mktemp("eval-sim"))


@pytest.fixture(scope="module")
def simulated(sim: Sim) -> Iterator[str]:
    with app_in_thread(make_app(SimulatedStore([sim.a, sim.b, sim.c], sim.clock))) as base:
        yield base


@pytest.fixture(scope="module")
def early_default(sim: Sim) -> Iterator[str]:
    with app_in_thread(make_app(SimulatedStore([sim.a], sim.clock), default_update="early")) as base:
        yield base


async def _get(url: str) -> tuple[int, bytes, Mapping[str, str]]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


def get(url: str) -> tuple[int, bytes, Mapping[str, str]]:
    return asyncio.run(_get(url))


def _member(body: bytes, member: str) -> dict[str, Any]:
    obj = json.loads(body)[member]
    assert isinstance(obj, dict)
    return obj


def _raw_verify(chain_header: str, body: bytes, member: str) -> None:
    text = body.decode().split(f'"{member}":', 1)[1].rsplit(',"signature"', 1)[0]
    signature = bytes.fromhex(json.loads(body)["signature"])
    key = x509.load_pem_x509_certificates(unquote(chain_header).encode())[0].public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    key.verify(der, text.encode(), ec.ECDSA(hashes.SHA256()))


def test_early_standard_and_numbers_on_tcb_and_qe_identity(sim: Sim, simulated: str) -> None:
    fmspc = sim.a.identity.fmspc.hex().upper()
    numbers = {
        "update=early": 18,
        "update=standard": 17,
        "": 17,
        "tcbEvaluationDataNumber=18": 18,
        "tcbEvaluationDataNumber=17": 17,
        "tcbEvaluationDataNumber=16": 16,
    }
    for query, number in numbers.items():
        status, body, headers = get(f"{simulated}{SGX}/tcb?fmspc={fmspc}&{query}")
        assert status == 200, (query, body)
        assert _member(body, "tcbInfo")["tcbEvaluationDataNumber"] == number
        _raw_verify(headers["TCB-Info-Issuer-Chain"], body, "tcbInfo")
        status, body, headers = get(f"{simulated}{SGX}/qe/identity?{query}")
        assert status == 200 and _member(body, "enclaveIdentity")["tcbEvaluationDataNumber"] == number
        _raw_verify(headers["SGX-Enclave-Identity-Issuer-Chain"], body, "enclaveIdentity")
    early = _member(get(f"{simulated}{SGX}/qe/identity?update=early")[1], "enclaveIdentity")
    assert early["tcbLevels"][0]["tcb"]["isvsvn"] == 9  # the early recovery's new QE
    # v3 (TCB Info v2) follows the same choice
    v2 = _member(get(f"{simulated}/sgx/certification/v3/tcb?fmspc={fmspc}&update=early")[1], "tcbInfo")
    assert v2["version"] == 2 and v2["tcbEvaluationDataNumber"] == 18
    # a number not published: 404; both parameters, or a bad number: 400
    assert get(f"{simulated}{SGX}/tcb?fmspc={fmspc}&tcbEvaluationDataNumber=99")[0] == 404
    assert get(f"{simulated}{SGX}/qe/identity?tcbEvaluationDataNumber=15")[0] == 404
    assert get(f"{simulated}{SGX}/tcb?fmspc={fmspc}&tcbEvaluationDataNumber=17&update=early")[0] == 400
    assert get(f"{simulated}{SGX}/qe/identity?tcbEvaluationDataNumber=x")[0] == 400


def test_serve_update_sets_the_default(sim: Sim, early_default: str) -> None:
    fmspc = sim.a.identity.fmspc.hex().upper()
    assert (
        _member(get(f"{early_default}{SGX}/tcb?fmspc={fmspc}")[1], "tcbInfo")["tcbEvaluationDataNumber"] == 18
    )
    asked = get(f"{early_default}{SGX}/tcb?fmspc={fmspc}&update=standard")[1]
    assert _member(asked, "tcbInfo")["tcbEvaluationDataNumber"] == 17


def test_the_list_of_evaluation_data_numbers(sim: Sim, simulated: str) -> None:
    status, body, headers = get(f"{simulated}{SGX}/tcbevaluationdatanumbers")
    assert status == 200 and headers["Content-Type"] == "application/json"
    obj = _member(body, "tcbEvaluationDataNumbers")
    assert obj["id"] == "SGX" and obj["version"] == 1
    assert [e["tcbEvaluationDataNumber"] for e in obj["tcbEvalNumbers"]] == [18, 17, 16]
    assert all({"tcbRecoveryEventDate", "tcbDate"} <= e.keys() for e in obj["tcbEvalNumbers"])
    _raw_verify(headers[EVALUATION_CHAIN], body, "tcbEvaluationDataNumbers")
    # what a caching PCCS checks before storing it: well-formed, signed, chained to the root
    resource = parse_target(f"{SGX}/tcbevaluationdatanumbers", "")
    assert resource is not None
    document = upstream_document(resource, {EVALUATION_CHAIN: headers[EVALUATION_CHAIN]}, body)
    check_trusted(resource, document, TrustedRoot.load(sim.root_der))
    # the TDX list (tests/test_pccs_tdx.py) is the same numbers under id TDX
    tdx = _member(
        get(f"{simulated}/tdx/certification/v4/tcbevaluationdatanumbers")[1], "tcbEvaluationDataNumbers"
    )
    assert tdx["id"] == "TDX" and tdx["tcbEvalNumbers"] == obj["tcbEvalNumbers"]


def _verdict(sim: Sim, base: str, query: str) -> Any:
    fmspc = sim.a.identity.fmspc.hex().upper()
    _, tcb, tcb_h = get(f"{base}{SGX}/tcb?fmspc={fmspc}&{query}")
    _, qe, qe_h = get(f"{base}{SGX}/qe/identity?{query}")
    _, crl, crl_h = get(f"{base}{SGX}/pckcrl?ca=processor&encoding=der")
    _, root, _ = get(f"{base}{SGX}/rootcacrl")
    collateral = from_pcs_responses(
        tcb_info_response=tcb,
        tcb_info_issuer_chain=tcb_h["TCB-Info-Issuer-Chain"],
        qe_identity_response=qe,
        qe_identity_issuer_chain=qe_h["SGX-Enclave-Identity-Issuer-Chain"],
        pck_crl=crl,
        pck_crl_issuer_chain=crl_h["SGX-PCK-CRL-Issuer-Chain"],
        root_ca_crl=root,
    )
    return Verifier(TrustedRoot.load(sim.root_der)).verify(sim.quote_a, collateral, sim.clock.now)


def test_early_and_standard_judge_a_platform_differently(sim: Sim, simulated: str) -> None:
    standard = _verdict(sim, simulated, "update=standard")
    assert standard.status == "UpToDate" and standard.tcb_evaluation_data_number == 17
    early = _verdict(sim, simulated, "update=early")
    assert early.status == "OutOfDate" and early.tcb_evaluation_data_number == 18
    assert "INTEL-SA-SIMULATED-18" in early.advisory_ids
    older = _verdict(sim, simulated, "tcbEvaluationDataNumber=16")
    assert older.status == "UpToDate" and older.tcb_evaluation_data_number == 16


def test_caching_key_includes_the_baseline(sim: Sim, simulated: str, tmp_path: Path) -> None:
    fmspc = sim.a.identity.fmspc.hex().upper()
    urls: list[str] = []

    async def scenario() -> None:
        http = HttpGetter(timeout=10)

        async def counting(u: str, headers: Any) -> UpstreamReply:
            urls.append(u)
            return await http(u, headers)

        source = CachingSource(
            CollateralCache(tmp_path / "c.sqlite"),
            simulated,
            counting,
            Clock(sim.clock.now),
            trust=TrustedRoot.load(sim.root_der),
            limiter=RateLimiter(rate=1000, burst=1000),
        )
        try:
            async with serving(make_app(source)) as base:
                for _ in range(2):
                    for query, number in (
                        ("update=early", 18),
                        ("update=standard", 17),
                        ("tcbEvaluationDataNumber=16", 16),
                    ):
                        _, body, _ = await _get(f"{base}{SGX}/tcb?fmspc={fmspc}&{query}")
                        assert _member(body, "tcbInfo")["tcbEvaluationDataNumber"] == number
                    status, body, _ = await _get(f"{base}{SGX}/tcbevaluationdatanumbers")
                    assert status == 200
                assert len(urls) == 4  # one per distinct key, the second round all from the cache
                assert any("tcbEvaluationDataNumber=16" in u for u in urls)
                keys = source.cache.stored_keys()
                assert f"{SGX}/tcb?fmspc={fmspc}&update=early" in keys
                assert f"{SGX}/tcb?fmspc={fmspc}&tcbEvaluationDataNumber=16" in keys
        finally:
            await source.drain()
            await http.close()
            source.cache.close()

    asyncio.run(scenario())


def test_an_upstream_that_ignores_the_number_is_not_cached_under_it(
    sim: Sim, simulated: str, tmp_path: Path
) -> None:
    """Intel's PCCS ignores tcbEvaluationDataNumber: what it answers (the standard TCB Info) must not be
    filed under the number's key."""
    fmspc = sim.a.identity.fmspc.hex().upper()

    async def scenario() -> None:
        http = HttpGetter(timeout=10)

        async def ignoring(u: str, headers: Any) -> UpstreamReply:
            return await http(u.replace("tcbEvaluationDataNumber=16", "update=standard"), headers)

        source = CachingSource(
            CollateralCache(tmp_path / "c.sqlite"),
            simulated,
            ignoring,
            Clock(sim.clock.now),
            trust=TrustedRoot.load(sim.root_der),
        )
        try:
            async with serving(make_app(source)) as base:
                status, body, _ = await _get(f"{base}{SGX}/tcb?fmspc={fmspc}&tcbEvaluationDataNumber=16")
                assert status == 502 and b"tcbEvaluationDataNumber 17" in body
                assert source.cache.stored_keys() == []
        finally:
            await source.drain()
            await http.close()
            source.cache.close()

    asyncio.run(scenario())
