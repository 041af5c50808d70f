"""TDX collateral from the PCCS (issue 14), end to end on loopback.

Simulated platforms made with the CLI (``sim init``; one out of date with ``--tee-tcb-svn`` all zero),
TD quotes from ``sim quote --tee tdx``, and ``pccs serve --simulated`` as a process: dcap-qvl's
``get_collateral`` fetches the TDX collateral from it and ``verify_with_root_ca`` (the SIMULATED root)
says UpToDate / OutOfDate; ``verify --pccs`` says the same. Then, at the HTTP level, the exact
request forms dcap-qvl and Intel's QCNL send for TDX; the TCB baselines (``update=early|standard``,
``tcbEvaluationDataNumber=N``, ``tcbevaluationdatanumbers``) on the TDX routes; and the caching PCCS,
which stores TDX answers only when their signatures chain to its root.

Sources of the request forms (quoted where they are used):
- dcap-qvl: ``src/collateral.rs`` (Phala-Network/dcap-qvl, commit 9bffe30) ``PcsEndpoints``;
- QCNL: ``QuoteGeneration/qcnl/certification_service.cpp`` (intel/SGXDataCenterAttestationPrimitives,
  commit a46ee8a) ``build_tcbinfo_options`` / ``build_qeidentity_options``, and
  ``qcnl/inc/pccs_response_object.h`` for the headers QCNL reads;
- Intel's PCCS: ``pccs/pccs_server.js`` (TDX routes exist under ``/tdx/certification/v4`` only) and
  ``pccs/controllers/identityController.js`` (the TD QE identity carries
  ``SGX-Enclave-Identity-Issuer-Chain``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import dcap_qvl
import pytest
from aiohttp import web
from click.testing import CliRunner
from cryptography import x509
from yarl import URL

from sgx_quote_helper.abi.quote import Quote
from sgx_quote_helper.cli import cli
from sgx_quote_helper.pccs.app import HttpGetter, make_app
from sgx_quote_helper.pccs.cache import CachingSource, CollateralCache, UpstreamReply, upstream_base
from sgx_quote_helper.pccs.document import upstream_document
from sgx_quote_helper.pccs.limits import RateLimiter
from sgx_quote_helper.pccs.resource import parse_target
from sgx_quote_helper.pccs.store import SimulatedStore
from sgx_quote_helper.pccs.trust import check_trusted
from sgx_quote_helper.sim import collateral as C
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.verify.chain import TrustedRoot
from sgx_quote_helper.verify.collateral import crl_to_der, from_pcs_responses
from sgx_quote_helper.verify.fetch import CollateralFetcher, HttpResponse
from sgx_quote_helper.verify.verifier import Verifier

from .pccs_fakes import Clock, app_in_thread, serving
from .test_attest_cli import daemon
from .test_pccs_qcnl import CUSTOM_RAW, custom_param_string
from .test_qgs_service import serving as qgs_serving

TDX = "/tdx/certification/v4"
SGX = "/sgx/certification/v4"
OLD_TEE_TCB_SVN = "00" * 16
EPPID_FMSPC = "00906ED50000"


def cli_ok(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output + result.stderr
    return result.stdout


@dataclass
class Tdx:
    """Simulated platforms under one SIMULATED PKI (current; TEE_TCB_SVN all zero; an encrypted-PPID
    one with another FMSPC), their TD quotes, the root, and ``pccs serve --simulated`` for all."""

    tmp: Path
    current: Platform
    old: Platform
    quotes: dict[str, Path]
    root_file: Path
    url: str = ""

    @property
    def root(self) -> bytes:
        return self.root_file.read_bytes()

    @property
    def fmspc(self) -> str:
        return self.current.identity.fmspc.hex().upper()

    def quote(self, name: str) -> bytes:
        return self.quotes[name].read_bytes()


@pytest.fixture(scope="module")
def tdx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tdx]:
    tmp = tmp_path_factory.mktemp("pccs-tdx")
    cur, old = tmp / "current", tmp / "old"
    assert "(up to date)" in cli_ok("sim", "init", "--state-dir", str(cur))
    out = cli_ok(
        "sim", "init", "--state-dir", str(old), "--pki-from", str(cur), "--tee-tcb-svn", OLD_TEE_TCB_SVN
    )
    assert "not the current level" in out
    # a third platform whose TD quotes carry the encrypted PPID (type 6 holding type 3), other FMSPC
    eppid = tmp / "eppid"
    cli_ok("sim", "init", "--state-dir", str(eppid), "--pki-from", str(cur), "--cert-data", "encrypted-ppid",
           "--fmspc", EPPID_FMSPC)  # fmt: skip
    quotes = {n: tmp / f"{n}.bin" for n in ("current-v4", "current-v5", "old", "eppid")}
    cli_ok("sim", "quote", "--tee", "tdx", "--state-dir", str(cur), "--out", str(quotes["current-v4"]))
    cli_ok("sim", "quote", "--tee", "tdx", "--quote-version", "5", "--state-dir", str(cur),
           "--report-data", "ab" * 64, "--mr-td", "cd" * 48, "--out", str(quotes["current-v5"]))  # fmt: skip
    cli_ok("sim", "quote", "--tee", "tdx", "--state-dir", str(old), "--out", str(quotes["old"]))
    cli_ok("sim", "quote", "--tee", "tdx", "--state-dir", str(eppid), "--out", str(quotes["eppid"]))
    root = tmp / "root.der"
    cli_ok("sim", "root-ca", "--state-dir", str(cur), "--der", "--out", str(root))
    t = Tdx(tmp, Platform.open(cur), Platform.open(old), quotes, root)
    dirs = [a for d in (cur, old, eppid) for a in ("--state-dir", str(d))]
    serve = ["pccs", "serve", "--simulated", *dirs, "--port", "0"]
    with daemon(serve, "pccs ready at ") as (_, url):
        t.url = url
        yield t


def utc_now() -> datetime:
    return datetime.now(UTC)


def now_s() -> int:
    return int(time.time())


async def _dcap_qvl_collateral(url: str, quote: bytes) -> Any:
    return await dcap_qvl.get_collateral(url, quote)


def verify_cli(t: Tdx, name: str, *extra: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(
        cli, ["verify", str(t.quotes[name]), "--pccs", t.url, "--root-ca", str(t.root_file), "--json", *extra]
    )
    return result.exit_code, json.loads(result.stdout)


# -- end to end: pccs serve --simulated, dcap-qvl, verify --pccs -----------------------------------


@pytest.mark.parametrize(
    ("name", "status"),
    [("current-v4", "UpToDate"), ("current-v5", "UpToDate"), ("old", "OutOfDate"), ("eppid", "UpToDate")],
)
def test_dcap_qvl_and_verify_pccs_agree(tdx: Tdx, name: str, status: str) -> None:
    quote = tdx.quote(name)
    collateral = asyncio.run(_dcap_qvl_collateral(tdx.url, quote))
    tcb_info, qe_identity = json.loads(collateral.tcb_info), json.loads(collateral.qe_identity)
    fmspc = EPPID_FMSPC if name == "eppid" else tdx.fmspc
    assert tcb_info["id"] == "TDX" and tcb_info["fmspc"] == fmspc and "tdxModule" in tcb_info
    assert qe_identity["id"] == "TD_QE"
    assert tcb_info["tcbEvaluationDataNumber"] == qe_identity["tcbEvaluationDataNumber"] == 17
    theirs = dcap_qvl.verify_with_root_ca(quote, collateral, tdx.root, now_s())
    assert theirs.status == status
    code, ours = verify_cli(tdx, name)
    assert ours["tee"] == "TDX" and ours["status"] == status == theirs.status
    assert ours["advisory_ids"] == sorted(theirs.advisory_ids)
    assert ours["tcb_info_evaluation_data_number"] == ours["qe_identity_evaluation_data_number"] == 17
    if status == "UpToDate":
        assert code == 0 and ours["accepted"] and ours["tdx_module_status"] == "UpToDate"
    else:  # the all-zero TDX components match only the floor level
        assert code != 0 and not ours["accepted"] and "INTEL-SA-00837" in ours["advisory_ids"]
    # the SIMULATED chain is not Intel's: dcap-qvl's plain verify (Intel's root pinned) refuses it
    with pytest.raises(Exception):  # noqa: B017  (dcap-qvl raises a plain ValueError)
        dcap_qvl.verify(quote, collateral, now_s())


def test_quote_from_the_qgs_service_verifies_with_pccs_collateral(tdx: Tdx) -> None:
    """The host path: a TDREPORT (``sim td-report``), the QGS service on a Unix socket, the guest's
    ``tdx quote --qgs-socket``; collateral from ``pccs serve``."""
    report, quote, sock = tdx.tmp / "qgs-r.bin", tdx.tmp / "qgs-q.bin", tdx.tmp / "qgs.sock"
    cli_ok("sim", "td-report", "--state-dir", str(tdx.current.state.path), "--report-data", "5a" * 64,
           "--tdx-version", "1.5", "--out", str(report))  # fmt: skip
    with qgs_serving(tdx.current, sock):
        cli_ok("tdx", "quote", "--qgs-socket", str(sock), "--td-report", str(report), "--out", str(quote))
    tdx.quotes["qgs"] = quote
    collateral = asyncio.run(_dcap_qvl_collateral(tdx.url, quote.read_bytes()))
    assert (
        dcap_qvl.verify_with_root_ca(quote.read_bytes(), collateral, tdx.root, now_s()).status == "UpToDate"
    )
    code, ours = verify_cli(tdx, "qgs")
    assert code == 0 and ours["status"] == "UpToDate" and ours["report_data"] == "5a" * 64


def test_verify_pccs_early_and_standard_for_tdx(tdx: Tdx) -> None:
    code, standard = verify_cli(tdx, "current-v4", "--update", "standard")
    assert code == 0 and standard["status"] == "UpToDate"
    assert standard["tcb_info_evaluation_data_number"] == standard["qe_identity_evaluation_data_number"] == 17
    code, early = verify_cli(tdx, "current-v4", "--update", "early")
    assert code != 0 and early["status"] == "OutOfDate"  # the early recovery (18) demotes today's TCB
    assert early["tcb_info_evaluation_data_number"] == early["qe_identity_evaluation_data_number"] == 18
    assert "INTEL-SA-SIMULATED-18" in early["advisory_ids"]
    code, floor = verify_cli(tdx, "current-v4", "--min-tcb-evaluation-data-number", "18")
    assert code != 0 and floor["status"] == "UpToDate"  # standard (17) is below the policy's floor
    assert "min_tcb_evaluation_data_number" in json.dumps(floor["violations"])


# -- HTTP level: what dcap-qvl and QCNL ask, byte for byte -----------------------------------------


@pytest.fixture(scope="module")
def recorded(tdx: Tdx) -> Iterator[tuple[str, list[str]]]:
    """The same simulated PCCS in process, recording every request target exactly as sent."""
    targets: list[str] = []

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        targets.append(request.raw_path)

    app = make_app(SimulatedStore([tdx.current, tdx.old], utc_now))
    app.on_response_prepare.append(record)
    with app_in_thread(app) as base:
        yield base, targets


async def _raw_get(url: str) -> tuple[int, bytes, dict[str, str]]:
    async with aiohttp.ClientSession() as http, http.get(URL(url, encoded=True)) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


def raw_get(url: str) -> tuple[int, bytes, dict[str, str]]:
    """GET ``url`` byte for byte (no client-side re-quoting)."""
    return asyncio.run(_raw_get(url))


def _member(body: bytes, member: str) -> dict[str, Any]:
    obj = json.loads(body)[member]
    assert isinstance(obj, dict)
    return obj


def check_signed(t: Tdx, target: str, headers: Mapping[str, str], body: bytes) -> None:
    """What a caching PCCS checks before it stores the answer: well-formed, signed by the first
    certificate of its issuer chain, the chain ending at the (SIMULATED) root."""
    path, _, query = target.partition("?")
    resource = parse_target(path, query)
    assert resource is not None
    check_trusted(resource, upstream_document(resource, headers, body), TrustedRoot.load(t.root))


def test_dcap_qvl_request_forms_for_tdx(tdx: Tdx, recorded: tuple[str, list[str]]) -> None:
    """dcap-qvl ``src/collateral.rs`` ``PcsEndpoints``:

        fn url_pckcrl(&self) -> String { self.mk_url("sgx", &format!("pckcrl?ca={}&encoding=der", self.ca)) }
        fn url_rootcacrl(&self) -> String { self.mk_url("sgx", "rootcacrl") }
        fn url_tcb(&self) -> String { self.mk_url(self.tee, &format!("tcb?fmspc={}", self.fmspc)) }
        fn url_qe_identity(&self) -> String { self.mk_url(self.tee, "qe/identity?update=standard") }
        fn mk_url(&self, tee: &str, path: &str) -> String {
            format!("{}/{}/certification/v4/{}", self.base_url, tee, path) }

    with ``tee`` "tdx" for a TD quote. The 0.7.0 wheel under test (measured here) also sends
    ``&update=standard`` on ``tcb``; both forms get the same document."""
    base, targets = recorded
    targets.clear()
    quote = tdx.quote("current-v4")
    collateral = asyncio.run(_dcap_qvl_collateral(base, quote))
    assert dcap_qvl.verify_with_root_ca(quote, collateral, tdx.root, now_s()).status == "UpToDate"
    f = tdx.fmspc
    assert sorted(targets) == sorted(
        [
            f"{SGX}/pckcrl?ca=processor&encoding=der",
            f"{TDX}/tcb?fmspc={f}&update=standard",
            f"{TDX}/qe/identity?update=standard",
            f"{SGX}/rootcacrl",
        ]
    )
    # the source's form (no update) and the wheel's give the same bytes and headers
    source_form = raw_get(f"{base}{TDX}/tcb?fmspc={f}")
    wheel_form = raw_get(f"{base}{TDX}/tcb?fmspc={f}&update=standard")
    assert source_form[0] == wheel_form[0] == 200 and source_form[1] == wheel_form[1]
    for status, _, headers in (source_form, raw_get(f"{base}{TDX}/qe/identity?update=standard")):
        assert status == 200 and headers["Content-Type"] == "application/json"
    # the headers dcap-qvl reads (collateral.rs fetch_for_fmspc_without_pck_chain):
    #   get_header(&response, "SGX-TCB-Info-Issuer-Chain").or(get_header(&response, "TCB-Info-Issuer-Chain"))
    #   get_header(&response, "SGX-Enclave-Identity-Issuer-Chain")
    assert "TCB-Info-Issuer-Chain" in source_form[2] and "SGX-TCB-Info-Issuer-Chain" not in source_form[2]
    assert unquote(source_form[2]["TCB-Info-Issuer-Chain"]) == tdx.current.tcb_signing_chain_pem().decode()


class Qcnl:
    """The TDX targets QCNL builds, as full URLs from ``pccs_url``.

    certification_service.cpp ``build_tcbinfo_options``::

        request.endpoint = QcnlConfig::Instance()->getCollateralServiceUrl();
        if (prod_type == SGX_PROD_TYPE_TDX) {
            auto found = request.endpoint.find("/sgx/");
            if (found != std::string::npos) {
                request.endpoint = request.endpoint.replace(found, 5, "/tdx/");
        ...
        request.params.append("tcb?fmspc=");
        if (!concat_string_with_hex_buf(request.params, ...fmspc, fmspc_size)) {
        request.params.append("&update=").append(QcnlConfig::Instance()->getTcbUpdateType());
        if (!custom_param_.empty()) {
            request.params.append("&").append(get_custom_param_string());

    ``build_qeidentity_options`` (``qe_type == SGX_QE_TYPE_TD``: the same ``/sgx/`` -> ``/tdx/``)::

        request.params.append("qe/identity");
        request.params.append("?update=").append(QcnlConfig::Instance()->getTcbUpdateType());
        if (!custom_param_.empty()) {
            request.params.append("&").append(get_custom_param_string());
    """

    def __init__(self, pccs_url: str, update: str, custom: str | None) -> None:
        self.endpoint = pccs_url.replace("/sgx/", "/tdx/", 1)
        self.update = update
        self.custom = "&" + custom_param_string(custom) if custom else ""

    def tcb(self, fmspc: bytes) -> str:
        return f"{self.endpoint}tcb?fmspc={fmspc.hex().upper()}&update={self.update}{self.custom}"

    def qe_identity(self) -> str:
        return f"{self.endpoint}qe/identity?update={self.update}{self.custom}"


def _header(headers: Mapping[str, str], *names: str) -> str:
    """QCNL's header lookup (pccs_response_object.h get_tcbinfo_issuer_chain: ``sgx-tcb-info-issuer-chain``,
    then ``tcb-info-issuer-chain``; qcnl_def.h ENCLAVE_ID_ISSUER_CHAIN ``sgx-enclave-identity-issuer-chain``)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return next(lowered[n] for n in names if lowered.get(n))


@pytest.mark.parametrize("custom", [None, CUSTOM_RAW])
@pytest.mark.parametrize(
    ("update", "number", "status"), [("standard", 17, "UpToDate"), ("early", 18, "OutOfDate")]
)
def test_qcnl_request_forms_for_tdx(
    tdx: Tdx, recorded: tuple[str, list[str]], update: str, number: int, status: str, custom: str | None
) -> None:
    base, _ = recorded
    qcnl = Qcnl(f"{base}/sgx/certification/v4/", update, custom)
    tcb_url, qe_url = qcnl.tcb(tdx.current.identity.fmspc), qcnl.qe_identity()
    assert tcb_url.startswith(f"{base}{TDX}/tcb?fmspc={tdx.fmspc}&update={update}")
    status_code, tcb_body, tcb_headers = raw_get(tcb_url)
    assert status_code == 200 and tcb_headers["Content-Type"] == "application/json"
    tcb_chain = _header(tcb_headers, "sgx-tcb-info-issuer-chain", "tcb-info-issuer-chain")
    status_code, qe_body, qe_headers = raw_get(qe_url)
    assert status_code == 200 and qe_headers["Content-Type"] == "application/json"
    qe_chain = _header(qe_headers, "sgx-enclave-identity-issuer-chain")
    info, identity = _member(tcb_body, "tcbInfo"), _member(qe_body, "enclaveIdentity")
    assert (info["id"], identity["id"]) == ("TDX", "TD_QE")
    assert info["tcbEvaluationDataNumber"] == identity["tcbEvaluationDataNumber"] == number
    assert x509.load_pem_x509_certificates(unquote(tcb_chain).encode())[-1] == tdx.current.certs["root"]
    # the rest as QCNL 3.1 asks it (SGX paths: there is no TDX CRL), then judged as QvL would
    _, crl, crl_headers = raw_get(f"{base}{SGX}/pckcrl?ca=processor&encoding=der")
    _, root_crl, _ = raw_get(f"{base}{SGX}/rootcacrl")
    collateral = from_pcs_responses(
        tcb_info_response=tcb_body,
        tcb_info_issuer_chain=tcb_chain,
        qe_identity_response=qe_body,
        qe_identity_issuer_chain=qe_chain,
        pck_crl=crl,
        pck_crl_issuer_chain=crl_headers["SGX-PCK-CRL-Issuer-Chain"],
        root_ca_crl=crl_to_der(root_crl, "root CA CRL"),
    )
    verdict = Verifier(TrustedRoot.load(tdx.root)).verify(
        tdx.quote("current-v4"), collateral, datetime.now(UTC)
    )
    assert verdict.status == status and verdict.tcb_evaluation_data_number == number


def test_qcnl_with_a_v3_pccs_url_gets_no_tdx(recorded: tuple[str, list[str]], tdx: Tdx) -> None:
    """Intel's PCCS mounts the TDX routes under v4 only (pccs_server.js:
    ``app.use('/tdx/certification/v4', tdxRouter);``), so QCNL with ``pccs_url`` .../v3/ gets 404."""
    base, _ = recorded
    qcnl = Qcnl(f"{base}/sgx/certification/v3/", "standard", None)
    for url in (qcnl.tcb(tdx.current.identity.fmspc), qcnl.qe_identity()):
        status, body, _ = raw_get(url)
        assert status == 404 and json.loads(body)["error"] == "not-found"


# -- TCB baselines on the TDX routes ---------------------------------------------------------------


def test_baselines_on_the_tdx_routes(tdx: Tdx, recorded: tuple[str, list[str]]) -> None:
    base, _ = recorded
    f = tdx.fmspc
    for query, number in {
        "update=early": 18,
        "update=standard": 17,
        "": 17,
        "tcbEvaluationDataNumber=18": 18,
        "tcbEvaluationDataNumber=17": 17,
        "tcbEvaluationDataNumber=16": 16,
    }.items():
        target = f"{TDX}/tcb?fmspc={f}&{query}".rstrip("&")
        status, body, headers = raw_get(base + target)
        assert status == 200, (query, body)
        info = _member(body, "tcbInfo")
        assert info["id"] == "TDX" and info["tcbEvaluationDataNumber"] == number
        check_signed(tdx, target, headers, body)
        target = f"{TDX}/qe/identity" + (f"?{query}" if query else "")
        status, body, headers = raw_get(base + target)
        identity = _member(body, "enclaveIdentity")
        assert status == 200 and identity["id"] == "TD_QE" and identity["tcbEvaluationDataNumber"] == number
        check_signed(tdx, target, headers, body)
    # the early recovery's TDX levels: today's TDX platform level demoted, a new one above it
    early = _member(raw_get(f"{base}{TDX}/tcb?fmspc={f}&update=early")[1], "tcbInfo")["tcbLevels"]
    standard = _member(raw_get(f"{base}{TDX}/tcb?fmspc={f}")[1], "tcbInfo")["tcbLevels"]
    assert early[0]["tcbStatus"] == "UpToDate" and early[1]["tcb"] == standard[0]["tcb"]
    assert early[1]["tcbStatus"] == "OutOfDate" and standard[0]["tcbStatus"] == "UpToDate"
    assert early[-1]["tcb"]["tdxtcbcomponents"] == [{"svn": 0}] * 16  # the floor is still there
    # not published: 404; both parameters, or a bad number: 400 (as the SGX routes)
    assert raw_get(f"{base}{TDX}/tcb?fmspc={f}&tcbEvaluationDataNumber=99")[0] == 404
    assert raw_get(f"{base}{TDX}/qe/identity?tcbEvaluationDataNumber=15")[0] == 404
    assert raw_get(f"{base}{TDX}/tcb?fmspc={f}&tcbEvaluationDataNumber=17&update=early")[0] == 400
    assert raw_get(f"{base}{TDX}/qe/identity?update=sometimes")[0] == 400
    assert raw_get(f"{base}{TDX}/tcb?fmspc=112233445566")[0] == 404  # no such platform


def test_tdx_evaluation_numbers(tdx: Tdx, recorded: tuple[str, list[str]]) -> None:
    base, _ = recorded
    target = f"{TDX}/tcbevaluationdatanumbers"
    status, body, headers = raw_get(base + target)
    assert status == 200 and headers["Content-Type"] == "application/json"
    obj = _member(body, "tcbEvaluationDataNumbers")
    assert obj["id"] == "TDX" and [e["tcbEvaluationDataNumber"] for e in obj["tcbEvalNumbers"]] == [
        18,
        17,
        16,
    ]
    assert "TCB-Evaluation-Data-Numbers-Issuer-Chain" in headers
    check_signed(tdx, target, headers, body)


def test_our_fetcher_asks_the_tdx_paths(tdx: Tdx, recorded: tuple[str, list[str]]) -> None:
    """verify/fetch.py for a TD quote: tcb and qe/identity on /tdx, CRLs on /sgx, the baseline sent."""
    base, targets = recorded
    targets.clear()
    fetcher = CollateralFetcher(base, raw_getter(base), tcb_evaluation_data_number=16)
    collateral = fetcher.fetch(_parsed(tdx.quote("current-v5")))
    assert sorted(targets) == sorted(
        [
            f"{SGX}/pckcrl?ca=processor&encoding=der",
            f"{TDX}/tcb?fmspc={tdx.fmspc}&tcbEvaluationDataNumber=16",
            f"{TDX}/qe/identity?tcbEvaluationDataNumber=16",
            f"{SGX}/rootcacrl",
        ]
    )
    verdict = Verifier(TrustedRoot.load(tdx.root)).verify(
        tdx.quote("current-v5"), collateral, datetime.now(UTC)
    )
    assert verdict.status == "UpToDate" and verdict.tcb_evaluation_data_number == 16


def _parsed(raw: bytes) -> Quote:
    return Quote.from_bytes(raw)


def raw_getter(base: str) -> Any:
    def get(url: str) -> HttpResponse:
        status, body, headers = raw_get(url)
        return HttpResponse(status, body, headers)

    return get


# -- the caching PCCS in front of the simulated one ------------------------------------------------


class Front:
    """A caching PCCS whose upstream is the simulated PCCS; ``tamper`` may rewrite an upstream answer."""

    def __init__(self, t: Tdx, upstream: str, tmp: Path) -> None:
        self.upstream_urls: list[str] = []
        self.http = HttpGetter(timeout=10)
        self.tamper: Any = None

        async def getter(url: str, headers: Mapping[str, str]) -> UpstreamReply:
            self.upstream_urls.append(url)
            reply = await self.http(url, headers)
            return self.tamper(url, reply) if self.tamper is not None else reply

        self.source = CachingSource(
            CollateralCache(tmp / "front.sqlite"),
            upstream,
            getter,
            Clock(datetime.now(UTC)),
            trust=TrustedRoot.load(t.root),
            limiter=RateLimiter(rate=1000, burst=1000),
        )

    def tdx_urls(self) -> list[str]:
        return [u for u in self.upstream_urls if "/tdx/" in u]

    async def close(self) -> None:
        await self.source.drain()
        await self.http.close()
        self.source.cache.close()


def test_upstream_base_takes_a_tdx_url() -> None:
    for given in ("http://pccs:8081/tdx/certification/v4/", "http://pccs:8081/sgx/certification/v3"):
        assert upstream_base(given) == "http://pccs:8081"


def test_caching_pccs_caches_tdx_answers(tdx: Tdx, tmp_path: Path) -> None:
    quote = tdx.quote("current-v4")
    f = tdx.fmspc

    async def scenario() -> None:
        front = Front(tdx, tdx.url, tmp_path)
        try:
            async with serving(make_app(front.source)) as base:
                for _ in range(2):  # cold, then warm: the second round asks nothing upstream
                    collateral = await dcap_qvl.get_collateral(base, quote)
                    assert (
                        dcap_qvl.verify_with_root_ca(quote, collateral, tdx.root, now_s()).status
                        == "UpToDate"
                    )
                assert sorted(front.tdx_urls()) == sorted(
                    [
                        f"{tdx.url}{TDX}/tcb?fmspc={f}&update=standard",
                        f"{tdx.url}{TDX}/qe/identity?update=standard",
                    ]
                )
                keys = front.source.cache.stored_keys()
                assert f"{TDX}/tcb?fmspc={f}&update=standard" in keys
                assert f"{TDX}/qe/identity?update=standard" in keys
                # each baseline its own key, TDX and SGX apart
                for query in ("update=early", "tcbEvaluationDataNumber=16"):
                    for _ in range(2):
                        status, body, _ = await _raw_get(f"{base}{TDX}/tcb?fmspc={f}&{query}")
                        assert status == 200 and _member(body, "tcbInfo")["id"] == "TDX"
                    assert f"{TDX}/tcb?fmspc={f}&{query}" in front.source.cache.stored_keys()
                status, body, _ = await _raw_get(f"{base}{SGX}/tcb?fmspc={f}&update=early")
                assert status == 200 and _member(body, "tcbInfo")["id"] == "SGX"
                status, body, _ = await _raw_get(f"{base}{TDX}/tcbevaluationdatanumbers")
                assert status == 200 and _member(body, "tcbEvaluationDataNumbers")["id"] == "TDX"
                assert f"{TDX}/tcbevaluationdatanumbers" in front.source.cache.stored_keys()
                assert len(front.tdx_urls()) == 5  # early, 16, the list: once each
                # our verifier through the caching PCCS: all from the cache
                before = len(front.upstream_urls)
                fetched = await asyncio.to_thread(
                    CollateralFetcher(base, raw_getter(base)).fetch, _parsed(tdx.quote("old"))
                )
                verdict = Verifier(TrustedRoot.load(tdx.root)).verify(
                    tdx.quote("old"), fetched, datetime.now(UTC)
                )
                assert verdict.status == "OutOfDate" and len(front.upstream_urls) == before
                # pccs refresh: the TDX entries are asked again at their own /tdx/ URLs
                results = await front.source.refresh_all()
                tdx_keys = [k for k in front.source.cache.stored_keys() if k.startswith(TDX)]
                assert len(tdx_keys) == 5 and all(results[k] == "ok" for k in tdx_keys)
                assert len(front.tdx_urls()) == 10
        finally:
            await front.close()

    asyncio.run(scenario())


def _flip_status(url: str, reply: UpstreamReply) -> UpstreamReply:
    """An upstream (or a path to it) that changed the TCB Info text but not its signature."""
    if f"{TDX}/tcb?" not in url and f"{TDX}/qe/identity" not in url:
        return reply
    body = reply.body.replace(b'"tcbStatus":"OutOfDate"', b'"tcbStatus":"UpToDate"', 1)
    assert body != reply.body
    return UpstreamReply(reply.status, reply.headers, body)


def _sgx_for_tdx(sgx: UpstreamReply) -> Any:
    def tamper(url: str, reply: UpstreamReply) -> UpstreamReply:
        return sgx if f"{TDX}/tcb?" in url else reply

    return tamper


def test_caching_pccs_refuses_to_cache_tampered_tdx_answers(
    tdx: Tdx, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    f = tdx.fmspc
    other = Platform.init(tmp_path / "other-pki")  # another SIMULATED PKI, same FMSPC
    assert other.identity.fmspc.hex().upper() == f

    async def scenario() -> None:
        front = Front(tdx, tdx.url, tmp_path)
        try:
            async with (
                serving(make_app(front.source)) as base,
                serving(make_app(SimulatedStore([other], utc_now))) as foreign,
            ):
                tcb = f"{TDX}/tcb?fmspc={f}&update=standard"
                # 1. text changed under the signature: refused outright (502), nothing stored
                front.tamper = _flip_status
                for target in (tcb, f"{TDX}/qe/identity?update=standard"):
                    status, body, _ = await _raw_get(base + target)
                    assert status == 502 and b"signature does not verify" in body
                assert not front.source.cache.stored_keys()
                # 2. an SGX TCB Info answered on the TDX path: refused (id SGX is not TDX)
                sgx = await front.http(f"{tdx.url}{SGX}/tcb?fmspc={f}&update=standard", {})
                front.tamper = _sgx_for_tdx(sgx)
                status, body, _ = await _raw_get(base + tcb)
                assert status == 502 and b"does not match tdx" in body
                # 3. well-formed and signed, but by another root: served once, never stored
                front.tamper = lambda url, reply: reply
                front.source.upstream = foreign
                with caplog.at_level(logging.WARNING, logger="sgx_quote_helper.pccs"):
                    for _ in range(2):
                        status, body, headers = await _raw_get(base + tcb)
                        assert status == 200 and _member(body, "tcbInfo")["id"] == "TDX"
                assert "does not end at the trusted root CA" in caplog.text
                chain = x509.load_pem_x509_certificates(unquote(headers["TCB-Info-Issuer-Chain"]).encode())
                assert chain[-1] == other.certs["root"]
                assert not front.source.cache.stored_keys()
                assert front.upstream_urls.count(f"{foreign}{tcb}") == 2  # asked again: not cached
                # 4. the genuine answer is stored
                front.source.upstream = tdx.url
                status, body, _ = await _raw_get(base + tcb)
                assert status == 200 and front.source.cache.stored_keys() == [tcb]
                assert C.root_ca_der(tdx.current) == tdx.root
        finally:
            await front.close()

    asyncio.run(scenario())
