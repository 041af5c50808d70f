"""engine.simulated: QuotingEngine semantics (aesm-protocol.md §6) and the quote's cryptography."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sgx_quote_helper.abi.codes import QuoteLibStatus
from sgx_quote_helper.abi.keyid import QE3_MRSIGNER, AttKeyId, QeReportInfo
from sgx_quote_helper.abi.quote import (
    CERT_TYPE_PCK_CHAIN,
    CERT_TYPE_PPID_RSA3072_ENCRYPTED,
    INTEL_QE_VENDOR_ID,
    Quote,
)
from sgx_quote_helper.abi.report import Report, TargetInfo
from sgx_quote_helper.engine.base import QuotingEngine
from sgx_quote_helper.engine.simulated import SimulatedEngine
from sgx_quote_helper.errors import EngineError
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.sim.qe import QE_AUTH_DATA, QE_TARGET_INFO

KEY_ID = AttKeyId.ecdsa_p256_qe3()
APP = {"mr_enclave": b"\xaa" * 32, "mr_signer": b"\xbb" * 32, "isv_prod_id": 3, "isv_svn": 4}


@pytest.fixture(scope="module")
def platform_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("eng") / "state"
    Platform.init(d)
    return d


@pytest.fixture(scope="module")
def engine(platform_dir: Path) -> SimulatedEngine:
    e = SimulatedEngine(Platform.open(platform_dir))
    e.init_quote(KEY_ID, True)
    return e


def _verify_raw(pub: ec.EllipticCurvePublicKey, sig: bytes, data: bytes) -> None:
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    pub.verify(der, data, ec.ECDSA(hashes.SHA256()))


def _pub_from_raw(raw: bytes) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + raw)


def _app_report(engine: SimulatedEngine, data: bytes = b"hello") -> Report:
    return engine.platform.ereport(QE_TARGET_INFO, data, **APP)  # type: ignore[arg-type]


def test_is_a_quoting_engine(engine: SimulatedEngine) -> None:
    assert isinstance(engine, QuotingEngine)
    assert engine.name == "simulated"
    assert [k.base for k in engine.supported_key_ids()] == [KEY_ID.base]


def test_size_query_needs_no_key(tmp_path: Path) -> None:
    e = SimulatedEngine(Platform.init(tmp_path / "p"))
    res = e.init_quote(KEY_ID, False)
    assert (res.pub_key_id_size, res.target_info, res.pub_key_id) == (32, None, None)
    assert not (tmp_path / "p" / "attestation.key.pem").exists()


def test_not_initialised_then_initialised(tmp_path: Path) -> None:
    p = Platform.init(tmp_path / "p")
    e = SimulatedEngine(p)
    report = p.ereport(QE_TARGET_INFO, b"x")
    calls: list[Callable[[], object]] = [lambda: e.quote_size(KEY_ID), lambda: e.get_quote(report, KEY_ID)]
    for call in calls:
        with pytest.raises(EngineError) as info:
            call()
        assert info.value.status == QuoteLibStatus.ATT_KEY_NOT_INITIALIZED
    res = e.init_quote(KEY_ID, True)
    assert res.target_info == QE_TARGET_INFO and res.pub_key_id is not None and len(res.pub_key_id) == 32
    assert len(e.get_quote(report, KEY_ID).quote) == e.quote_size(KEY_ID)
    # a restarted service keeps the key (QE3's sealed blob): no InitQuoteEx needed, same ECDSA_ID
    restarted = SimulatedEngine(Platform.open(tmp_path / "p"))
    assert restarted.quote_size(KEY_ID) == e.quote_size(KEY_ID)
    assert restarted.init_quote(KEY_ID, True).pub_key_id == res.pub_key_id


@pytest.mark.parametrize(
    "change", [{"id": 1}, {"algorithm_id": 3}, {"prod_id": 2}, {"mrsigner": b"\x01" * 48}, {"version": 1}]
)
def test_unsupported_key_id(engine: SimulatedEngine, change: dict[str, object]) -> None:
    other = dataclasses.replace(KEY_ID, **change)  # type: ignore[arg-type]
    calls: list[Callable[[], object]] = [
        lambda: engine.init_quote(other, False),
        lambda: engine.init_quote(other, True),
        lambda: engine.quote_size(other),
        lambda: engine.get_quote(_app_report(engine), other),
    ]
    for call in calls:
        with pytest.raises(EngineError) as info:
            call()
        assert info.value.status == QuoteLibStatus.UNSUPPORTED_ATT_KEY_ID


def test_key_id_matched_by_base_only(engine: SimulatedEngine) -> None:
    tail_changed = dataclasses.replace(KEY_ID, att_key_type=5, reserved=b"\x01" * 80)
    assert engine.quote_size(tail_changed) == engine.quote_size(KEY_ID)


@pytest.mark.parametrize(
    "bad",
    [
        "other-target",
        "tampered-body",
        "tampered-mac",
    ],
)
def test_invalid_report_refused(engine: SimulatedEngine, bad: str) -> None:
    good = _app_report(engine)
    if bad == "other-target":
        report = engine.platform.ereport(TargetInfo(mr_enclave=b"\x01" * 32), b"hello")
    elif bad == "tampered-body":
        report = Report(dataclasses.replace(good.body, isv_svn=99), good.key_id, good.mac)
    else:
        report = Report(good.body, good.key_id, bytes(16))
    with pytest.raises(EngineError) as info:
        engine.get_quote(report, KEY_ID)
    assert info.value.status == QuoteLibStatus.INVALID_REPORT


def test_quote_contents_and_signatures(engine: SimulatedEngine) -> None:
    report = _app_report(engine, b"report data!")
    raw = engine.get_quote(report, KEY_ID).quote
    assert len(raw) == engine.quote_size(KEY_ID)
    q = Quote.from_bytes(raw)
    assert q.to_bytes() == raw and q.trailing == b""
    ident = engine.platform.identity
    h = q.header
    assert (h.version, h.att_key_type, h.tee_type, h.qe_svn, h.pce_svn) == (
        3,
        2,
        0,
        ident.qe_svn,
        ident.pcesvn,
    )
    assert h.qe_vendor_id == INTEL_QE_VENDOR_ID and h.user_data == ident.qe_id + bytes(4)
    assert q.body == report.body
    sig = q.signature_data
    # ISV signature: attestation key over header || body
    _verify_raw(_pub_from_raw(sig.attestation_key), sig.signature, raw[:432])
    assert q.signed_bytes == raw[:432]
    # QE report: bound to the attestation key and signed by the PCK key
    qe = sig.qe_cert
    assert qe.qe_auth_data == QE_AUTH_DATA == bytes(range(32))
    ecdsa_id = hashlib.sha256(sig.attestation_key + QE_AUTH_DATA).digest()
    assert qe.qe_report.report_data == ecdsa_id + bytes(32)
    assert engine.init_quote(KEY_ID, True).pub_key_id == ecdsa_id
    assert qe.qe_report.mr_signer == QE3_MRSIGNER and qe.qe_report.isv_prod_id == 1
    assert qe.qe_report.attributes.flags == 0x15 and qe.qe_report.isv_svn == ident.qe_svn
    # certification data type 5: leaf, CA, root, then a NUL as real QEs emit
    cert = qe.certification_data
    assert cert.cert_type == CERT_TYPE_PCK_CHAIN and cert.data.endswith(b"-----\n\x00")
    leaf, _ca, root = x509.load_pem_x509_certificates(cert.pck_chain_pem())
    assert root.subject == root.issuer and "SIMULATED" in leaf.subject.rfc4514_string()
    _verify_raw(leaf.public_key(), qe.qe_report_signature, qe.qe_report.to_bytes())  # type: ignore[arg-type]


def test_signatures_fresh_per_quote(engine: SimulatedEngine) -> None:
    report = _app_report(engine)
    a, b = engine.get_quote(report, KEY_ID).quote, engine.get_quote(report, KEY_ID).quote
    assert a[:436] == b[:436] and a != b  # same signed bytes, new ECDSA nonce


def test_qe_report_info(engine: SimulatedEngine) -> None:
    app_target = TargetInfo(mr_enclave=APP["mr_enclave"])  # type: ignore[arg-type]
    info = QeReportInfo(b"\x42" * 16, app_target)
    res = engine.get_quote(_app_report(engine), KEY_ID, info)
    assert res.qe_report_info is not None
    assert res.qe_report_info.nonce == info.nonce
    assert res.qe_report_info.app_enclave_target_info == app_target
    qe_report = Report.from_bytes(res.qe_report_info.qe_report)
    assert qe_report.body.report_data == hashlib.sha256(info.nonce + res.quote).digest() + bytes(32)
    assert qe_report.body.mr_signer == QE3_MRSIGNER
    assert engine.platform.verify_report_mac(qe_report, app_target)
    assert not engine.platform.verify_report_mac(qe_report, QE_TARGET_INFO)


def test_encrypted_ppid_certification(tmp_path: Path) -> None:
    p = Platform.init(tmp_path / "p", cert_data="encrypted-ppid")
    e = SimulatedEngine(p)
    e.init_quote(KEY_ID, True)
    raw = e.get_quote(p.ereport(QE_TARGET_INFO, b"x"), KEY_ID).quote
    assert (
        len(raw) == e.quote_size(KEY_ID) == 1456
    )  # aesm-protocol.md §4: the size without a provider library
    cert = Quote.from_bytes(raw).certification_data
    assert cert.cert_type == CERT_TYPE_PPID_RSA3072_ENCRYPTED
    eppid = cert.encrypted_ppid()
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    assert p.pce_encryption_key.decrypt(eppid.encrypted_ppid, oaep) == p.identity.ppid
    assert (eppid.cpusvn, eppid.pcesvn, eppid.pceid) == (p.identity.cpusvn, p.identity.pcesvn, 0)


def test_concurrent_quotes(engine: SimulatedEngine) -> None:
    reports = [_app_report(engine, bytes([i])) for i in range(16)]
    with ThreadPoolExecutor(4) as pool:
        quotes = list(pool.map(lambda r: engine.get_quote(r, KEY_ID).quote, reports))
    for report, raw in zip(reports, quotes, strict=True):
        q = Quote.from_bytes(raw)
        assert q.body == report.body
        _verify_raw(_pub_from_raw(q.signature_data.attestation_key), q.signature_data.signature, raw[:432])


def test_close_is_idempotent(engine: SimulatedEngine) -> None:
    engine.close()
    engine.close()
    assert engine.quote_size(KEY_ID) > 0
