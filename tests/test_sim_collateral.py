"""sim.collateral: simulated collateral is signed like Intel's, and an independent verifier
(dcap-qvl's ``verify_with_root_ca``) accepts simulated quotes with the expected TCB status."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sgx_quote_helper.abi.keyid import AttKeyId
from sgx_quote_helper.abi.quote import Quote
from sgx_quote_helper.engine.simulated import SimulatedEngine
from sgx_quote_helper.sim import collateral as C
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.sim.qe import QE_TARGET_INFO
from sgx_quote_helper.sim.tcb_history import TCB_LEVELS, matching_level

from .conftest import REAL

KEY_ID = AttKeyId.ecdsa_p256_qe3()
NOW = dt.datetime(2026, 6, 1, 8, 0, 0, 250000, tzinfo=dt.UTC)
NOW_S = int(NOW.timestamp())


def _make(tmp: Path, **kwargs: Any) -> tuple[Platform, bytes]:
    """A platform (created at NOW - 2 days) and one quote from it."""
    p = Platform.init(tmp, now=NOW - dt.timedelta(days=2), **kwargs)
    e = SimulatedEngine(p)
    e.init_quote(KEY_ID, True)
    report = p.ereport(QE_TARGET_INFO, b"collateral test", mr_enclave=b"\x33" * 32, mr_signer=b"\x44" * 32)
    return p, e.get_quote(report, KEY_ID).quote


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory) -> tuple[Platform, bytes]:
    return _make(tmp_path_factory.mktemp("coll") / "state")


def _verify(platform: Platform, quote: bytes, now: int = NOW_S, collateral: str | None = None) -> Any:
    text = collateral if collateral is not None else C.quote_collateral_json(platform, NOW)
    return dcap_qvl.verify_with_root_ca(
        quote, dcap_qvl.QuoteCollateralV3.from_json(text), C.root_ca_der(platform), now
    )


def _raw_verify(pub: ec.EllipticCurvePublicKey, sig: bytes, data: bytes) -> None:
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    pub.verify(der, data, ec.ECDSA(hashes.SHA256()))


def test_default_platform_is_up_to_date(default: tuple[Platform, bytes]) -> None:
    res = _verify(*default)
    assert res.status == "UpToDate"
    assert list(res.advisory_ids) == []


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"cpusvn": bytes([13, 13, 3, 3, 255, 255, 1] + [0] * 9)}, "OutOfDate"),
        ({"cpusvn": bytes([14, 14, 3, 3, 255, 255, 1] + [0] * 9)}, "SWHardeningNeeded"),
        ({"cpusvn": bytes([15, 15, 3, 3, 255, 255, 0] + [0] * 9)}, "ConfigurationNeeded"),
        ({"cpusvn": bytes(16), "pcesvn": 0}, "OutOfDate"),
        ({"pcesvn": 12}, "OutOfDate"),
        ({"qe_svn": 5}, "OutOfDate"),
        ({"ca": "platform"}, "UpToDate"),
        ({"cert_data": "encrypted-ppid"}, "UpToDate"),
    ],
)
def test_tcb_status_follows_platform_svns(tmp_path: Path, kwargs: dict[str, Any], status: str) -> None:
    platform, quote = _make(tmp_path / "p", **kwargs)
    res = _verify(platform, quote)
    assert res.status == status
    level = matching_level(tuple(platform.identity.cpusvn), platform.identity.pcesvn)
    assert level is not None
    assert set(level.advisory_ids) <= set(res.advisory_ids)


def test_history_shape() -> None:
    statuses = [lv.status for lv in TCB_LEVELS]
    assert statuses[0] == "UpToDate"
    assert {"SWHardeningNeeded", "ConfigurationNeeded", "OutOfDate"} <= set(statuses)
    floor = TCB_LEVELS[-1]
    assert floor.components == (0,) * 16 and floor.pcesvn == 0 and floor.status == "OutOfDate"
    assert all(lv.advisory_ids for lv in TCB_LEVELS[1:])


def _flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


ISV_SIG = "ISV enclave report signature is invalid"
QE_SIG = "Signature is invalid for qe_report"
QE_HASH = "QE report hash mismatch"


@pytest.mark.parametrize(
    ("where", "offset", "reason"),
    [
        ("header qe_svn", 8, ISV_SIG),
        ("header user_data", 30, ISV_SIG),
        ("body mrenclave", 48 + 64, ISV_SIG),
        ("body report_data", 48 + 320, ISV_SIG),
        ("isv signature", 436 + 5, ISV_SIG),
        ("attestation key", 436 + 64 + 5, QE_HASH),
        ("qe report", 436 + 128 + 320, QE_SIG),
        ("qe report mrsigner", 436 + 128 + 128, QE_SIG),
        ("qe report signature", 436 + 512 + 5, QE_SIG),
        ("qe auth data", 436 + 578 + 3, QE_HASH),
    ],
)
def test_tampered_quote_rejected(
    default: tuple[Platform, bytes], where: str, offset: int, reason: str
) -> None:
    platform, quote = default
    with pytest.raises(ValueError, match=reason):  # dcap-qvl's error text says which check failed
        _verify(platform, _flip(quote, offset))


def test_intel_root_rejects_simulated_quote(default: tuple[Platform, bytes]) -> None:
    platform, quote = default
    coll = dcap_qvl.QuoteCollateralV3.from_json(C.quote_collateral_json(platform, NOW))
    with pytest.raises(ValueError, match="root CA CRL"):
        dcap_qvl.verify(quote, coll, NOW_S)


def test_other_platforms_root_rejects(default: tuple[Platform, bytes], tmp_path: Path) -> None:
    platform, quote = default
    other = Platform.init(tmp_path / "other", now=NOW)
    coll = dcap_qvl.QuoteCollateralV3.from_json(C.quote_collateral_json(platform, NOW))
    with pytest.raises(ValueError, match="InvalidCrlSignatureForPublicKey"):
        dcap_qvl.verify_with_root_ca(quote, coll, C.root_ca_der(other), NOW_S)


def test_collateral_expires(default: tuple[Platform, bytes]) -> None:
    platform, quote = default
    later = NOW_S + 31 * 86400
    with pytest.raises(ValueError, match="expired"):
        _verify(platform, quote, now=later)
    earlier = NOW_S - 2 * 3600  # before issueDate / CRL thisUpdate
    with pytest.raises(ValueError, match="in the future"):
        _verify(platform, quote, now=earlier)


def test_revoked_pck_rejected(default: tuple[Platform, bytes]) -> None:
    platform, quote = default
    coll = C.quote_collateral(platform, NOW)
    serial = platform.certs["pck"].serial_number
    coll["pck_crl"] = C.pck_crl_der(platform, NOW, revoked_serials=(serial,)).hex()
    with pytest.raises(ValueError, match="CertRevoked"):
        _verify(platform, quote, collateral=json.dumps(coll))


def test_json_shape_matches_dcap_qvl_files(default: tuple[Platform, bytes]) -> None:
    platform, _ = default
    ours = C.quote_collateral(platform, NOW)
    real_files = sorted(REAL.glob("*/collateral-*.dcap-qvl.json"))
    if not real_files:
        pytest.skip("real collateral not available")
    real = json.loads(real_files[0].read_text())
    assert set(ours) == set(real)
    for key in ("root_ca_crl", "pck_crl", "tcb_info_signature", "qe_identity_signature"):
        bytes.fromhex(ours[key])
    round_trip = json.loads(dcap_qvl.QuoteCollateralV3.from_json(json.dumps(ours)).to_json())
    assert round_trip["tcb_info"] == ours["tcb_info"]


def test_signed_json_and_dates(default: tuple[Platform, bytes]) -> None:
    platform, _ = default
    tcb_body, chain = C.tcb_info_response(platform, NOW)
    signing, root = x509.load_pem_x509_certificates(chain)
    assert "SGX TCB Signing" in signing.subject.rfc4514_string() and root == platform.certs["root"]
    outer = json.loads(tcb_body)
    inner_text = tcb_body[len(b'{"tcbInfo":') : tcb_body.rindex(b',"signature"')]
    _raw_verify(signing.public_key(), bytes.fromhex(outer["signature"]), inner_text)  # type: ignore[arg-type]
    info = outer["tcbInfo"]
    assert (info["id"], info["version"], info["tcbType"]) == ("SGX", 3, 0)
    assert info["fmspc"] == platform.identity.fmspc.hex().upper() and info["pceId"] == "0000"
    assert inner_text == json.dumps(info, separators=(",", ":")).encode()
    issue = dt.datetime.strptime(info["issueDate"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    nxt = dt.datetime.strptime(info["nextUpdate"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert issue < NOW and nxt - issue == dt.timedelta(days=30)
    qe_body, _ = C.qe_identity_response(platform, NOW)
    qe = json.loads(qe_body)["enclaveIdentity"]
    assert (qe["id"], qe["version"], qe["isvprodid"]) == ("QE", 2, 1)
    assert qe["mrsigner"] == "8C4F5775D796503E96137F77C68A829A0056AC8DED70140B081B094490C57BFF"
    assert qe["tcbLevels"][0]["tcbStatus"] == "UpToDate"


def test_crls_and_pck_cert(default: tuple[Platform, bytes]) -> None:
    platform, _ = default
    root_crl = x509.load_der_x509_crl(C.root_ca_crl_der(platform, NOW))
    pck_crl = x509.load_der_x509_crl(C.pck_crl_der(platform, NOW))
    assert root_crl.issuer == platform.certs["root"].subject
    assert pck_crl.issuer == platform.certs["pck_ca"].subject
    for crl in (root_crl, pck_crl):
        assert crl.extensions.get_extension_for_class(x509.CRLNumber)
        assert crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
        assert crl.last_update_utc < NOW
    leaf_pem, chain = C.pck_cert_pem(platform)
    assert x509.load_pem_x509_certificate(leaf_pem) == platform.certs["pck"]
    assert [c.subject for c in x509.load_pem_x509_certificates(chain)] == [
        platform.certs["pck_ca"].subject,
        platform.certs["root"].subject,
    ]


def test_pccs_helpers(tmp_path: Path) -> None:
    platform, quote = _make(tmp_path / "e", cert_data="encrypted-ppid")
    eppid = Quote.from_bytes(quote).certification_data.encrypted_ppid()
    assert C.decrypt_ppid(platform, eppid.encrypted_ppid) == platform.identity.ppid
    assert C.decrypt_ppid(platform, bytes(384)) is None
    tcbm = C.pck_cert_tcbm(platform)
    assert tcbm == (platform.identity.cpusvn.hex() + "0d00").upper()


def test_shared_pki_verifies_with_one_root(default: tuple[Platform, bytes], tmp_path: Path) -> None:
    first, _ = default
    second, quote = _make(tmp_path / "second", pki_from=first.state.path)
    res = dcap_qvl.verify_with_root_ca(
        quote,
        dcap_qvl.QuoteCollateralV3.from_json(C.quote_collateral_json(second, NOW)),
        C.root_ca_der(first),
        NOW_S,
    )
    assert res.status == "UpToDate"
