"""The simulated TDX platform: TDX module, TDQE, TDX collateral; dcap-qvl is the independent judge.

The TDQE must derive quote bodies as Intel's does (tdx-qgs.md §1.7), refuse any report it did not
see made (every byte of a TDREPORT), and its quotes must verify under the SIMULATED root with
dcap-qvl and with our verifier (UpToDate; OutOfDate for an all-zero TEE_TCB_SVN).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import dcap_qvl
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sgx_quote_helper.abi.codes import QuoteLibStatus
from sgx_quote_helper.abi.quote import CERT_TYPE_PCK_CHAIN, CERT_TYPE_QE_REPORT, Quote
from sgx_quote_helper.abi.tdreport import TdReport10, TdReport15
from sgx_quote_helper.abi.tdx_report import TEE_TCB_INFO_VALID_15, ReportType, TdxReport
from sgx_quote_helper.errors import EngineError, ParseError, PlatformStateError, VerificationError
from sgx_quote_helper.sim import collateral as sgx_collateral
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.sim.tdqe import TDQE_MRSIGNER, TDQE_PROD_ID, Tdqe, check_report
from sgx_quote_helper.sim.tdx_collateral import tdx_quote_collateral, tdx_quote_collateral_json
from sgx_quote_helper.sim.tdx_module import TdIdentity, TdxModule, tee_info_hash, tee_tcb_info_hash
from sgx_quote_helper.sim.tdx_tcb_history import CURRENT_TEE_TCB_SVN
from sgx_quote_helper.verify.collateral import load_dcap_qvl_json
from sgx_quote_helper.verify.status import TcbStatus
from sgx_quote_helper.verify.verifier import Verifier

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
NOW_S = int(NOW.timestamp())
TD = TdIdentity(
    mr_td=b"\x11" * 48,
    rtmr0=b"\x20" * 48,
    rtmr1=b"\x21" * 48,
    rtmr2=b"\x22" * 48,
    rtmr3=b"\x23" * 48,
    mr_config_id=b"\x31" * 48,
    mr_owner=b"\x32" * 48,
    mr_owner_config=b"\x33" * 48,
    mr_servicetd=b"\x44" * 48,
)

#: a TD not bound to a service TD (dcap-qvl and our default policy refuse a non-zero MRSERVICETD)
PLAIN_TD = dataclasses.replace(TD, mr_servicetd=bytes(48))


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Platform:
    return Platform.init(tmp_path_factory.mktemp("tdx") / "p", now=NOW)


@pytest.fixture(scope="module")
def module(platform: Platform) -> TdxModule:
    return TdxModule.open(platform)


@pytest.fixture(scope="module")
def tdqe(module: TdxModule) -> Tdqe:
    return Tdqe.for_platform(module)


def resign(module: TdxModule, r: TdxReport) -> TdxReport:
    """What a TDX module would have made of these fields: hashes and MAC recomputed."""
    ms = dataclasses.replace(
        r.mac_struct,
        tee_tcb_info_hash=tee_tcb_info_hash(r.tee_tcb_info),
        tee_info_hash=tee_info_hash(r.td_info),
    )
    return dataclasses.replace(r, mac_struct=dataclasses.replace(ms, mac=module.mac(ms)))


def dcap_qvl_status(quote: bytes, platform: Platform) -> tuple[str, list[str]]:
    coll = dcap_qvl.QuoteCollateralV3.from_json(tdx_quote_collateral_json(platform, NOW))
    res = dcap_qvl.verify_with_root_ca(quote, coll, sgx_collateral.root_ca_der(platform), NOW_S)
    return res.status, list(res.advisory_ids)


def our_verifier(platform: Platform) -> tuple[Verifier, object]:
    coll = load_dcap_qvl_json(json.dumps(tdx_quote_collateral(platform, NOW)))
    return Verifier(sgx_collateral.root_ca_der(platform)), coll


# -- the TDX module --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1])
def test_report_is_what_the_td_asked_for(module: TdxModule, platform: Platform, version: int) -> None:
    r = module.report(b"nonce", TD, version=version)
    raw = r.to_bytes()
    assert len(raw) == 1024 and TdxReport.from_bytes(raw) == r
    assert r.report_type == ReportType(0x81, 0, version, 0)
    assert r.report_data == b"nonce".ljust(64, b"\0")
    assert r.mac_struct.cpu_svn == platform.identity.cpusvn
    assert r.mac_struct.tee_tcb_info_hash == tee_tcb_info_hash(r.tee_tcb_info)
    assert r.mac_struct.tee_info_hash == tee_info_hash(r.td_info)
    assert module.verify_mac(r)
    tcb = r.tee_tcb_info
    assert tcb.tee_tcb_svn == CURRENT_TEE_TCB_SVN and tcb.mr_signer_seam == bytes(48)
    assert tcb.valid == ((0x301FF if version else 0x1FF).to_bytes(8, "little"))
    assert tcb.tee_tcb_svn2 == (CURRENT_TEE_TCB_SVN if version else bytes(16))
    assert r.td_info.mr_td == TD.mr_td and r.td_info.rtmr3 == TD.rtmr3
    # MRSERVICETD does not exist in the TDX 1.0 layout: those bytes stay reserved (zero)
    assert r.td_info.mr_servicetd == (TD.mr_servicetd if version else bytes(48))


def test_report_refuses_bad_input(module: TdxModule) -> None:
    with pytest.raises(ParseError, match="at most 64"):
        module.report(bytes(65))
    with pytest.raises(Exception, match="version"):
        module.report(b"", version=3)
    with pytest.raises(ParseError, match="mr_td"):
        module.report(b"", TdIdentity(mr_td=bytes(32)))


def test_module_state_init_open_corrupt_force(tmp_path: Path) -> None:
    p = Platform.init(tmp_path / "p", now=NOW)
    assert TdxModule.open(p).tee_tcb_svn == CURRENT_TEE_TCB_SVN  # no tdx.json: current level
    TdxModule.init(p, bytes(16))
    assert TdxModule.open(Platform.open(tmp_path / "p")).tee_tcb_svn == bytes(16)
    (tmp_path / "p" / "tdx.json").write_text('{"format": "sgx-quote-helper simulated TDX module"}')
    with pytest.raises(PlatformStateError, match=r"tdx\.json is corrupt"):
        TdxModule.open(p)
    (tmp_path / "p" / "tdx.json").write_text("[")
    with pytest.raises(PlatformStateError, match="corrupt"):
        TdxModule.open(p)
    # init --force replaces the whole platform, TDX state included
    p2 = Platform.init(tmp_path / "p", now=NOW, force=True)
    assert not (tmp_path / "p" / "tdx.json").exists()
    assert TdxModule.open(p2).tee_tcb_svn == CURRENT_TEE_TCB_SVN


def test_mac_key_is_per_platform(tmp_path: Path, module: TdxModule) -> None:
    other = TdxModule.open(Platform.init(tmp_path / "other", now=NOW))
    r = other.report(b"x")
    assert other.verify_mac(r) and not module.verify_mac(r)
    with pytest.raises(EngineError, match="MAC") as exc:
        check_report(module, r)
    assert exc.value.status == QuoteLibStatus.INVALID_REPORT


# -- the TDQE: body derivation ------------------------------------------------------------------------


def test_v4_body_from_a_tdx10_report(module: TdxModule, tdqe: Tdqe, platform: Platform) -> None:
    r = module.report(b"v4", TD, version=0)
    q = Quote.from_bytes(tdqe.quote(r.to_bytes()))
    assert q.version == 4 and q.body_type is None and type(q.body) is TdReport10
    h = q.header
    assert (h.att_key_type, h.tee_type, h.qe_svn, h.pce_svn) == (
        2,
        0x81,
        tdqe.qe_svn,
        platform.identity.pcesvn,
    )
    assert h.user_data == platform.identity.qe_id + bytes(4)
    b = q.body
    assert b.tee_tcb_svn == r.tee_tcb_info.tee_tcb_svn and b.mr_seam == r.tee_tcb_info.mr_seam
    assert b.mr_signer_seam == bytes(48) and b.seam_attributes == bytes(8)
    info = r.td_info
    for name, src in [
        ("td_attributes", info.attributes),
        ("xfam", info.xfam),
        ("mr_td", info.mr_td),
        ("mr_config_id", info.mr_config_id),
        ("mr_owner", info.mr_owner),
        ("mr_owner_config", info.mr_owner_config),
        ("rtmr0", info.rtmr0),
        ("rtmr1", info.rtmr1),
        ("rtmr2", info.rtmr2),
        ("rtmr3", info.rtmr3),
        ("report_data", r.report_data),
    ]:
        assert getattr(b, name) == src, name
    # signature data: type 6 wrapping the TDQE's certification, type 5 PCK chain inside
    raw = q.to_bytes()
    sig_off = 48 + 584 + 4
    assert int.from_bytes(raw[sig_off + 128 : sig_off + 130], "little") == CERT_TYPE_QE_REPORT
    assert q.certification_data.cert_type == CERT_TYPE_PCK_CHAIN
    assert q.pck_chain_pem is not None and q.pck_chain_pem.startswith(platform.pck_chain_pem())
    qe = q.qe_report
    assert (qe.mr_signer, qe.isv_prod_id, qe.isv_svn) == (TDQE_MRSIGNER, TDQE_PROD_ID, tdqe.qe_svn)
    # the attestation key signs header || body (632 bytes) and is the platform's
    pub = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), b"\x04" + q.signature_data.attestation_key
    )
    sig = q.signature_data.signature
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    from cryptography.hazmat.primitives import hashes

    pub.verify(der, raw[:632], ec.ECDSA(hashes.SHA256()))
    assert pub == platform.ensure_attestation_key().public_key()


def test_v5_body_from_a_tdx15_report(module: TdxModule, tdqe: Tdqe) -> None:
    r = module.report(b"v5", TD, version=1)
    q = Quote.from_bytes(tdqe.quote(r))
    assert q.version == 5 and q.body_type == 3 and type(q.body) is TdReport15
    assert q.body.tee_tcb_svn2 == r.tee_tcb_info.tee_tcb_svn2 and q.body.mr_service_td == TD.mr_servicetd
    assert q.body.report_data == r.report_data and q.body.mr_signer_seam == bytes(48)


def test_tdx10_report_with_a_new_module_gives_v5(module: TdxModule, tdqe: Tdqe) -> None:
    """Version 0, valid 0x301FF and TEE_TCB_SVN != TEE_TCB_SVN2 -> v5 with TEE_TCB_SVN2, no MRSERVICETD."""
    r = module.report(b"", TD, version=0)
    newer = bytes([5]) + CURRENT_TEE_TCB_SVN[1:]
    tcb = dataclasses.replace(r.tee_tcb_info, valid=TEE_TCB_INFO_VALID_15, tee_tcb_svn2=newer)
    q = Quote.from_bytes(tdqe.quote(resign(module, dataclasses.replace(r, tee_tcb_info=tcb))))
    assert q.version == 5 and isinstance(q.body, TdReport15)
    assert q.body.tee_tcb_svn == CURRENT_TEE_TCB_SVN and q.body.tee_tcb_svn2 == newer
    assert q.body.mr_service_td == bytes(48)
    # same SVNs: still a v4 quote
    same = dataclasses.replace(r.tee_tcb_info, valid=TEE_TCB_INFO_VALID_15, tee_tcb_svn2=CURRENT_TEE_TCB_SVN)
    assert (
        Quote.from_bytes(tdqe.quote(resign(module, dataclasses.replace(r, tee_tcb_info=same)))).version == 4
    )


def test_tdx15_report_without_svn2_keeps_tee_tcb_svn(module: TdxModule, tdqe: Tdqe) -> None:
    """Version 1 with valid 0x1FF: we copy TEE_TCB_SVN (Intel copies the invalid TEE_TCB_SVN2, §2.7)."""
    r = module.report(b"", TD, version=1)
    tcb = dataclasses.replace(r.tee_tcb_info, valid=(0x1FF).to_bytes(8, "little"), tee_tcb_svn2=bytes(16))
    q = Quote.from_bytes(tdqe.quote(resign(module, dataclasses.replace(r, tee_tcb_info=tcb))))
    assert isinstance(q.body, TdReport15)
    assert q.body.tee_tcb_svn == CURRENT_TEE_TCB_SVN and q.body.tee_tcb_svn2 == bytes(16)


def test_seam_signer_and_attributes_are_not_copied(module: TdxModule, tdqe: Tdqe) -> None:
    r = module.report(b"", TD)
    tcb = dataclasses.replace(r.tee_tcb_info, mr_signer_seam=b"\x99" * 48, attributes=b"\x01" * 8)
    q = Quote.from_bytes(tdqe.quote(resign(module, dataclasses.replace(r, tee_tcb_info=tcb))))
    assert q.body.mr_signer_seam == bytes(48) and q.body.seam_attributes == bytes(8)


# -- the TDQE: rejections ------------------------------------------------------------------------------


def test_every_tampered_byte_of_a_tdreport_is_rejected(module: TdxModule) -> None:
    for version in (0, 1):
        raw = module.report(b"tamper", TD, version=version).to_bytes()
        check_report(module, TdxReport.from_bytes(raw))
        for off in range(1024):
            bad = raw[:off] + bytes([raw[off] ^ 0x01]) + raw[off + 1 :]
            with pytest.raises(EngineError):
                check_report(module, TdxReport.from_bytes(bad))


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        (lambda r: _rtype(r, type=0x80), "format", "not TDX"),
        (lambda r: _rtype(r, subtype=1), "format", "not TDX"),
        (lambda r: _rtype(r, version=2), "format", "version 2"),
        (lambda r: _rtype(r, version=3), "format", "version 3"),
        (lambda r: _rtype(r, reserved=1), "format", "REPORTMACSTRUCT reserved"),
        (lambda r: _ms(r, reserved1=b"\x01" + bytes(11)), "format", "REPORTMACSTRUCT reserved"),
        (lambda r: _ms(r, reserved2=bytes(31) + b"\x01"), "format", "REPORTMACSTRUCT reserved"),
        (lambda r: _tcb(r, reserved=bytes(94) + b"\x01"), "format", "TEE_TCB_INFO reserved"),
        (lambda r: _tcb(r, tee_tcb_svn2=b"\x01" + bytes(15)), "format", "TEE_TCB_INFO reserved"),
        (lambda r: dataclasses.replace(r, reserved=bytes(16) + b"\x01"), "format", "after TEE_TCB_INFO"),
        (lambda r: _info(r, reserved=bytes(63) + b"\x01"), "format", "TDINFO reserved"),
        (lambda r: _info(r, mr_servicetd=b"\x01" + bytes(47)), "format", "TDINFO reserved"),
        (lambda r: _tcb(r, valid=(0x0FF).to_bytes(8, "little")), "format", "valid"),
        (lambda r: _tcb(r, valid=(0x101FF).to_bytes(8, "little")), "format", "valid"),
        (lambda r: _tcb(r, valid=(0x1000001FF).to_bytes(8, "little")), "format", "valid"),
    ],
)
def test_format_rejections_even_with_a_valid_mac(
    module: TdxModule, tdqe: Tdqe, change: object, status: str, words: str
) -> None:
    """Each check on its own: the altered report is re-hashed and re-MAC'd, so only that check can refuse."""
    bad = resign(module, change(module.report(b"", TD, version=0)))  # type: ignore[operator]
    assert module.verify_mac(bad)
    with pytest.raises(EngineError, match=words) as exc:
        tdqe.quote(bad.to_bytes())
    assert exc.value.status == QuoteLibStatus.QE_REPORT_UNSUPPORTED_FORMAT


def test_hash_and_mac_rejections(module: TdxModule, tdqe: Tdqe) -> None:
    r = module.report(b"", TD)
    # TDINFO changed, hash not updated, MAC recomputed: the hash check refuses
    info = dataclasses.replace(r.td_info, mr_td=b"\x55" * 48)
    ms = r.mac_struct
    forged = dataclasses.replace(r, td_info=info, mac_struct=dataclasses.replace(ms, mac=module.mac(ms)))
    with pytest.raises(EngineError, match="tee_info_hash") as exc:
        tdqe.quote(forged)
    assert exc.value.status == QuoteLibStatus.INVALID_REPORT
    tcb = dataclasses.replace(r.tee_tcb_info, tee_tcb_svn=bytes(16))
    with pytest.raises(EngineError, match="tee_tcb_info_hash"):
        tdqe.quote(dataclasses.replace(r, tee_tcb_info=tcb))
    with pytest.raises(EngineError, match="MAC"):
        tdqe.quote(dataclasses.replace(r, mac_struct=dataclasses.replace(ms, mac=bytes(32))))
    # Intel test_client's "zeroed report": 0x81 then zeros
    with pytest.raises(EngineError):
        tdqe.quote(b"\x81" + bytes(1023))
    with pytest.raises(EngineError, match="1024"):
        tdqe.quote(bytes(1000))


def _rtype(r: TdxReport, **kw: int) -> TdxReport:
    t = dataclasses.replace(r.report_type, **kw)
    return _ms(r, report_type_bytes=t.to_bytes())


def _ms(r: TdxReport, **kw: bytes) -> TdxReport:
    return dataclasses.replace(r, mac_struct=dataclasses.replace(r.mac_struct, **kw))


def _tcb(r: TdxReport, **kw: bytes) -> TdxReport:
    return dataclasses.replace(r, tee_tcb_info=dataclasses.replace(r.tee_tcb_info, **kw))


def _info(r: TdxReport, **kw: bytes) -> TdxReport:
    return dataclasses.replace(r, td_info=dataclasses.replace(r.td_info, **kw))


# -- verification: dcap-qvl and ours agree -------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1])
def test_dcap_qvl_and_verify_accept_up_to_date(
    module: TdxModule, tdqe: Tdqe, platform: Platform, version: int
) -> None:
    quote = tdqe.quote(module.report(b"judge", PLAIN_TD, version=version))
    assert dcap_qvl_status(quote, platform) == ("UpToDate", [])
    v, coll = our_verifier(platform)
    verdict = v.verify(quote, coll, NOW)  # type: ignore[arg-type]
    assert verdict.accepted and verdict.status is TcbStatus.UP_TO_DATE
    assert verdict.identity()["mr_td"] == TD.mr_td.hex()


def test_service_td_binding_is_refused_by_both(module: TdxModule, tdqe: Tdqe, platform: Platform) -> None:
    quote = tdqe.quote(module.report(b"servicetd", TD, version=1))
    with pytest.raises(ValueError, match="service TD"):
        dcap_qvl_status(quote, platform)
    v, coll = our_verifier(platform)
    assert not v.verify(quote, coll, NOW).accepted  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [0, 1])
def test_all_zero_tee_tcb_svn_is_out_of_date(tmp_path: Path, version: int) -> None:
    p = Platform.init(tmp_path / "old", now=NOW)
    m = TdxModule.init(p, bytes(16))
    quote = Tdqe.for_platform(m).quote(m.report(b"old", PLAIN_TD, version=version))
    status, advisories = dcap_qvl_status(quote, p)
    assert status == "OutOfDate" and "INTEL-SA-00837" in advisories
    v, coll = our_verifier(p)
    verdict = v.verify(quote, coll, NOW)  # type: ignore[arg-type]
    assert verdict.status is TcbStatus.OUT_OF_DATE and not verdict.accepted
    assert sorted(verdict.advisory_ids) == sorted(advisories)


def test_old_module_svn_is_out_of_date(tmp_path: Path) -> None:
    p = Platform.init(tmp_path / "oldmod", now=NOW)
    m = TdxModule.init(p, bytes([2]) + CURRENT_TEE_TCB_SVN[1:])  # TDX_01 module SVN 2
    quote = Tdqe.for_platform(m).quote(m.report(b""))
    assert dcap_qvl_status(quote, p)[0] == "OutOfDate"
    v, coll = our_verifier(p)
    assert v.verify(quote, coll, NOW).status is TcbStatus.OUT_OF_DATE  # type: ignore[arg-type]


@pytest.mark.slow
def test_every_signed_byte_of_a_quote_is_checked(module: TdxModule, tdqe: Tdqe, platform: Platform) -> None:
    """Header, body, the attestation key, the QE report and its signature: dcap-qvl and verify refuse."""
    quote = tdqe.quote(module.report(b"flip", TD, version=0))
    v, coll = our_verifier(platform)
    qvl_coll = dcap_qvl.QuoteCollateralV3.from_json(tdx_quote_collateral_json(platform, NOW))
    root = sgx_collateral.root_ca_der(platform)
    sig = 48 + 584 + 4
    qe_report = sig + 128 + 6
    for off in [*range(0, 632), *range(sig, sig + 128), *range(qe_report, qe_report + 384 + 64)]:
        bad = quote[:off] + bytes([quote[off] ^ 0x80]) + quote[off + 1 :]
        with pytest.raises((VerificationError, ParseError)):
            v.verify(bad, coll, NOW)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            dcap_qvl.verify_with_root_ca(bad, qvl_coll, root, NOW_S)


def test_collateral_shape(platform: Platform) -> None:
    c = tdx_quote_collateral(platform, NOW)
    tcb = json.loads(c["tcb_info"])
    assert (tcb["id"], tcb["version"], tcb["fmspc"]) == ("TDX", 3, platform.identity.fmspc.hex().upper())
    assert tcb["tdxModule"] == {"mrsigner": "00" * 48, "attributes": "00" * 8, "attributesMask": "FF" * 8}
    assert [i["id"] for i in tcb["tdxModuleIdentities"]] == ["TDX_01"]
    assert all(len(lv["tcb"]["tdxtcbcomponents"]) == 16 for lv in tcb["tcbLevels"])
    assert tcb["tcbLevels"][0]["tcbStatus"] == "UpToDate" and tcb["tcbLevels"][-1]["tcbStatus"] == "OutOfDate"
    qe = json.loads(c["qe_identity"])
    assert (qe["id"], qe["version"], qe["isvprodid"], qe["mrsigner"]) == (
        "TD_QE",
        2,
        2,
        TDQE_MRSIGNER.hex().upper(),
    )
    # the SGX quote of the same platform does not verify with TDX collateral
    coll = load_dcap_qvl_json(json.dumps(c))
    from sgx_quote_helper.abi.keyid import AttKeyId
    from sgx_quote_helper.engine.simulated import SimulatedEngine
    from sgx_quote_helper.sim.qe import QE_TARGET_INFO

    engine = SimulatedEngine(platform)
    engine.init_quote(AttKeyId.ecdsa_p256_qe3(), True)
    sgx_quote = engine.get_quote(platform.ereport(QE_TARGET_INFO, b"sgx"), AttKeyId.ecdsa_p256_qe3()).quote
    with pytest.raises(VerificationError):
        Verifier(sgx_collateral.root_ca_der(platform)).verify(sgx_quote, coll, NOW)
