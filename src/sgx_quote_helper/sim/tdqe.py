"""The simulated TD quoting enclave (TDQE): TDREPORT in, signed TDX quote v4 or v5 out.

What Intel's TDQE does (DCAP ``quote_wrapper/tdx_quote/enclave/quoting_enclave_tdqe.cpp``,
``determine_quote_version`` and ``get_quote``; ``shared/specs/tdx-qgs.md`` §1.6, §1.7, §2), in order:

1. **Format** (``determine_quote_version``): TEE_TCB_INFO.valid must be 0x1FF or 0x301FF
   (valid[0] = 0xFF, valid[1] = 0x01, valid[2] 0 or 3, the rest 0); the TDINFO reserved bytes must
   be zero (112 of them for a TDX 1.0 report, 64 for 1.5). The report version picks the quote:
   version 0 -> v4, except valid 0x301FF with TEE_TCB_SVN != TEE_TCB_SVN2 -> v5 (body type 3, with
   TEE_TCB_SVN2); version 1 -> v5 body type 3 with MRSERVICETD (and TEE_TCB_SVN2 when valid says so).
   Other versions (DCAP 1.23 knows only 0 and 1) are refused.
2. **MAC** (EVERIFYREPORT2 on hardware): report type 0x81, subtype 0, and the MAC under the
   platform's TD report key (:class:`~sgx_quote_helper.sim.tdx_module.TdxModule`).
3. **Hashes**: REPORTMACSTRUCT.tee_tcb_info_hash = SHA-384(TEE_TCB_INFO), tee_info_hash =
   SHA-384(TDINFO).
4. **Body**: TEE_TCB_SVN and MRSEAM from TEE_TCB_INFO; **MRSIGNERSEAM and the SEAM attributes are
   left zero** (Intel does not copy them); TD attributes, XFAM, MRTD, MRCONFIGID, MROWNER,
   MROWNERCONFIG, RTMR0-3 from TDINFO; REPORTDATA from REPORTMACSTRUCT.
5. **Sign** header || [body type, size] || body with the platform's attestation key, whose QE
   report (TDQE identity, report data = SHA-256(key || auth data)) the PCK key certifies; the
   signature data carries certification data type 6 wrapping the QE report certification and,
   inside, type 5 (the PCK chain).

Where we differ from Intel, on purpose:

- A version-1 report whose valid mask is 0x1FF (no TEE_TCB_SVN2): Intel copies the (invalid)
  TEE_TCB_SVN2 over TEE_TCB_SVN in the quote, the reverse of its own comment (tdx-qgs.md §2.7). We
  copy TEE_TCB_SVN, the field the mask marks valid, and leave TEE_TCB_SVN2 zero: a quote must not
  claim a TCB the report did not state.
- Reserved bytes the TDQE itself does not look at must be zero too: report_type.reserved,
  REPORTMACSTRUCT reserved1/reserved2 and the 17 bytes between TEE_TCB_INFO and TDINFO (the only
  bytes of a TDREPORT no hash or MAC covers); Intel's QGS checks exactly these before quoting a
  raw-mode report (``qgs_ql_logic.cpp get_raw_resp``), we check them for every report. Also
  TEE_TCB_INFO's reserved tail. The TDX module writes zeros there, so a non-zero byte means the
  report was altered.

Rejections raise :class:`EngineError` with TEE_ATT_QE_REPORT_UNSUPPORTED_FORMAT (format) or
TEE_ATT_INVALID_REPORT (MAC, hashes), the codes Intel's ``td_ql_wrapper`` maps the TDQE's to.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from ..abi.codes import QuoteLibStatus
from ..abi.quote import (
    ATT_KEY_TYPE_ECDSA_P256,
    BODY_TYPE_TD_REPORT15,
    INTEL_QE_VENDOR_ID,
    TEE_TYPE_TDX,
    EcdsaSigData,
    QeReportCertData,
    Quote,
    QuoteHeader,
    signed_bytes,
)
from ..abi.report import ReportBody
from ..abi.tdreport import TdReport10, TdReport15
from ..abi.tdx_report import TDX_REPORT_TYPE, TDX_REPORT_VERSION_10, TDX_REPORT_VERSION_15, TdxReport
from ..errors import EngineError, ParseError
from .qe import QE_ATTRIBUTES, QE_AUTH_DATA, certification_data, raw_public_key, raw_signature
from .tdx_module import TdxModule, tee_info_hash, tee_tcb_info_hash
from .tdx_tcb_history import CURRENT_TDQE_SVN

#: MRENCLAVE of the simulated TDQE (SHA-256 of a fixed label; no real enclave has it)
SIMULATED_TDQE_MRENCLAVE = hashlib.sha256(b"sgx-quote-helper SIMULATED TDQE v1").digest()
#: MRSIGNER of Intel's TDQE (the ``mrsigner`` of Intel's TD_QE identity)
TDQE_MRSIGNER = bytes.fromhex("dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5")
#: ISVPRODID of Intel's TDQE (TD_QE identity ``isvprodid``)
TDQE_PROD_ID = 2

_FORMAT = QuoteLibStatus.QE_REPORT_UNSUPPORTED_FORMAT
_INVALID = QuoteLibStatus.INVALID_REPORT


@dataclass(frozen=True, slots=True)
class QuoteShape:
    """What ``determine_quote_version`` decides for a report."""

    version: int  # quote version 4 or 5
    mr_servicetd_valid: bool
    tee_tcb_svn2_valid: bool


def _reject(status: int, reason: str) -> EngineError:
    return EngineError(status, f"TD report rejected: {reason}")


def quote_shape(report: TdxReport) -> QuoteShape:
    """Step 1: check the report's format; decide the quote version (Intel's rules, see module doc)."""
    rtype = report.report_type
    tcb = report.tee_tcb_info
    valid = tcb.valid
    if rtype.version not in (TDX_REPORT_VERSION_10, TDX_REPORT_VERSION_15):
        raise _reject(_FORMAT, f"report version {rtype.version} is not supported (0 = TDX 1.0, 1 = TDX 1.5)")
    if any(report.td_info.reserved_for(rtype.version)):
        raise _reject(_FORMAT, "TDINFO reserved bytes are not zero")
    if valid[0] != 0xFF or valid[1] != 0x01 or valid[2] not in (0, 3) or any(valid[3:]):
        raise _reject(
            _FORMAT, f"TEE_TCB_INFO.valid {int.from_bytes(valid, 'little'):#x} is not 0x1ff or 0x301ff"
        )
    svn2_valid = valid[2] == 3
    if rtype.version == TDX_REPORT_VERSION_15:
        return QuoteShape(5, True, svn2_valid)
    if svn2_valid and tcb.tee_tcb_svn != tcb.tee_tcb_svn2:
        return QuoteShape(5, False, True)
    return QuoteShape(4, False, False)


def check_report(module: TdxModule, report: TdxReport) -> QuoteShape:
    """Steps 1-3 (format, MAC, hashes) plus our reserved-byte checks; the quote's shape.

    Raises:
        EngineError: the report is not one this platform's TDX module made, unaltered.
    """
    shape = quote_shape(report)
    rtype = report.report_type
    if rtype.type != TDX_REPORT_TYPE or rtype.subtype != 0:
        raise _reject(_FORMAT, f"report type {rtype.type:#04x} subtype {rtype.subtype} is not TDX (0x81, 0)")
    ms = report.mac_struct
    if rtype.reserved or any(ms.reserved1) or any(ms.reserved2):
        raise _reject(_FORMAT, "REPORTMACSTRUCT reserved bytes are not zero")
    if any(report.tee_tcb_info.reserved_for(report.tee_tcb_info.valid[2] == 3)):
        raise _reject(_FORMAT, "TEE_TCB_INFO reserved bytes are not zero")
    if any(report.reserved):
        raise _reject(_FORMAT, "the reserved bytes after TEE_TCB_INFO are not zero")
    if not module.verify_mac(report):
        raise _reject(
            _INVALID, "the MAC does not verify (not made by this platform's TDX module, or altered)"
        )
    if tee_tcb_info_hash(report.tee_tcb_info) != ms.tee_tcb_info_hash:
        raise _reject(_INVALID, "tee_tcb_info_hash is not SHA-384(TEE_TCB_INFO)")
    if tee_info_hash(report.td_info) != ms.tee_info_hash:
        raise _reject(_INVALID, "tee_info_hash is not SHA-384(TDINFO)")
    return shape


def quote_body(report: TdxReport, shape: QuoteShape) -> TdReport10 | TdReport15:
    """Step 4: the quote body derived from the report (see the module doc for what is copied)."""
    tcb, info = report.tee_tcb_info, report.td_info
    common = {
        "tee_tcb_svn": tcb.tee_tcb_svn,
        "mr_seam": tcb.mr_seam,
        "mr_signer_seam": bytes(48),  # Intel's TDQE leaves these zero
        "seam_attributes": bytes(8),
        "td_attributes": info.attributes,
        "xfam": info.xfam,
        "mr_td": info.mr_td,
        "mr_config_id": info.mr_config_id,
        "mr_owner": info.mr_owner,
        "mr_owner_config": info.mr_owner_config,
        "rtmr0": info.rtmr0,
        "rtmr1": info.rtmr1,
        "rtmr2": info.rtmr2,
        "rtmr3": info.rtmr3,
        "report_data": report.report_data,
    }
    if shape.version == 4:
        return TdReport10(**common)
    return TdReport15(
        **common,
        tee_tcb_svn2=tcb.tee_tcb_svn2 if shape.tee_tcb_svn2_valid else bytes(16),
        mr_service_td=info.mr_servicetd if shape.mr_servicetd_valid else bytes(48),
    )


class Tdqe:
    """The simulated TDQE of a platform, with its certified attestation key (built once)."""

    def __init__(self, module: TdxModule, key: ec.EllipticCurvePrivateKey, qe_svn: int = CURRENT_TDQE_SVN):
        platform = module.platform
        self.module = module
        self.key = key
        self.public_key = raw_public_key(key)
        ecdsa_id = hashlib.sha256(self.public_key + QE_AUTH_DATA).digest()
        qe_report = ReportBody(
            cpu_svn=platform.identity.cpusvn,
            misc_select=0,
            attributes=QE_ATTRIBUTES,
            mr_enclave=SIMULATED_TDQE_MRENCLAVE,
            mr_signer=TDQE_MRSIGNER,
            isv_prod_id=TDQE_PROD_ID,
            isv_svn=qe_svn,
            report_data=ecdsa_id + bytes(32),
        )
        self.qe_cert = QeReportCertData(
            qe_report=qe_report,
            qe_report_signature=raw_signature(platform.keys["pck"], qe_report.to_bytes()),
            qe_auth_data=QE_AUTH_DATA,
            certification_data=certification_data(platform),
        )
        self.qe_svn = qe_svn

    @classmethod
    def for_platform(cls, module: TdxModule) -> Tdqe:
        """The TDQE with the platform's attestation key (created on first use, like InitQuoteEx)."""
        return cls(module, module.platform.ensure_attestation_key())

    def header(self, version: int) -> QuoteHeader:
        ident = self.module.platform.identity
        return QuoteHeader(
            version=version,
            att_key_type=ATT_KEY_TYPE_ECDSA_P256,
            tee_type=TEE_TYPE_TDX,
            qe_svn=self.qe_svn,
            pce_svn=ident.pcesvn,
            qe_vendor_id=INTEL_QE_VENDOR_ID,
            user_data=ident.qe_id + bytes(4),
        )

    def quote(self, tdreport: bytes | TdxReport) -> bytes:
        """Check ``tdreport`` and return the signed TDX quote (v4 or v5, as the report decides).

        Raises:
            EngineError: the report is malformed, altered, or from another platform.
        """
        if isinstance(tdreport, TdxReport):
            report = tdreport
        else:
            try:
                report = TdxReport.from_bytes(tdreport)
            except ParseError as exc:
                raise _reject(_FORMAT, str(exc)) from None
        shape = check_report(self.module, report)
        body = quote_body(report, shape)
        header = self.header(shape.version)
        body_type = BODY_TYPE_TD_REPORT15 if shape.version == 5 else None
        signature = raw_signature(self.key, signed_bytes(header, body, body_type))
        sig = EcdsaSigData(signature, self.public_key, self.qe_cert)
        return Quote(header, body, sig, body_type).to_bytes()


__all__ = [
    "SIMULATED_TDQE_MRENCLAVE",
    "TDQE_MRSIGNER",
    "TDQE_PROD_ID",
    "QuoteShape",
    "Tdqe",
    "check_report",
    "quote_body",
    "quote_shape",
]
