"""The simulated QE's per-quote fast path gives exactly what the reference path gives.

``CertifiedKey.quote`` concatenates precomputed bytes instead of building abi dataclasses, and
``ReportVerifier`` absorbs the fixed part of the REPORT-key derivation once; both must be
byte-for-byte what the abi layout (``Quote.to_bytes``) and ``derive_report_key``/``verify_report``
produce. ECDSA signatures are randomised, so quotes are compared outside the 64 signature bytes and
both signatures are verified.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sgx_quote_helper.abi.codes import QuoteLibStatus
from sgx_quote_helper.abi.quote import Quote
from sgx_quote_helper.abi.report import Attributes, ReportBody, TargetInfo
from sgx_quote_helper.engine.simulated import SimulatedEngine
from sgx_quote_helper.errors import EngineError, PlatformStateError
from sgx_quote_helper.sim import report_key
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.sim.qe import ECDSA_SHA256, QE_TARGET_INFO, CertifiedKey

SIG = slice(436, 500)  # r || s of the ISV signature in a v3 quote


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    yield Platform.init(Path(tmp_path_factory.mktemp("plat")) / "p")


def _check_signature(certified: CertifiedKey, quote: bytes) -> None:
    r, s = int.from_bytes(quote[436:468], "big"), int.from_bytes(quote[468:500], "big")
    certified.key.public_key().verify(encode_dss_signature(r, s), quote[:432], ECDSA_SHA256)


def test_quote_bytes_match_the_abi_layout(platform: Platform) -> None:
    certified = CertifiedKey.certify(platform, platform.ensure_attestation_key())
    for i in range(5):
        body = ReportBody(report_data=os.urandom(64), mr_enclave=bytes([i]) * 32, isv_svn=i)
        fast, ref = certified.quote(body), certified.quote_via_abi(body)
        assert len(fast) == len(ref) == certified.quote_size
        assert fast[: SIG.start] == ref[: SIG.start] and fast[SIG.stop :] == ref[SIG.stop :]
        _check_signature(certified, fast)
        _check_signature(certified, ref)
        assert certified.quote(body.to_bytes())[SIG.stop :] == fast[SIG.stop :]
        assert Quote.from_bytes(fast).to_bytes() == fast  # parses, and re-encodes to the same bytes
    with pytest.raises(ValueError, match="384 bytes"):
        certified.quote(b"short")


def test_tampered_signature_is_caught(platform: Platform) -> None:
    certified = CertifiedKey.certify(platform, platform.ensure_attestation_key())
    quote = bytearray(certified.quote(ReportBody()))
    quote[440] ^= 1
    with pytest.raises(InvalidSignature):
        _check_signature(certified, bytes(quote))


def test_report_verifier_matches_the_reference_derivation(platform: Platform) -> None:
    targets = [
        QE_TARGET_INFO,
        TargetInfo(mr_enclave=b"\x11" * 32, attributes=Attributes(7, 3), misc_select=1, config_svn=2),
    ]
    secret, svn = os.urandom(16), os.urandom(16)
    for target in targets:
        verifier = report_key.ReportVerifier(secret, svn, target)
        for _ in range(4):
            kid = os.urandom(32)
            assert verifier.report_key(kid) == report_key.derive_report_key(secret, svn, target, kid)
            body = ReportBody(report_data=os.urandom(64))
            report = report_key.make_report(secret, svn, target, body, kid)
            raw = body.to_bytes()
            assert verifier.verify(raw, kid, report.mac)
            assert report_key.verify_report(secret, svn, report, target)
            assert not verifier.verify(raw, os.urandom(32), report.mac)
            assert not verifier.verify(raw[:-1] + bytes([raw[-1] ^ 1]), kid, report.mac)
            assert not verifier.verify(raw, kid, bytes(16))
    other = report_key.ReportVerifier(secret, svn, targets[1])
    report = report_key.make_report(secret, svn, targets[0], ReportBody(), bytes(32))
    assert not other.verify(ReportBody().to_bytes(), bytes(32), report.mac)
    with pytest.raises(PlatformStateError):
        report_key.ReportVerifier(b"short", svn, targets[0])
    with pytest.raises(PlatformStateError):
        other.report_key(b"short")


def test_report_verifier_keeps_the_last_keyid_and_switches_correctly() -> None:
    """The kept REPORT key answers only for its own KEYID: a run of one boot's reports, another
    KEYID in between, and back, each judged as the reference derivation judges it."""
    secret, svn = os.urandom(16), os.urandom(16)
    verifier = report_key.ReportVerifier(secret, svn, QE_TARGET_INFO)
    boot, other = os.urandom(32), os.urandom(32)
    for kid in (boot, boot, other, boot, other, other, boot):
        body = ReportBody(report_data=os.urandom(64))
        report = report_key.make_report(secret, svn, QE_TARGET_INFO, body, kid)
        wrong = other if kid == boot else boot
        assert verifier.verify(body.to_bytes(), kid, report.mac)
        assert not verifier.verify(body.to_bytes(), wrong, report.mac)  # the key kept is not used for it
        assert verifier.verify(body.to_bytes(), kid, report.mac)  # and the switch back is right
        assert not verifier.verify(body.to_bytes(), kid, bytes(16))


def test_engine_accepts_qe_reports_and_follows_a_cpusvn_change(platform: Platform) -> None:
    engine = SimulatedEngine(platform)
    key = engine.supported_key_ids()[0]
    target = engine.init_quote(key, True).target_info
    assert target is not None
    report = platform.ereport(target, b"fast path")
    quote = engine.get_quote(report, key).quote
    assert Quote.from_bytes(quote).body.to_bytes() == report.body.to_bytes()
    wrong = platform.ereport(dataclasses.replace(target, mr_enclave=b"\x01" * 32), b"not for the QE")
    with pytest.raises(EngineError) as refused:
        engine.get_quote(wrong, key)
    assert refused.value.status == QuoteLibStatus.INVALID_REPORT
    # a TCB recovery (new CPUSVN) changes every REPORT key: reports made before stop verifying
    old_identity = platform.identity
    try:
        platform.identity = dataclasses.replace(old_identity, cpusvn=bytes(16))
        with pytest.raises(EngineError):
            engine.get_quote(report, key)
        assert engine.get_quote(platform.ereport(target, b"after"), key).quote
    finally:
        platform.identity = old_identity
    assert engine.get_quote(report, key).quote


def test_raw_report_path_is_get_quote_of_the_parsed_report(platform: Platform) -> None:
    engine = SimulatedEngine(platform)
    key = engine.supported_key_ids()[0]
    target = engine.init_quote(key, True).target_info
    assert target is not None
    report = platform.ereport(target, b"raw path", mr_enclave=b"\x42" * 32)
    size = engine.quote_size(key)
    raw = engine.get_quote_raw(report.to_bytes(), key, size).quote
    parsed = engine.get_quote(report, key, None, size).quote
    assert len(raw) == len(parsed) == size
    assert raw[: SIG.start] + raw[SIG.stop :] == parsed[: SIG.start] + parsed[SIG.stop :]
    certified = engine._ready()
    _check_signature(certified, raw)
    # the same refusals as get_quote
    wrong = platform.ereport(dataclasses.replace(target, mr_enclave=b"\x01" * 32), b"not for the QE")
    cases = [
        (wrong.to_bytes(), size, QuoteLibStatus.INVALID_REPORT),
        (report.to_bytes(), size - 1, QuoteLibStatus.ERROR_INVALID_PARAMETER),
        (report.to_bytes()[:-1], size, QuoteLibStatus.ERROR_INVALID_PARAMETER),
    ]
    for raw_report, buf_size, status in cases:
        with pytest.raises(EngineError) as refused:
            engine.get_quote_raw(raw_report, key, buf_size)
        assert refused.value.status == status
    with pytest.raises(EngineError) as refused:
        engine.get_quote(wrong, key, None, size)
    assert refused.value.status == QuoteLibStatus.INVALID_REPORT
