"""Security review of the DCAP verifier: each test is a way a forged or wrong quote could be
accepted, built with the test PKI (really signed, SIMULATED names) and checked to be rejected
at the right step (or, for the rules that must *not* reject, accepted).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from sgx_quote_helper.abi.quote import CertificationData, Quote
from sgx_quote_helper.abi.report import Attributes, ReportBody
from sgx_quote_helper.abi.tdreport import TdReport10
from sgx_quote_helper.errors import VerificationError
from sgx_quote_helper.verify import tcb
from sgx_quote_helper.verify.collateral import Collateral, from_pcs_responses
from sgx_quote_helper.verify.status import TcbStatus
from sgx_quote_helper.verify.steps import Step
from sgx_quote_helper.verify.steps import check_tdx_module as _tdx_module
from sgx_quote_helper.verify.tcbinfo import TcbInfo
from sgx_quote_helper.verify.verifier import Verifier, verify

from .verify_pki import COMPONENTS, NOW, SimPki, _cert, _crl, _key, _pem, raw_sign

D = timedelta(days=1)


def _reject(p: SimPki, q: bytes, c: Collateral, step: Step, reason: str, now: object = NOW) -> None:
    with pytest.raises(VerificationError) as exc:
        verify(q, c, now, root_ca=p.root_der)  # type: ignore[arg-type]
    assert (exc.value.step, exc.value.reason) == (step, reason), exc.value


def _resign(p: SimPki, c: Collateral, tcb_info: str | None = None, qe: str | None = None) -> Collateral:
    k = p.keys["tcb"]
    if tcb_info is not None:
        c = dataclasses.replace(c, tcb_info=tcb_info, tcb_info_signature=raw_sign(k, tcb_info.encode()))
    if qe is not None:
        c = dataclasses.replace(c, qe_identity=qe, qe_identity_signature=raw_sign(k, qe.encode()))
    return c


def _edit_json(text: str, **changes: object) -> str:
    obj = json.loads(text)
    obj.update(changes)
    return json.dumps(obj, separators=(",", ":"))


def _rebuild(
    p: SimPki,
    quote: bytes,
    *,
    qe_report: ReportBody | None = None,
    chain_pem: str | None = None,
    signed: bytes | None = None,
) -> bytes:
    """Re-assemble a quote: new QE report (re-signed by the PCK leaf), new PCK chain (unsigned
    by design: nothing signs the certification data), ISV signature over ``signed`` (default:
    the correct header||body)."""
    q = Quote.from_bytes(quote)
    sd = q.signature_data
    qc = sd.qe_cert
    if qe_report is not None:
        qc = dataclasses.replace(
            qc, qe_report=qe_report, qe_report_signature=raw_sign(p.keys["leaf"], qe_report.to_bytes())
        )
    if chain_pem is not None:
        qc = dataclasses.replace(qc, certification_data=CertificationData(5, chain_pem.encode() + b"\0"))
    q = dataclasses.replace(q, signature_data=dataclasses.replace(sd, qe_cert=qc))
    sig = raw_sign(p.keys["att"], q.signed_bytes if signed is None else signed)
    q = dataclasses.replace(q, signature_data=dataclasses.replace(q.signature_data, signature=sig))
    return q.to_bytes()


def _qe_report(p: SimPki, quote: bytes) -> ReportBody:
    return Quote.from_bytes(quote).signature_data.qe_cert.qe_report


# --- chain tied to the pinned root by signature, not by name -------------------------------------
def test_look_alike_chain_without_root_is_rejected_by_signature() -> None:
    p = SimPki()
    evil = SimPki()  # same names and serials, other keys
    q = _rebuild(evil, evil.quote(), chain_pem=_pem(evil.leaf, evil.ca))  # no root in the chain
    _reject(p, q, p.collateral(), Step.PCK_CHAIN, "pck-ca-bad-signature")


def test_look_alike_root_is_not_pinned() -> None:
    p, evil = SimPki(), SimPki()
    _reject(p, evil.quote(), p.collateral(), Step.ROOT_CA, "untrusted-root")


def test_leaf_signed_by_another_ca_with_the_right_name() -> None:
    p, evil = SimPki(), SimPki()
    chain = _pem(evil.leaf, p.ca, p.root)  # evil leaf claims the genuine CA as issuer
    q = _rebuild(evil, evil.quote(), chain_pem=chain)
    _reject(p, q, p.collateral(), Step.PCK_CHAIN, "pck-cert-bad-signature")


# --- CRLs: the right issuer, the right serial ------------------------------------------------------
def _crls(p: SimPki, **kw: object) -> Collateral:
    return dataclasses.replace(p.collateral(), **kw)  # type: ignore[arg-type]


W = (NOW - 5 * D, NOW + 25 * D)


def test_pck_crl_signed_by_the_wrong_key_is_rejected() -> None:
    p = SimPki()
    forged = _crl(p.ca_cn, p.keys["root"], (), *W)  # right issuer name, root's key
    _reject(p, p.quote(), _crls(p, pck_crl=forged), Step.CRL, "pck-crl-bad-signature")
    forged = _crl(p.ca_cn, _key(), (), *W)
    _reject(p, p.quote(), _crls(p, pck_crl=forged), Step.CRL, "pck-crl-bad-signature")


def test_root_crl_signed_by_the_wrong_key_is_rejected() -> None:
    p = SimPki()
    forged = _crl(p.root_cn, p.keys["ca"], (), *W)
    _reject(p, p.quote(), _crls(p, root_ca_crl=forged), Step.CRL, "root-ca-crl-bad-signature")


def test_root_crl_revokes_the_pck_ca_by_its_serial() -> None:
    p = SimPki()
    crl = _crl(p.root_cn, p.keys["root"], (p.ca.serial_number,), *W)
    _reject(p, p.quote(), _crls(p, root_ca_crl=crl), Step.CRL, "pck-ca-revoked")


def test_root_crl_revokes_the_tcb_signing_cert() -> None:
    p = SimPki()
    crl = _crl(p.root_cn, p.keys["root"], (p.tcb.serial_number,), *W)
    _reject(p, p.quote(), _crls(p, root_ca_crl=crl), Step.TCB_INFO, "tcb-signing-cert-revoked")


def test_other_serials_in_the_crls_do_not_reject() -> None:
    p = SimPki()
    c = _crls(
        p,
        root_ca_crl=_crl(p.root_cn, p.keys["root"], (0x1234, 99), *W),  # leaf's serial in the wrong CRL
        pck_crl=_crl(p.ca_cn, p.keys["ca"], (2, 3, 0x1235), *W),  # CA / signer serials in the wrong CRL
    )
    assert verify(p.quote(), c, NOW, root_ca=p.root_der).accepted


def test_crl_windows_are_exclusive_at_next_update() -> None:
    p = SimPki()
    _reject(p, p.quote(), p.collateral(), Step.CRL, "root-ca-crl-expired", now=W[1])
    pck_only = _crls(p, pck_crl=_crl(p.ca_cn, p.keys["ca"], (), NOW - 5 * D, NOW + D))
    _reject(p, p.quote(), pck_only, Step.CRL, "pck-crl-expired", now=NOW + D)


# --- TCB signing chain ----------------------------------------------------------------------------
def test_tcb_signing_cert_not_issued_by_the_root() -> None:
    p = SimPki()
    other = _key()
    signer = _cert("SIMULATED Intel SGX TCB Signing", other, p.root_cn, _key(), False, 3)
    c = p.collateral()
    chain = _pem(signer, p.root)
    c = dataclasses.replace(
        c,
        tcb_info_issuer_chain=chain,
        tcb_info_signature=raw_sign(other, c.tcb_info.encode()),
        qe_identity_issuer_chain=chain,
        qe_identity_signature=raw_sign(other, c.qe_identity.encode()),
    )
    _reject(p, p.quote(), c, Step.TCB_INFO, "tcb-signing-cert-bad-signature")


def test_pck_ca_cannot_sign_collateral() -> None:
    p = SimPki()
    c = p.collateral()
    chain = _pem(p.ca, p.root)  # issued by the root, but not a TCB Signing cert
    c = dataclasses.replace(
        c,
        tcb_info_issuer_chain=chain,
        tcb_info_signature=raw_sign(p.keys["ca"], c.tcb_info.encode()),
        qe_identity_issuer_chain=chain,
        qe_identity_signature=raw_sign(p.keys["ca"], c.qe_identity.encode()),
    )
    _reject(p, p.quote(), c, Step.TCB_INFO, "tcb-signing-cert-wrong-role")


def test_qe_identity_chain_is_checked_when_it_differs() -> None:
    p, evil = SimPki(), SimPki()
    c = p.collateral()
    c = dataclasses.replace(
        c,
        qe_identity_issuer_chain=_pem(evil.tcb),
        qe_identity_signature=raw_sign(evil.keys["tcb"], c.qe_identity.encode()),
    )
    _reject(p, p.quote(), c, Step.QE_IDENTITY, "tcb-signing-cert-bad-signature")


# --- exact signed bytes ---------------------------------------------------------------------------
def test_pcs_loader_keeps_non_compact_signed_text() -> None:
    """Signed over a pretty-printed body: verifies only if the loader keeps those exact bytes."""
    p = SimPki()
    k = p.keys["tcb"]
    tcb_text = json.dumps(json.loads(p.tcb_info_text()), indent=2)
    qe_text = json.dumps(json.loads(p.qe_identity_text()), indent=1)
    c = p.collateral()
    tcb_resp = '{ "tcbInfo" : ' + tcb_text + ' , "signature":"' + raw_sign(k, tcb_text.encode()).hex() + '" }'
    qe_resp = (
        '{"enclaveIdentity":' + qe_text + ',\n"signature":"' + raw_sign(k, qe_text.encode()).hex() + '"}'
    )
    loaded = from_pcs_responses(
        tcb_info_response=tcb_resp.encode(),
        tcb_info_issuer_chain=c.tcb_info_issuer_chain,
        qe_identity_response=qe_resp.encode(),
        pck_crl=c.pck_crl,
        root_ca_crl=c.root_ca_crl,
    )
    assert loaded.tcb_info == tcb_text and loaded.qe_identity == qe_text
    assert verify(p.quote(), loaded, NOW, root_ca=p.root_der).accepted
    # and the compact re-serialisation of the same content does not carry that signature
    compact = dataclasses.replace(loaded, tcb_info=json.dumps(json.loads(tcb_text), separators=(",", ":")))
    _reject(p, p.quote(), compact, Step.TCB_INFO, "tcb-info-bad-signature")


# --- FMSPC, PCE-ID, TEE kinds ---------------------------------------------------------------------
@pytest.mark.parametrize("fmspc", ["00A067110000", "00a067110000"])
def test_fmspc_hex_case_does_not_matter(fmspc: str) -> None:
    p = SimPki()
    c = _resign(p, p.collateral(), tcb_info=_edit_json(p.tcb_info_text(), fmspc=fmspc))
    assert verify(p.quote(), c, NOW, root_ca=p.root_der).accepted


def test_pce_id_mismatch_is_rejected() -> None:
    p = SimPki()
    c = _resign(p, p.collateral(), tcb_info=_edit_json(p.tcb_info_text(), pceId="0100"))
    _reject(p, p.quote(), c, Step.PLATFORM_MATCH, "pceid-mismatch")


def test_td_qe_identity_or_tdx_tcb_info_for_an_sgx_quote() -> None:
    p = SimPki()
    c = _resign(p, p.collateral(), qe=_edit_json(p.qe_identity_text(), id="TD_QE"))
    _reject(p, p.quote(), c, Step.PLATFORM_MATCH, "qe-identity-wrong-tee")
    c = _resign(p, p.collateral(), qe=_edit_json(p.qe_identity_text(), id="QVE"))
    _reject(p, p.quote(), c, Step.PLATFORM_MATCH, "qe-identity-wrong-tee")
    mod = {"mrsigner": "00" * 48, "attributes": "00" * 8, "attributesMask": "ff" * 8}
    tdx = json.loads(p.tcb_info_text())
    for lv in tdx["tcbLevels"]:
        lv["tcb"]["tdxtcbcomponents"] = [{"svn": 0}] * 16
    tdx.update(id="TDX", tdxModule=mod)
    c = _resign(p, p.collateral(), tcb_info=json.dumps(tdx))
    _reject(p, p.quote(), c, Step.PLATFORM_MATCH, "tcb-info-wrong-tee")


# --- QE report data ---------------------------------------------------------------------------------
def test_qe_report_data_must_bind_key_and_auth_data() -> None:
    p = SimPki()
    q = p.quote()
    rep = _qe_report(p, q)
    att = Quote.from_bytes(q).signature_data.attestation_key
    wrong = dataclasses.replace(rep, report_data=hashlib.sha256(att).digest() + bytes(32))  # no auth data
    _reject(
        p, _rebuild(p, q, qe_report=wrong), p.collateral(), Step.QE_REPORT_DATA, "qe-report-data-mismatch"
    )
    low_only = dataclasses.replace(rep, report_data=bytes(32) + rep.report_data[:32])  # hash in upper half
    _reject(
        p, _rebuild(p, q, qe_report=low_only), p.collateral(), Step.QE_REPORT_DATA, "qe-report-data-mismatch"
    )


def test_qe_report_data_upper_half_is_not_compared() -> None:
    """QVL and dcap-qvl compare REPORTDATA[0:32] only (dcap-quote.md §1.4): we mirror that."""
    p = SimPki()
    q = p.quote()
    rep = _qe_report(p, q)
    odd = dataclasses.replace(rep, report_data=rep.report_data[:32] + b"\x01" * 32)
    assert verify(_rebuild(p, q, qe_report=odd), p.collateral(), NOW, root_ca=p.root_der).accepted


# --- QE report vs QE Identity ------------------------------------------------------------------------
def test_qe_attributes_masked_and_little_endian() -> None:
    p = SimPki()
    q = p.quote()
    rep = _qe_report(p, q)
    # DEBUG (0x02) is inside the mask FB..: a debug QE does not match
    dbg = dataclasses.replace(rep, attributes=Attributes(0x13, 0xE7))
    _reject(
        p, _rebuild(p, q, qe_report=dbg), p.collateral(), Step.QE_IDENTITY_MATCH, "qe-attributes-mismatch"
    )
    # MODE64BIT (0x04) is masked out on both sides; XFRM is masked out entirely
    ok = dataclasses.replace(rep, attributes=Attributes(0x15, 0x3))
    assert verify(_rebuild(p, q, qe_report=ok), p.collateral(), NOW, root_ca=p.root_der).accepted
    # identity bytes are the report's little-endian flags: "1101..." means flags 0x0111
    c = _resign(p, p.collateral(), qe=_edit_json(p.qe_identity_text(), attributes="1101" + "00" * 14))
    _reject(p, q, c, Step.QE_IDENTITY_MATCH, "qe-attributes-mismatch")
    le = dataclasses.replace(rep, attributes=Attributes(0x111, 0xE7))
    assert verify(_rebuild(p, q, qe_report=le), c, NOW, root_ca=p.root_der).accepted


def test_qe_miscselect_report_side_masked_only() -> None:
    """QVL's EnclaveReportVerifier: ``report.miscselect & mask == identity.miscselect`` (the
    identity's value is not masked), on quotes re-signed under the simulated PKI."""
    p = SimPki()
    q = p.quote()
    rep = _qe_report(p, q)
    bad = dataclasses.replace(rep, misc_select=1)
    _reject(
        p, _rebuild(p, q, qe_report=bad), p.collateral(), Step.QE_IDENTITY_MATCH, "qe-miscselect-mismatch"
    )
    # report bits outside the mask are ignored (identity 0x00000001, mask 0x0000000F, LE hex)
    c = _resign(
        p,
        p.collateral(),
        qe=_edit_json(p.qe_identity_text(), miscselect="01000000", miscselectMask="0F000000"),
    )
    fine = dataclasses.replace(rep, misc_select=0x70000001)
    assert verify(_rebuild(p, q, qe_report=fine), c, NOW, root_ca=p.root_der).accepted
    _reject(p, q, c, Step.QE_IDENTITY_MATCH, "qe-miscselect-mismatch")  # report has bit 0 clear
    # an identity value with bits outside its own mask matches no report (masking both sides would
    # accept 0x80000001 here; QVL does not)
    c = _resign(
        p,
        p.collateral(),
        qe=_edit_json(p.qe_identity_text(), miscselect="01000080", miscselectMask="0F000000"),
    )
    same = dataclasses.replace(rep, misc_select=0x80000001)
    _reject(p, _rebuild(p, q, qe_report=same), c, Step.QE_IDENTITY_MATCH, "qe-miscselect-mismatch")


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [("mr_signer", b"\x01" * 32, "qe-mrsigner-mismatch"), ("isv_prod_id", 2, "qe-isvprodid-mismatch")],
)
def test_qe_identity_mrsigner_and_prodid(field: str, value: object, reason: str) -> None:
    p = SimPki()
    q = p.quote()
    bad = dataclasses.replace(_qe_report(p, q), **{field: value})  # type: ignore[arg-type]
    _reject(p, _rebuild(p, q, qe_report=bad), p.collateral(), Step.QE_IDENTITY_MATCH, reason)


# --- ISV signature region and encodings ---------------------------------------------------------
def test_v5_signature_must_cover_the_body_descriptor() -> None:
    p = SimPki(quote_version=5)
    q = p.quote()
    assert verify(q, p.collateral(), NOW, root_ca=p.root_der).accepted
    header_body = q[:48] + q[54 : 54 + 384]  # header || body, without type || size
    _reject(p, _rebuild(p, q, signed=header_body), p.collateral(), Step.ISV_SIGNATURE, "quote-bad-signature")


@pytest.mark.parametrize("version", [3, 4])
def test_signature_over_header_and_body_only(version: int) -> None:
    p = SimPki(quote_version=version)
    q = p.quote()
    _reject(p, _rebuild(p, q, signed=q[:48]), p.collateral(), Step.ISV_SIGNATURE, "quote-bad-signature")
    _reject(p, _rebuild(p, q, signed=q[48:432]), p.collateral(), Step.ISV_SIGNATURE, "quote-bad-signature")


def _sign_with_leading_zero(key: ec.EllipticCurvePrivateKey, data: bytes, which: int) -> bytes:
    for _ in range(20000):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        if (r, s)[which] < 1 << 248:
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    raise AssertionError("no short signature found")  # pragma: no cover


@pytest.mark.parametrize("which", [0, 1])
def test_signature_r_or_s_with_leading_zero_bytes(which: int) -> None:
    p = SimPki()
    q = Quote.from_bytes(p.quote())
    sig = _sign_with_leading_zero(p.keys["att"], q.signed_bytes, which)
    assert sig[32 * which] == 0
    q = dataclasses.replace(q, signature_data=dataclasses.replace(q.signature_data, signature=sig))
    assert verify(q.to_bytes(), p.collateral(), NOW, root_ca=p.root_der).accepted


def test_attestation_key_is_raw_x_then_y() -> None:
    p = SimPki()
    q = Quote.from_bytes(p.quote())
    xy = q.signature_data.attestation_key
    swapped = dataclasses.replace(q.signature_data, attestation_key=xy[32:] + xy[:32])
    with pytest.raises(VerificationError) as exc:
        verify(
            dataclasses.replace(q, signature_data=swapped).to_bytes(), p.collateral(), NOW, root_ca=p.root_der
        )
    assert exc.value.step in (Step.QE_REPORT_DATA, Step.ISV_SIGNATURE)
    att = (
        p.keys["att"]
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    assert xy == att[1:]


# --- TCB level selection ------------------------------------------------------------------------
def test_every_component_and_pcesvn_count() -> None:
    p = SimPki()
    for index in (0, 15, 16):  # first component, last component, pcesvn
        text = json.loads(p.tcb_info_text())
        top = text["tcbLevels"][0]["tcb"]
        if index < 16:
            top["sgxtcbcomponents"][index]["svn"] = COMPONENTS[index] + 1
        else:
            top["pcesvn"] = 14
        c = _resign(p, p.collateral(), tcb_info=json.dumps(text))
        # the top level is disqualified and the lower one (all 1s) fails on component 7 (0 < 1)
        _reject(p, p.quote(), c, Step.TCB_LEVEL, "no-matching-tcb-level")


def test_pcesvn_comes_from_the_pck_cert_not_the_header() -> None:
    p = SimPki()  # header pce_svn 15, PCK cert PCESVN 13
    text = json.loads(p.tcb_info_text())
    text["tcbLevels"][0]["tcb"]["pcesvn"] = 15
    c = _resign(p, p.collateral(), tcb_info=json.dumps(text))
    _reject(p, p.quote(), c, Step.TCB_LEVEL, "no-matching-tcb-level")


# --- TDX module identity ---------------------------------------------------------------------------
def _tdx_info(mrsigner: str = "aa" * 48, attributes: str = "00" * 8, mask: str = "ff" * 8) -> TcbInfo:
    mod = {"mrsigner": mrsigner, "attributes": attributes, "attributesMask": mask}
    level = {
        "tcb": {"sgxtcbcomponents": [{"svn": 0}] * 16, "pcesvn": 0, "tdxtcbcomponents": [{"svn": 0}] * 16},
        "tcbDate": "2024-01-01T00:00:00Z",
        "tcbStatus": "UpToDate",
    }
    ids = [
        {**mod, "id": "TDX_01", "tcbLevels": [
            {"tcb": {"isvsvn": 4}, "tcbDate": "2024-01-01T00:00:00Z", "tcbStatus": "UpToDate"},
            {"tcb": {"isvsvn": 2}, "tcbDate": "2023-01-01T00:00:00Z", "tcbStatus": "Revoked"}]},
    ]  # fmt: skip
    body = {
        "id": "TDX", "version": 3, "issueDate": "2025-01-01T00:00:00Z", "nextUpdate": "2025-02-01T00:00:00Z",
        "fmspc": "00806f050000", "pceId": "0000", "tcbType": 0, "tcbEvaluationDataNumber": 17,
        "tcbLevels": [level], "tdxModule": mod, "tdxModuleIdentities": ids,
    }  # fmt: skip
    return TcbInfo.parse(json.dumps(body))


def _td(tee_tcb_svn: bytes, mrsigner: bytes = b"\xaa" * 48, seam_attr: bytes = bytes(8)) -> TdReport10:
    z48 = bytes(48)
    return TdReport10(
        tee_tcb_svn,
        z48,
        mrsigner,
        seam_attr,
        bytes(8),
        bytes(8),
        z48,
        z48,
        z48,
        z48,
        z48,
        z48,
        z48,
        z48,
        bytes(64),
    )


def test_tdx_module_identity_checks() -> None:
    info = _tdx_info()
    assert _tdx_module(info, _td(bytes([4, 1] + [0] * 14)))[0] is TcbStatus.UP_TO_DATE
    assert _tdx_module(info, _td(bytes([3, 1] + [0] * 14)))[0] is TcbStatus.REVOKED
    with pytest.raises(VerificationError, match="tdx-module-tcb-not-supported"):
        _tdx_module(info, _td(bytes([1, 1] + [0] * 14)))
    with pytest.raises(VerificationError, match="tdx-module-mrsigner-mismatch"):
        _tdx_module(info, _td(bytes([4, 1] + [0] * 14), mrsigner=b"\xab" * 48))
    with pytest.raises(VerificationError, match="tdx-module-attributes-mismatch"):
        _tdx_module(info, _td(bytes([4, 1] + [0] * 14), seam_attr=b"\x00\x01" + bytes(6)))
    with pytest.raises(VerificationError, match="tdx-module-unknown"):
        _tdx_module(info, _td(bytes([4, 2] + [0] * 14)))
    masked = _tdx_info(mask="ff00" + "ff" * 6)
    assert _tdx_module(masked, _td(bytes([4, 1] + [0] * 14), seam_attr=b"\x00\x01" + bytes(6)))[0] is not None
    # QVL masks the report side only: an identity value with a bit outside its mask matches nothing
    odd = _tdx_info(attributes="0001" + "00" * 6, mask="ff00" + "ff" * 6)
    with pytest.raises(VerificationError, match="tdx-module-attributes-mismatch"):
        _tdx_module(odd, _td(bytes([4, 1] + [0] * 14), seam_attr=b"\x00\x01" + bytes(6)))
    assert tcb.converge_module(TcbStatus.REVOKED, TcbStatus.UP_TO_DATE) is TcbStatus.REVOKED


# --- caches ------------------------------------------------------------------------------------------
def test_cached_success_does_not_hide_later_expiry_or_other_collateral() -> None:
    p = SimPki()
    v = Verifier(p.root_der)
    q, c = p.quote(), p.collateral()
    assert v.verify(q, c, NOW).accepted
    for now, reason in ((NOW + 26 * D, "root-ca-crl-expired"), (NOW - 6 * D, "root-ca-crl-not-yet-valid")):
        with pytest.raises(VerificationError) as exc:
            v.verify(q, c, now)
        assert exc.value.reason == reason
    assert v.verify(q, c, NOW).accepted
    # new, validly signed QE Identity with another MRSIGNER: the cached QE match must not be reused
    other = _resign(p, c, qe=_edit_json(p.qe_identity_text(), mrsigner="00" * 32))
    with pytest.raises(VerificationError) as exc:
        v.verify(q, other, NOW)
    assert exc.value.reason == "qe-mrsigner-mismatch"
    # new TCB Info: the cached platform level must not be reused
    worse = json.loads(p.tcb_info_text())
    worse["tcbLevels"][0]["tcbStatus"] = "Revoked"
    verdict = v.verify(q, _resign(p, c, tcb_info=json.dumps(worse)), NOW)
    assert verdict.status is TcbStatus.REVOKED and not verdict.accepted


def test_cache_is_per_root() -> None:
    p, evil = SimPki(), SimPki()
    good = Verifier(p.root_der)
    assert good.verify(p.quote(), p.collateral(), NOW).accepted
    with pytest.raises(VerificationError) as exc:
        Verifier(evil.root_der).verify(p.quote(), p.collateral(), NOW)
    assert exc.value.step is Step.ROOT_CA
    with pytest.raises(VerificationError):
        good.verify(evil.quote(), evil.collateral(), NOW)


# --- regressions found in review --------------------------------------------------------------
def test_parsed_quote_with_another_key_type_is_refused() -> None:
    """A caller-built Quote bypasses the parser's key-type check; step 1 must refuse it."""
    p = SimPki()
    q = Quote.from_bytes(p.quote())
    q = dataclasses.replace(q, header=dataclasses.replace(q.header, att_key_type=3))
    with pytest.raises(VerificationError) as exc:
        verify(q, p.collateral(), NOW, root_ca=p.root_der)
    assert (exc.value.step, exc.value.reason) == (Step.QUOTE_FORMAT, "unsupported-attestation-key-type")


def test_qe_identity_attribute_bits_outside_the_mask_are_not_masked_away() -> None:
    """QVL compares ``applyMask(report.attributes, mask) == identity.attributes``: an identity whose
    value has a bit outside its mask (XFRM 0x1F under mask 00) matches no QE, even one whose report
    carries the very same bits. Masking both sides (the old rule) accepted it."""
    p = SimPki()
    text = _edit_json(p.qe_identity_text(), attributes="1100000000000000" + "1F" + "00" * 7)
    c = _resign(p, p.collateral(), qe=text)
    _reject(p, p.quote(), c, Step.QE_IDENTITY_MATCH, "qe-attributes-mismatch")
    rep = _qe_report(p, p.quote())
    same = dataclasses.replace(rep, attributes=Attributes(0x11, 0x1F))
    _reject(p, _rebuild(p, p.quote(), qe_report=same), c, Step.QE_IDENTITY_MATCH, "qe-attributes-mismatch")


def test_reissued_root_with_the_same_name_and_key_is_not_the_pinned_root() -> None:
    """QVL pins the root's signature bytes, not only its key (dcap-quote.md §4 step 1)."""
    p = SimPki()
    twin = _cert(p.root_cn, p.keys["root"], p.root_cn, p.keys["root"], True, 77)
    q = _rebuild(p, p.quote(), chain_pem=_pem(p.leaf, p.ca, twin))
    _reject(p, q, p.collateral(), Step.ROOT_CA, "untrusted-root")


@pytest.mark.parametrize(
    ("window", "reason"),
    [((NOW - 60 * D, NOW - D), "pck-ca-expired"), ((NOW + D, NOW + 60 * D), "pck-ca-not-yet-valid")],
)
def test_pck_ca_validity_window(window: tuple[object, object], reason: str) -> None:
    p = SimPki()
    ca = _cert(p.ca_cn, p.keys["ca"], p.root_cn, p.keys["root"], True, 2, *window)  # type: ignore[arg-type]
    q = _rebuild(p, p.quote(), chain_pem=_pem(p.leaf, ca, p.root))
    _reject(p, q, p.collateral(), Step.PCK_CHAIN, reason)


@pytest.mark.parametrize(
    ("report", "identity", "ok"), [(1, "01000000", True), (0x01000000, "01000000", False)]
)
def test_qe_miscselect_hex_is_the_little_endian_report_bytes(report: int, identity: str, ok: bool) -> None:
    """Review fix: "01000000" is MISCSELECT 1 (QVL vectorToUint32, dcap-qvl agree); it was read big-endian."""
    p = SimPki()
    q = p.quote()
    q = _rebuild(p, q, qe_report=dataclasses.replace(_qe_report(p, q), misc_select=report))
    c = _resign(p, p.collateral(), qe=_edit_json(p.qe_identity_text(), miscselect=identity))
    if ok:
        assert verify(q, c, NOW, root_ca=p.root_der).accepted
    else:
        _reject(p, q, c, Step.QE_IDENTITY_MATCH, "qe-miscselect-mismatch")


def test_qe_miscselect_reading_agrees_with_dcap_qvl() -> None:
    dcap_qvl = pytest.importorskip("dcap_qvl")
    p = SimPki()
    q = p.quote()
    for report, identity in ((1, "01000000"), (0x01000000, "01000000"), (1, "00000001")):
        quote = _rebuild(p, q, qe_report=dataclasses.replace(_qe_report(p, q), misc_select=report))
        c = _resign(p, p.collateral(), qe=_edit_json(p.qe_identity_text(), miscselect=identity))
        try:
            dcap_qvl.verify_with_root_ca(
                quote,
                dcap_qvl.QuoteCollateralV3.from_json(c.to_dcap_qvl_json()),
                p.root_der,
                int(NOW.timestamp()),
            )
            theirs = True
        except ValueError:
            theirs = False
        try:
            ours = verify(quote, c, NOW, root_ca=p.root_der).accepted
        except VerificationError:
            ours = False
        assert ours == theirs, (report, identity)
