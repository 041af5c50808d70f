"""The numbered verification checks, one small function each.

Every check raises :class:`~sgx_quote_helper.errors.VerificationError` with ``step`` set to a
:class:`Step` and a short machine-friendly ``reason``; callers and tests branch on those, never on
message text. The order follows Intel's QVL (``shared/specs/dcap-quote.md`` §4), with dcap-qvl's
stricter time checks (every certificate, CRL, TCB Info and QE Identity must be valid at ``now``).
``verify.verifier`` strings them together and caches what only depends on the collateral.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ..abi.pck import SgxExtensions
from ..abi.quote import (
    ATT_KEY_TYPE_ECDSA_P256,
    CERT_TYPE_PCK_CHAIN,
    CERT_TYPE_PPID_CLEARTEXT,
    INTEL_QE_VENDOR_ID,
    TEE_TYPE_SGX,
    TEE_TYPE_TDX,
    Quote,
)
from ..abi.report import ReportBody
from ..abi.tdreport import TdReport10, TdReport15
from . import chain as ch
from . import tcb
from .cache import intersect as _intersect
from .certificate import DerCertificate
from .collateral import Collateral
from .policy import Policy
from .qeidentity import QeIdentity, QeTcbLevel
from .status import TcbStatus, converge
from .step import Step, fail
from .tcbinfo import TcbInfo, TcbLevel
from .verdict import Body, Verdict, build_verdict

_ECDSA = ec.ECDSA(hashes.SHA256())
_P256 = ec.SECP256R1()


def ecdsa_verify(key: ec.EllipticCurvePublicKey, raw_sig: bytes, data: bytes) -> bool:
    """Verify a raw r||s P-256 signature over SHA-256(data)."""
    sig = encode_dss_signature(int.from_bytes(raw_sig[:32], "big"), int.from_bytes(raw_sig[32:], "big"))
    try:
        key.verify(sig, data, _ECDSA)
    except InvalidSignature:
        return False
    return True


def raw_public_key(xy: bytes, step: Step, what: str) -> ec.EllipticCurvePublicKey:
    """A P-256 key from its 64-byte X||Y form."""
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(_P256, b"\x04" + xy)
    except ValueError:
        raise fail(step, f"{what}-invalid", "not a point on P-256") from None


# --- 1 ------------------------------------------------------------------------------------------
def check_quote_format(quote: Quote) -> None:
    """Step 1 (QVL's ``Quote::validate()``): supported version/TEE combination (a v3 header says
    TEE type SGX, 0), ECDSA P-256 key type, Intel's QE vendor ID, and certification data of a
    type QVL accepts inside the QE certification (1-5; a v4/v5 outer type 6 is the parser's)."""
    h = quote.header
    if h.att_key_type != ATT_KEY_TYPE_ECDSA_P256:  # the parser checks bytes; a built Quote may not
        raise fail(Step.QUOTE_FORMAT, "unsupported-attestation-key-type", str(h.att_key_type))
    if h.qe_vendor_id != INTEL_QE_VENDOR_ID:
        raise fail(Step.QUOTE_FORMAT, "unknown-qe-vendor", h.qe_vendor_id.hex())
    tdx = quote.is_tdx
    if h.tee_type != (TEE_TYPE_TDX if tdx else TEE_TYPE_SGX):  # v3: att_key_data_0, QVL wants SGX
        raise fail(Step.QUOTE_FORMAT, "tee-type-mismatch", f"v{h.version} header TEE type {h.tee_type:#x}")
    if tdx and h.version not in (4, 5):
        raise fail(Step.QUOTE_FORMAT, "unsupported-version")
    cert_type = quote.certification_data.cert_type
    if not CERT_TYPE_PPID_CLEARTEXT <= cert_type <= CERT_TYPE_PCK_CHAIN:
        raise fail(
            Step.QUOTE_FORMAT,
            "unsupported-certification-data-type",
            f"QE certification data type {cert_type} (QVL accepts 1-5)",
        )


# --- 2, 3 ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VerifiedPck:
    """A PCK chain that passed steps 2-3: leaf and PCK CA, the leaf key, its SGX extension, windows
    (``ca_key``: the PCK CA's key as loaded for the chain check, for the PCK CRL's signature)."""

    leaf: x509.Certificate
    ca: x509.Certificate
    key: ec.EllipticCurvePublicKey
    extensions: SgxExtensions
    ca_type: str
    windows: tuple[ch.Window, ...]
    ca_key: ec.EllipticCurvePublicKey | None = None


@dataclass(frozen=True)
class PckChain:
    """A parsed PCK chain whose root passed pinning (step 2): leaf, PCK CA, root (each with its
    DER regions: :class:`~sgx_quote_helper.verify.certificate.DerCertificate`)."""

    leaf_der: DerCertificate
    ca_der: DerCertificate
    root_der: DerCertificate

    @property
    def leaf(self) -> x509.Certificate:
        return self.leaf_der.cert

    @property
    def ca(self) -> x509.Certificate:
        return self.ca_der.cert

    @property
    def root(self) -> x509.Certificate:
        return self.root_der.cert


def load_pck_chain(pem: bytes | str, root: ch.TrustedRoot) -> PckChain:
    """Steps 2-3 (parse half): leaf and PCK CA, ending at the trusted root (pinned)."""
    certs = ch.load_pem_certificates(pem, Step.PCK_CHAIN, "pck-chain")
    if len(certs) not in (2, 3):
        raise fail(Step.PCK_CHAIN, "pck-chain-length", f"{len(certs)} certificates")
    with ch.malformed(Step.PCK_CHAIN, "pck-chain"):
        root_cert = ch.split_root(certs, root, Step.ROOT_CA, "pck-chain")
    if len(certs) != 2:
        raise fail(Step.PCK_CHAIN, "pck-chain-length", "expected leaf and PCK CA")
    return PckChain(certs[0], certs[1], root_cert)


def check_pck_chain(chain: PckChain, now: datetime) -> VerifiedPck:
    """Steps 2-3: root window; PCK CA <- root and leaf <- PCK CA signatures, roles, windows."""
    with ch.malformed(Step.PCK_CHAIN, "pck-chain"):
        return _check_pck_chain(chain, now)


def _check_pck_chain(chain: PckChain, now: datetime) -> VerifiedPck:
    leaf, ca, root_cert = chain.leaf_der, chain.ca_der, chain.root_der
    windows = [ch.check_window(root_cert.cert, now, Step.ROOT_CA, "root-ca")]
    ch.check_signed_by(ca, root_cert, Step.PCK_CHAIN, "pck-ca")
    ch.check_signed_by(leaf, ca, Step.PCK_CHAIN, "pck-cert")
    ca_cn = ch.check_cn(ca, ("SGX PCK", "CA"), Step.PCK_CHAIN, "pck-ca")
    ch.check_cn(leaf, ("SGX PCK Certificate",), Step.PCK_CHAIN, "pck-cert")
    windows.append(ch.check_window(ca.cert, now, Step.PCK_CHAIN, "pck-ca"))
    windows.append(ch.check_window(leaf.cert, now, Step.PCK_CHAIN, "pck-cert"))
    ext = ch.sgx_extensions(leaf.cert, Step.PCK_CHAIN)
    ca_type = "processor" if "Processor" in ca_cn else "platform" if "Platform" in ca_cn else "unknown"
    key = ch.ec_key(leaf.cert, Step.PCK_CHAIN, "pck-cert")
    return VerifiedPck(leaf.cert, ca.cert, key, ext, ca_type, tuple(windows), ca.ec_key())


# --- 4 ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VerifiedCrls:
    """Step 4's result: both CRLs (``None`` only when CRL checks are skipped) and their windows."""

    root_crl: x509.CertificateRevocationList | None
    pck_crl: x509.CertificateRevocationList | None
    windows: tuple[ch.Window, ...]


def check_crls(
    root_ca_crl: bytes | None,
    pck_crl_der: bytes | None,
    pck: VerifiedPck,
    root: ch.TrustedRoot,
    now: datetime,
    *,
    skip_missing: bool = False,
) -> VerifiedCrls:
    """Step 4: the root CA CRL (signed by the trusted root) and the PCK CRL (signed by the quote's
    PCK CA) are current; neither the PCK CA nor the leaf is revoked. A missing CRL fails unless
    ``skip_missing`` (``dangerous_skip_crls``)."""
    windows: list[ch.Window] = []
    root_crl = pck_crl = None
    if root_ca_crl is not None:
        root_crl, w = check_root_crl(root_ca_crl, root, now)
        windows.append(w)
    elif not skip_missing:
        raise fail(Step.CRL, "root-ca-crl-missing")
    if pck_crl_der is not None:
        pck_crl = load_pck_crl(pck_crl_der)
        windows.append(ch.check_crl(pck_crl, pck.ca, now, Step.CRL, "pck-crl", pck.ca_key, pck_crl_der))
    elif not skip_missing:
        raise fail(Step.CRL, "pck-crl-missing")
    ch.check_not_revoked(root_crl, pck.ca, Step.CRL, "pck-ca")
    ch.check_not_revoked(pck_crl, pck.leaf, Step.CRL, "pck-cert")
    return VerifiedCrls(root_crl, pck_crl, tuple(windows))


def check_root_crl(
    der: bytes, root: ch.TrustedRoot, now: datetime
) -> tuple[x509.CertificateRevocationList, ch.Window]:
    """Step 4 (root half): the root CA CRL is signed by the trusted root and current."""
    crl = ch.load_crl(der, Step.CRL, "root-ca-crl")
    return crl, ch.check_crl(crl, root.cert, now, Step.CRL, "root-ca-crl", root.public_key, der)


def load_pck_crl(der: bytes) -> x509.CertificateRevocationList:
    """Parse the PCK CRL (its issuer is checked against the quote's PCK CA in step 4)."""
    return ch.load_crl(der, Step.CRL, "pck-crl")


# --- 5, 6 ---------------------------------------------------------------------------------------
def check_signing_chain(
    step: Step,
    what: str,
    chain_pem: str,
    root: ch.TrustedRoot,
    root_crl: x509.CertificateRevocationList | None,
    now: datetime,
) -> tuple[ec.EllipticCurvePublicKey, list[ch.Window]]:
    """Steps 5/6 (chain half): the TCB Signing cert is issued by the root, current, not revoked."""
    with ch.malformed(step, f"{what}-chain"):
        return _check_signing_chain(step, what, chain_pem, root, root_crl, now)


def _check_signing_chain(
    step: Step,
    what: str,
    chain_pem: str,
    root: ch.TrustedRoot,
    root_crl: x509.CertificateRevocationList | None,
    now: datetime,
) -> tuple[ec.EllipticCurvePublicKey, list[ch.Window]]:
    certs = ch.load_pem_certificates(chain_pem, step, f"{what}-chain")
    root_cert = ch.split_root(certs, root, Step.ROOT_CA, f"{what}-chain")
    if len(certs) != 1:
        raise fail(step, f"{what}-chain-length", f"{len(certs)} certificates before the root")
    signer = certs[0]
    ch.check_signed_by(signer, root_cert, step, "tcb-signing-cert")
    ch.check_cn(signer, ("SGX TCB Signing",), step, "tcb-signing-cert")
    windows = [
        ch.check_window(root_cert.cert, now, Step.ROOT_CA, "root-ca"),
        ch.check_window(signer.cert, now, step, "tcb-signing-cert"),
    ]
    ch.check_not_revoked(root_crl, signer.cert, step, "tcb-signing-cert")
    return ch.ec_key(signer.cert, step, "tcb-signing-cert"), windows


def check_json_signature(
    step: Step, what: str, key: ec.EllipticCurvePublicKey, text: str, signature: bytes
) -> None:
    """Steps 5/6 (signature half): the signature covers the exact signed text."""
    if not ecdsa_verify(key, signature, text.encode()):
        raise fail(step, f"{what}-bad-signature")


def check_issued_window(step: Step, what: str, issue: datetime, next_update: datetime, now: datetime) -> None:
    """Steps 5/6 (time half): ``issueDate <= now <= nextUpdate``."""
    if now < issue:
        raise fail(step, f"{what}-not-yet-valid", f"issued {issue.isoformat()}")
    if now > next_update:
        raise fail(step, f"{what}-expired", f"next update was due {next_update.isoformat()}")


@dataclass(frozen=True)
class VerifiedCollateral:
    """TCB Info and QE Identity that passed steps 5 and 6 (signing chains, signatures, windows)."""

    tcb_info: TcbInfo
    qe_identity: QeIdentity
    windows: tuple[ch.Window, ...]


def check_collateral(
    collateral: Collateral,
    root: ch.TrustedRoot,
    root_crl: x509.CertificateRevocationList | None,
    now: datetime,
) -> VerifiedCollateral:
    """Steps 5 (TCB Info) and 6 (QE Identity): chain to the root, signature over the exact text,
    ``issueDate <= now <= nextUpdate``. The QE Identity's chain is checked once when it is the
    TCB Info's."""
    windows: list[ch.Window] = []
    tcb_chain = collateral.tcb_info_issuer_chain
    signer, w5 = check_signing_chain(Step.TCB_INFO, "tcb-info", tcb_chain, root, root_crl, now)
    windows += w5
    check_json_signature(
        Step.TCB_INFO, "tcb-info", signer, collateral.tcb_info, collateral.tcb_info_signature
    )
    tcb_info = collateral.tcb_info_model
    check_issued_window(Step.TCB_INFO, "tcb-info", tcb_info.issue_date, tcb_info.next_update, now)
    windows.append((tcb_info.issue_date, tcb_info.next_update, True))
    qe_chain = collateral.qe_identity_issuer_chain
    if qe_chain != tcb_chain:
        signer, w6 = check_signing_chain(Step.QE_IDENTITY, "qe-identity", qe_chain, root, root_crl, now)
        windows += w6
    check_json_signature(
        Step.QE_IDENTITY, "qe-identity", signer, collateral.qe_identity, collateral.qe_identity_signature
    )
    qe = collateral.qe_identity_model
    check_issued_window(Step.QE_IDENTITY, "qe-identity", qe.issue_date, qe.next_update, now)
    windows.append((qe.issue_date, qe.next_update, True))
    return VerifiedCollateral(tcb_info, qe, (_intersect(windows),))


# --- 7 ------------------------------------------------------------------------------------------
def check_platform_match(
    quote: Quote, ext: SgxExtensions, tcb_info: TcbInfo, qe_identity: QeIdentity
) -> None:
    """Step 7: FMSPC and PCE-ID of the PCK cert equal TCB Info's; collateral kinds fit the TEE."""
    tdx = quote.is_tdx
    if tdx != tcb_info.is_tdx or (tdx and tcb_info.version < 3):
        raise fail(Step.PLATFORM_MATCH, "tcb-info-wrong-tee", f"TCB Info id {tcb_info.id}")
    if qe_identity.id != ("TD_QE" if tdx else "QE"):
        raise fail(Step.PLATFORM_MATCH, "qe-identity-wrong-tee", f"QE Identity id {qe_identity.id}")
    if ext.fmspc != tcb_info.fmspc:
        raise fail(Step.PLATFORM_MATCH, "fmspc-mismatch", f"{ext.fmspc.hex()} != {tcb_info.fmspc.hex()}")
    if ext.pceid != tcb_info.pce_id:
        raise fail(Step.PLATFORM_MATCH, "pceid-mismatch")


# --- 8, 9, 10, 11 -------------------------------------------------------------------------------
def check_qe_report_signature(key: ec.EllipticCurvePublicKey, qe_report: bytes, signature: bytes) -> None:
    """Step 8: the PCK leaf key signed the 384-byte QE report."""
    if not ecdsa_verify(key, signature, qe_report):
        raise fail(Step.QE_REPORT_SIGNATURE, "qe-report-bad-signature")


def check_qe_report_data(qe_report: ReportBody, attestation_key: bytes, auth_data: bytes) -> None:
    """Step 9: QE REPORTDATA[0:32] == SHA-256(attestation key || QE auth data) (QVL compares 32 B)."""
    if hashlib.sha256(attestation_key + auth_data).digest() != qe_report.report_data[:32]:
        raise fail(Step.QE_REPORT_DATA, "qe-report-data-mismatch")


def masked_equal(have: bytes, mask: bytes, want: bytes) -> bool:
    """QVL's ``applyMask(have, mask) == want``: only the report side is masked."""
    if not len(have) == len(mask) == len(want):
        return False
    return int.from_bytes(have) & int.from_bytes(mask) == int.from_bytes(want)


def check_qe_identity(qe_report: ReportBody, identity: QeIdentity) -> QeTcbLevel:
    """Step 10 (QVL's EnclaveReportVerifier): ``report & mask == identity`` for MISCSELECT and
    ATTRIBUTES (the identity's value is not masked), MRSIGNER, ISVPRODID; then the ISVSVN level."""
    s = Step.QE_IDENTITY_MATCH
    if qe_report.misc_select & identity.miscselect_mask != identity.miscselect:
        raise fail(s, "qe-miscselect-mismatch")
    if not masked_equal(qe_report.attributes.to_bytes(), identity.attributes_mask, identity.attributes):
        raise fail(s, "qe-attributes-mismatch")
    if qe_report.mr_signer != identity.mrsigner:
        raise fail(s, "qe-mrsigner-mismatch")
    if qe_report.isv_prod_id != identity.isvprodid:
        raise fail(s, "qe-isvprodid-mismatch")
    for level in identity.levels:
        if qe_report.isv_svn >= level.isvsvn:
            return level
    raise fail(s, "qe-tcb-not-supported", f"QE ISVSVN {qe_report.isv_svn} below every level")


def check_isv_signature(key: ec.EllipticCurvePublicKey, signed: bytes, signature: bytes) -> None:
    """Step 11: the attestation key signed header || body."""
    if not ecdsa_verify(key, signature, signed):
        raise fail(Step.ISV_SIGNATURE, "quote-bad-signature")


# --- 12 -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlatformTcb:
    """Steps 12-13 for one platform (and TD module): the level, its status and advisories."""

    level: TcbLevel
    status: TcbStatus
    advisory_ids: tuple[str, ...]
    module_status: TcbStatus | None
    sgx_status: TcbStatus  # QVL's SGX-only level (feeds the TD relaunch check)


def check_tcb_level(
    tcb_info: TcbInfo, ext: SgxExtensions, body: ReportBody | TdReport10 | TdReport15
) -> TcbLevel:
    """Step 12: the highest TCB level the PCK certificate (and TEE_TCB_SVN for TDX) meets."""
    tee_tcb_svn = body.tee_tcb_svn if isinstance(body, (TdReport10, TdReport15)) else None
    level = tcb.match_platform_level(tcb_info, ext.tcb_components, ext.pcesvn, tee_tcb_svn)
    if level is None:
        raise fail(Step.TCB_LEVEL, "no-matching-tcb-level")
    return level


# --- 13 -----------------------------------------------------------------------------------------
def check_tdx_module(
    tcb_info: TcbInfo, body: TdReport10 | TdReport15
) -> tuple[TcbStatus | None, tuple[str, ...]]:
    """Step 13: MRSIGNERSEAM and SEAM attributes (``report & mask == identity``, as QVL) against
    the TDX module identity; then the module's TCB level (status, advisories)."""
    ident = tcb.find_module_identity(tcb_info, body.tee_tcb_svn)
    if ident is None:
        raise fail(Step.TDX_MODULE, "tdx-module-unknown", f"no identity for TDX module {body.tee_tcb_svn[1]}")
    if body.mr_signer_seam != ident.mrsigner:
        raise fail(Step.TDX_MODULE, "tdx-module-mrsigner-mismatch")
    if not masked_equal(body.seam_attributes, ident.attributes_mask, ident.attributes):
        raise fail(Step.TDX_MODULE, "tdx-module-attributes-mismatch")
    if ident.id is None:
        return None, ()
    level = tcb.match_module_level(ident, body.tee_tcb_svn)
    if level is None:
        raise fail(Step.TDX_MODULE, "tdx-module-tcb-not-supported")
    return level.status, level.advisory_ids


def platform_tcb(quote: Quote, ext: SgxExtensions, tcb_info: TcbInfo) -> PlatformTcb:
    """Steps 12-13 together: the platform level, the TDX module, and their converged status."""
    body = quote.body
    level = check_tcb_level(tcb_info, ext, body)
    platform, advisories = level.status, list(level.advisory_ids)
    module_status: TcbStatus | None = None
    sgx_status = level.status
    if isinstance(body, (TdReport10, TdReport15)):
        module_status, module_advisories = check_tdx_module(tcb_info, body)
        if module_status is not None:
            platform = tcb.converge_module(module_status, platform)
        advisories += [a for a in module_advisories if a not in advisories]
        sgx_level = tcb.match_sgx_level(tcb_info, ext.tcb_components, ext.pcesvn)
        assert sgx_level is not None  # a level matching SGX and TDX components matches SGX alone
        sgx_status = sgx_level.status
    return PlatformTcb(level, platform, tuple(advisories), module_status, sgx_status)


# --- 14 -----------------------------------------------------------------------------------------
def converge_and_decide(
    q: Quote,
    pck: VerifiedPck,
    crls: VerifiedCrls,
    vc: VerifiedCollateral,
    p: PlatformTcb,
    qe: QeTcbLevel,
    policy: Policy,
    now: datetime,
) -> Verdict:
    """Step 14: Intel's status convergence (QE into platform; the TD relaunch check for TD 1.5),
    then every violation of the relying party's policy; the Verdict of an authentic quote."""
    ext = pck.extensions
    platform = p.status
    if isinstance(q.body, TdReport15):
        platform = tcb.relaunch_status(
            q.body.tee_tcb_svn2, vc.tcb_info, p.sgx_status, p.status, p.module_status, qe.status
        )
    status = converge(qe.status, platform)
    tcb_info, qe_identity = vc.tcb_info, vc.qe_identity
    facts = _Facts(
        q.body,
        status,
        p.advisory_ids,
        qe.advisory_ids,
        tcb_info.tcb_evaluation_data_number,
        qe_identity.tcb_evaluation_data_number,
        tcb_info.issue_date,
        qe_identity.issue_date,
    )
    violations, warnings = policy.decide(facts, now)
    return build_verdict(
        {
            "status": status,
            "platform_status": platform,
            "qe_status": qe.status,
            "advisory_ids": p.advisory_ids,
            "qe_advisory_ids": qe.advisory_ids,
            "tcb_date": p.level.tcb_date,
            "qe_tcb_date": qe.tcb_date,
            "tcb_info_evaluation_data_number": tcb_info.tcb_evaluation_data_number,
            "qe_identity_evaluation_data_number": qe_identity.tcb_evaluation_data_number,
            "tcb_info_issue_date": tcb_info.issue_date,
            "qe_identity_issue_date": qe_identity.issue_date,
            "earliest_expiration": min(map(_upper_bound, (*pck.windows, *crls.windows, *vc.windows))),
            "fmspc": ext.fmspc,
            "pce_id": ext.pceid,
            "ca_type": pck.ca_type,
            "sgx_type": ext.sgx_type,
            "tee": "TDX" if q.is_tdx else "SGX",
            "quote_version": q.version,
            "body": q.body,
            "crls_checked": crls.root_crl is not None and crls.pck_crl is not None,
            "tdx_module_status": p.module_status,
            "violations": violations,
            "warnings": warnings,
        }
    )


_upper_bound = itemgetter(1)  # of a window (lo, hi, inclusive)


class _Facts(NamedTuple):
    """What the policy reads (:class:`~sgx_quote_helper.verify.policy.Facts`), before the Verdict."""

    body: Body
    status: TcbStatus
    advisory_ids: tuple[str, ...]
    qe_advisory_ids: tuple[str, ...]
    tcb_info_evaluation_data_number: int
    qe_identity_evaluation_data_number: int
    tcb_info_issue_date: datetime
    qe_identity_issue_date: datetime


__all__ = [
    "PckChain",
    "PlatformTcb",
    "Step",
    "VerifiedCollateral",
    "VerifiedCrls",
    "VerifiedPck",
    "check_collateral",
    "check_crls",
    "check_issued_window",
    "check_isv_signature",
    "check_json_signature",
    "check_pck_chain",
    "check_platform_match",
    "check_qe_identity",
    "check_qe_report_data",
    "check_qe_report_signature",
    "check_quote_format",
    "check_root_crl",
    "check_signing_chain",
    "check_tcb_level",
    "check_tdx_module",
    "converge_and_decide",
    "ecdsa_verify",
    "fail",
    "load_pck_chain",
    "load_pck_crl",
    "masked_equal",
    "platform_tcb",
    "raw_public_key",
]
