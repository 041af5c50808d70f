"""DCAP ECDSA quotes: v3 (SGX), v4 and v5 (SGX or TDX bodies), byte for byte.

Layouts: ``shared/specs/dcap-quote.md`` §1 (DCAP ``sgx_quote_3.h``, ``sgx_quote_4.h``,
``sgx_quote_5.h``)::

    v3/v4:  header (48) | body (384 SGX / 584 TD 1.0)                   | sig_len u32 | signature data
    v5:     header (48) | body_type u16 | body_size u32 | body (384/584/648) | sig_len u32 | signature data

Signature data for attestation key type 2 (ECDSA P-256)::

    v3:     sig (64) | att key (64) | QE report (384) | QE sig (64) | auth u16+n | cert data (u16 type, u32 size, data)
    v4/v5:  sig (64) | att key (64) | cert data type 6 whose payload is the QE report certification:
            QE report (384) | QE sig (64) | auth u16+n | inner cert data (normally type 5)

Parsing is strict inside the signed structure (``signature_data_len`` must match exactly) and
lenient after it: bytes after the signature data are kept in :attr:`Quote.trailing` (real TDX
quotes carry padding) so ``Quote.from_bytes(b).to_bytes() == b`` for every quote we accept.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from ..errors import ParseError
from ._bytes import Reader, check_field, decoded_builder
from .report import ReportBody
from .tdreport import TdReport10, TdReport15

INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081

ATT_KEY_TYPE_ECDSA_P256 = 2
ATT_KEY_TYPE_ECDSA_P384 = 3

# sgx_ql_cert_key_type_t
CERT_TYPE_PPID_CLEARTEXT = 1
CERT_TYPE_PPID_RSA2048_ENCRYPTED = 2
CERT_TYPE_PPID_RSA3072_ENCRYPTED = 3
CERT_TYPE_PCK_CLEARTEXT = 4
CERT_TYPE_PCK_CHAIN = 5
CERT_TYPE_QE_REPORT = 6
CERT_TYPE_PLATFORM_MANIFEST = 7

# quote v5 body types
BODY_TYPE_SGX = 1
BODY_TYPE_TD_REPORT10 = 2
BODY_TYPE_TD_REPORT15 = 3

Body = ReportBody | TdReport10 | TdReport15

#: v5: u16 body type + u32 body size between the header and the body
V5_BODY_DESCRIPTOR_SIZE = 6
#: ``signature_data_len`` (u32) after the body
SIGNATURE_DATA_LEN_SIZE = 4
#: raw r||s ECDSA P-256 signature and X||Y public key
ECDSA_SIGNATURE_SIZE = 64
ECDSA_PUBLIC_KEY_SIZE = 64
#: ``sgx_ql_certification_data_t`` header: u16 type + u32 size
CERT_DATA_HEADER_SIZE = 6
#: SGX v3/v4 quote (header + 384-byte report body): where ``signature_data_len`` sits, and the data
SGX_SIGNATURE_DATA_LEN_OFFSET = 48 + ReportBody.SIZE  # QuoteHeader.SIZE (defined below) + body
SGX_SIGNATURE_DATA_OFFSET = SGX_SIGNATURE_DATA_LEN_OFFSET + SIGNATURE_DATA_LEN_SIZE

_PPID_SIZES = {
    CERT_TYPE_PPID_CLEARTEXT: 16,
    CERT_TYPE_PPID_RSA2048_ENCRYPTED: 256,
    CERT_TYPE_PPID_RSA3072_ENCRYPTED: 384,
}


@dataclass(frozen=True, slots=True)
class QuoteHeader:
    """The 48-byte quote header. ``tee_type`` is ``att_key_data_0`` (reserved, 0) in v3."""

    SIZE: ClassVar[int] = 48

    version: int
    att_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes

    def __post_init__(self) -> None:
        check_field("QuoteHeader", "qe_vendor_id", self.qe_vendor_id, 16)
        check_field("QuoteHeader", "user_data", self.user_data, 20)

    @classmethod
    def from_bytes(cls, data: bytes) -> QuoteHeader:
        r = Reader(bytes(data), "QuoteHeader")
        return _decode_header(r.take(cls.SIZE, "header"))

    def to_bytes(self) -> bytes:
        head = struct.pack(
            "<HHIHH", self.version, self.att_key_type, self.tee_type, self.qe_svn, self.pce_svn
        )
        return head + self.qe_vendor_id + self.user_data

    @property
    def qe_id(self) -> bytes:
        """The 16-byte QE ID Intel's QE puts at the start of user_data."""
        return self.user_data[:16]


@dataclass(frozen=True, slots=True)
class EncryptedPpid:
    """Certification data types 1-3: PPID (clear or RSA-OAEP encrypted) | CPUSVN | PCESVN | PCE-ID."""

    encrypted_ppid: bytes
    cpusvn: bytes
    pcesvn: int
    pceid: int

    @classmethod
    def from_bytes(cls, cert_type: int, data: bytes, base: int = 0) -> EncryptedPpid:
        n = _PPID_SIZES.get(cert_type)
        if n is None:
            raise ParseError("EncryptedPpid", base, f"certification data type {cert_type} carries no PPID")
        if len(data) != n + 20:
            raise ParseError("EncryptedPpid", base, f"type {cert_type} needs {n + 20} bytes, got {len(data)}")
        pcesvn, pceid = struct.unpack_from("<HH", data, n + 16)
        return cls(data[:n], data[n : n + 16], pcesvn, pceid)

    def to_bytes(self) -> bytes:
        return self.encrypted_ppid + self.cpusvn + struct.pack("<HH", self.pcesvn, self.pceid)


@dataclass(frozen=True, slots=True)
class CertificationData:
    """``sgx_ql_certification_data_t``: u16 type, u32 size, then ``size`` bytes of ``data``."""

    cert_type: int
    data: bytes

    @classmethod
    def read(cls, r: Reader) -> CertificationData:
        cert_type = r.u16("certification data type")
        size = r.u32("certification data size")
        return _build_cert_data(cert_type, r.take(size, f"certification data (type {cert_type})"))

    def to_bytes(self) -> bytes:
        return struct.pack("<HI", self.cert_type, len(self.data)) + self.data

    def pck_chain_pem(self) -> bytes:
        """The PEM PCK chain of a type-5 block (trailing NULs stripped), or of the type-5 block nested
        in a type-6 block."""
        if self.cert_type == CERT_TYPE_QE_REPORT:
            return self.qe_report_certification().certification_data.pck_chain_pem()
        if self.cert_type != CERT_TYPE_PCK_CHAIN:
            raise ParseError(
                "CertificationData", 0, f"type {self.cert_type} is not a PCK certificate chain (5)"
            )
        return self.data.rstrip(b"\x00")

    def qe_report_certification(self) -> QeReportCertData:
        """Decode a type-6 block (QE report certification data)."""
        if self.cert_type != CERT_TYPE_QE_REPORT:
            raise ParseError(
                "CertificationData", 0, f"type {self.cert_type} is not QE report certification (6)"
            )
        r = Reader(self.data, "QeReportCertData")
        out = QeReportCertData.read(r)
        if r.remaining:
            raise ParseError(
                "QeReportCertData",
                r.pos,
                f"{r.remaining} unexpected bytes after the inner certification data",
            )
        return out

    def encrypted_ppid(self) -> EncryptedPpid:
        """Decode a type 1, 2 or 3 block (PPID, CPUSVN, PCESVN, PCE-ID)."""
        return EncryptedPpid.from_bytes(self.cert_type, self.data)


@dataclass(frozen=True, slots=True)
class QeReportCertData:
    """The QE's certification: its report body (signed by the PCK key), auth data, PCK data."""

    qe_report: ReportBody
    qe_report_signature: bytes
    qe_auth_data: bytes
    certification_data: CertificationData

    def __post_init__(self) -> None:
        check_field("QeReportCertData", "qe_report_signature", self.qe_report_signature, 64)

    @classmethod
    def read(cls, r: Reader) -> QeReportCertData:
        body = ReportBody.from_bytes(r.take(ReportBody.SIZE, "QE report"))
        sig = r.take(64, "QE report signature")
        auth = r.take(r.u16("QE auth data size"), "QE auth data")
        return _build_qe_cert(body, sig, auth, CertificationData.read(r))

    def to_bytes(self) -> bytes:
        return b"".join(
            (
                self.qe_report.to_bytes(),
                self.qe_report_signature,
                struct.pack("<H", len(self.qe_auth_data)),
                self.qe_auth_data,
                self.certification_data.to_bytes(),
            )
        )


@dataclass(frozen=True, slots=True)
class EcdsaSigData:
    """ECDSA P-256 signature data: ISV signature, attestation key and the QE's certification.

    For v4/v5 quotes ``qe_cert`` travels inside a type-6 certification data block; this class
    hides that difference (see :meth:`to_bytes`).
    """

    signature: bytes
    attestation_key: bytes
    qe_cert: QeReportCertData

    def __post_init__(self) -> None:
        check_field("EcdsaSigData", "signature", self.signature, 64)
        check_field("EcdsaSigData", "attestation_key", self.attestation_key, 64)

    @classmethod
    def from_bytes(cls, data: bytes, version: int, base: int = 0) -> EcdsaSigData:
        r = Reader(data, "EcdsaSigData", base)
        sig = r.take(64, "quote signature")
        key = r.take(64, "attestation key")
        if version == 3:
            qe_cert = QeReportCertData.read(r)
        else:
            outer = CertificationData.read(r)
            if outer.cert_type != CERT_TYPE_QE_REPORT:
                raise ParseError(
                    "EcdsaSigData",
                    base + 128,
                    f"v{version} quote needs certification data type 6, got {outer.cert_type}",
                )
            inner = Reader(outer.data, "QeReportCertData", base + 128 + 6)
            qe_cert = QeReportCertData.read(inner)
            if inner.remaining:
                raise ParseError(
                    "QeReportCertData", inner.base + inner.pos, f"{inner.remaining} unexpected bytes"
                )
        if r.remaining:
            raise ParseError(
                "EcdsaSigData", base + r.pos, f"{r.remaining} bytes left inside signature_data_len"
            )
        return _build_sig_data(sig, key, qe_cert)

    def to_bytes(self, version: int) -> bytes:
        qe = self.qe_cert.to_bytes()
        if version != 3:
            qe = CertificationData(CERT_TYPE_QE_REPORT, qe).to_bytes()
        return self.signature + self.attestation_key + qe


@dataclass(frozen=True, slots=True)
class SignedRegions:
    """Where a quote's two signed regions sit in its bytes (slices of ``Quote.to_bytes()``).

    ``signed``: header | [v5 body descriptor] | body, signed by the attestation key;
    ``qe_report``: the 384-byte QE report body, signed by the PCK key.
    """

    signed: slice
    qe_report: slice


@dataclass(frozen=True, slots=True)
class Quote:
    """A DCAP quote v3, v4 or v5 with ECDSA P-256 signature data."""

    header: QuoteHeader
    body: Body
    signature_data: EcdsaSigData
    body_type: int | None = None
    trailing: bytes = b""

    def __post_init__(self) -> None:
        if self.header.version not in (3, 4, 5):
            raise ParseError("Quote", 0, f"unsupported quote version {self.header.version}")
        if (self.header.version == 5) != (self.body_type is not None):
            raise ParseError("Quote", 48, "body_type is required for v5 quotes and only for them")

    # --- decoding -----------------------------------------------------------------------------
    @classmethod
    def from_bytes(cls, data: bytes) -> Quote:
        """Parse a quote; raise :class:`ParseError` naming the structure and offset on bad input."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ParseError("Quote", 0, f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        quote = _decode_well_formed(data)
        return quote if quote is not None else cls._from_bytes_checked(data)

    @classmethod
    def _from_bytes_checked(cls, data: bytes) -> Quote:
        """The field-by-field reader: decodes every quote we accept, names the fault of the rest."""
        r = Reader(data, "Quote")
        header = _decode_header(r.take(QuoteHeader.SIZE, "header"))
        if header.version not in (3, 4, 5):
            raise ParseError("Quote", 0, f"unsupported quote version {header.version} (expected 3, 4 or 5)")
        if header.att_key_type != ATT_KEY_TYPE_ECDSA_P256:
            raise ParseError(
                "Quote", 2, f"unsupported attestation key type {header.att_key_type} (expected 2)"
            )
        body_type: int | None = None
        if header.version == 5:
            body_type = r.u16("body type")
            body_size = r.u32("body size")
            cls_ = _V5_BODIES.get(body_type)
            if cls_ is None:
                raise ParseError("Quote", 48, f"unknown v5 body type {body_type}")
            if body_size != cls_.SIZE:
                raise ParseError(
                    "Quote", 50, f"body type {body_type} must be {cls_.SIZE} bytes, size says {body_size}"
                )
            _check_tee(header, body_type)
            body: Body = cls_.from_bytes(r.take(cls_.SIZE, "body"))
        else:
            cls2 = _v34_body(header)
            body = cls2.from_bytes(r.take(cls2.SIZE, "body"))
        sig_len = r.u32("signature_data_len")
        sig_base = r.pos
        sig = EcdsaSigData.from_bytes(r.take(sig_len, "signature data"), header.version, sig_base)
        # version and body_type were checked above: the same checks as __post_init__'s
        return _build_quote(header, body, sig, body_type, r.rest())

    # --- encoding -----------------------------------------------------------------------------
    @property
    def signed_bytes(self) -> bytes:
        """What the attestation key signs: header | [v5 body descriptor] | body."""
        return signed_bytes(self.header, self.body, self.body_type)

    def to_bytes(self) -> bytes:
        sig = self.signature_data.to_bytes(self.header.version)
        return self.signed_bytes + struct.pack("<I", len(sig)) + sig + self.trailing

    @property
    def regions(self) -> SignedRegions:
        """The offsets of the signed regions (header||body, QE report) in the quote's bytes."""
        signed = QuoteHeader.SIZE + (V5_BODY_DESCRIPTOR_SIZE if self.body_type is not None else 0)
        signed += type(self.body).SIZE
        qe = signed + SIGNATURE_DATA_LEN_SIZE + ECDSA_SIGNATURE_SIZE + ECDSA_PUBLIC_KEY_SIZE
        if self.header.version != 3:  # v4/v5: the QE report certification travels in a type-6 block
            qe += CERT_DATA_HEADER_SIZE
        return _build_regions(slice(0, signed), slice(qe, qe + ReportBody.SIZE))

    # --- convenience --------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self.header.version

    @property
    def is_tdx(self) -> bool:
        return isinstance(self.body, (TdReport10, TdReport15))

    @property
    def signature_data_len(self) -> int:
        return len(self.signature_data.to_bytes(self.header.version))

    @property
    def qe_report(self) -> ReportBody:
        return self.signature_data.qe_cert.qe_report

    @property
    def certification_data(self) -> CertificationData:
        """The innermost certification data (type 5 PCK chain, type 3 encrypted PPID...)."""
        return self.signature_data.qe_cert.certification_data

    @property
    def pck_chain_pem(self) -> bytes | None:
        """The PEM PCK chain carried in the quote (type 5), or ``None``."""
        cd = self.certification_data
        return cd.pck_chain_pem() if cd.cert_type == CERT_TYPE_PCK_CHAIN else None

    @property
    def report_data(self) -> bytes:
        return self.body.report_data


# Decoders build with these (values of the checked sizes by construction: Reader.take, struct);
# anything built from caller-supplied values goes through the classes and their checks.
_HEADER = struct.Struct("<HHIHH16s20s")
_build_header = decoded_builder(QuoteHeader)
_build_cert_data = decoded_builder(CertificationData)
_build_qe_cert = decoded_builder(QeReportCertData)
_build_sig_data = decoded_builder(EcdsaSigData)
_build_quote = decoded_builder(Quote)
_build_regions = decoded_builder(SignedRegions)


def _decode_header(raw: bytes) -> QuoteHeader:
    """The header from exactly 48 bytes."""
    return _build_header(*_HEADER.unpack(raw))


_V5_BODIES: dict[int, type[ReportBody] | type[TdReport10] | type[TdReport15]] = {
    BODY_TYPE_SGX: ReportBody,
    BODY_TYPE_TD_REPORT10: TdReport10,
    BODY_TYPE_TD_REPORT15: TdReport15,
}


_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U16_U32 = struct.Struct("<HI")
#: ISV signature and attestation key, then (v4/v5: inside a type-6 block) QE report and its signature
_SIG_AND_KEY = ECDSA_SIGNATURE_SIZE + ECDSA_PUBLIC_KEY_SIZE
_QE_REPORT_AND_SIG = ReportBody.SIZE + ECDSA_SIGNATURE_SIZE


def _decode_well_formed(data: bytes) -> Quote | None:
    """A well-formed quote in one pass of offset arithmetic (every quote a platform sends), else
    ``None``: then :meth:`Quote._from_bytes_checked` decodes it or names its fault. It accepts
    exactly what the checked reader accepts, with the same result (the same layout and checks:
    version, key type, v5 body type, size and TEE type, v3/v4 TEE type, every length inside
    ``signature_data_len`` consumed exactly, a type-6 block in v4/v5); it only skips the
    bookkeeping that names a fault."""
    n = len(data)
    if n < QuoteHeader.SIZE:
        return None
    version, akt, tee, qe_svn, pce_svn, vendor, user = _HEADER.unpack_from(data)
    if akt != ATT_KEY_TYPE_ECDSA_P256:
        return None
    body_type: int | None = None
    pos = QuoteHeader.SIZE
    body_cls: type[ReportBody] | type[TdReport10] | type[TdReport15]
    if version == 3 or (version == 4 and tee == TEE_TYPE_SGX):
        body_cls = ReportBody
    elif version == 4 and tee == TEE_TYPE_TDX:
        body_cls = TdReport10
    elif version == 5 and n >= pos + V5_BODY_DESCRIPTOR_SIZE:
        body_type, body_size = _U16_U32.unpack_from(data, pos)
        v5_cls = _V5_BODIES.get(body_type)
        if v5_cls is None or body_size != v5_cls.SIZE:
            return None
        if tee != (TEE_TYPE_SGX if body_type == BODY_TYPE_SGX else TEE_TYPE_TDX):
            return None
        body_cls = v5_cls
        pos += V5_BODY_DESCRIPTOR_SIZE
    else:
        return None
    body_end = pos + body_cls.SIZE
    if n < body_end + SIGNATURE_DATA_LEN_SIZE:
        return None
    (sig_len,) = _U32.unpack_from(data, body_end)
    sig_start = body_end + SIGNATURE_DATA_LEN_SIZE
    sig_end = sig_start + sig_len
    qe = sig_start + _SIG_AND_KEY
    if sig_end > n or sig_end < qe:
        return None
    if version != 3:  # the QE report certification travels in a type-6 block that fills the rest
        if sig_end < qe + CERT_DATA_HEADER_SIZE:
            return None
        outer_type, outer_size = _U16_U32.unpack_from(data, qe)
        qe += CERT_DATA_HEADER_SIZE
        if outer_type != CERT_TYPE_QE_REPORT or qe + outer_size != sig_end:
            return None
    auth = qe + _QE_REPORT_AND_SIG
    if sig_end < auth + 2:
        return None
    (auth_len,) = _U16.unpack_from(data, auth)
    cert = auth + 2 + auth_len
    if sig_end < cert + CERT_DATA_HEADER_SIZE:
        return None
    cert_type, cert_size = _U16_U32.unpack_from(data, cert)
    if cert + CERT_DATA_HEADER_SIZE + cert_size != sig_end:
        return None
    qe_cert = _build_qe_cert(
        ReportBody.unpack_from(data, qe),
        data[qe + ReportBody.SIZE : auth],
        data[auth + 2 : cert],
        _build_cert_data(cert_type, data[cert + CERT_DATA_HEADER_SIZE : sig_end]),
    )
    return _build_quote(
        _build_header(version, akt, tee, qe_svn, pce_svn, vendor, user),
        ReportBody.unpack_from(data, pos)
        if body_cls is ReportBody
        else body_cls.from_bytes(data[pos:body_end]),
        _build_sig_data(data[sig_start : sig_start + 64], data[sig_start + 64 : sig_start + 128], qe_cert),
        body_type,
        data[sig_end:],
    )


def _check_tee(header: QuoteHeader, body_type: int) -> None:
    want = TEE_TYPE_SGX if body_type == BODY_TYPE_SGX else TEE_TYPE_TDX
    if header.tee_type != want:
        raise ParseError("Quote", 4, f"TEE type {header.tee_type:#x} does not match body type {body_type}")


def _v34_body(header: QuoteHeader) -> type[ReportBody] | type[TdReport10]:
    if header.version == 3:
        return ReportBody
    if header.tee_type == TEE_TYPE_SGX:
        return ReportBody
    if header.tee_type == TEE_TYPE_TDX:
        return TdReport10
    raise ParseError("Quote", 4, f"unknown TEE type {header.tee_type:#x}")


def signed_bytes(header: QuoteHeader, body: Body, body_type: int | None = None) -> bytes:
    """What a quoting enclave signs: header | [v5 body type u16, body size u32] | body (v3/v4 sign
    everything before signature_data_len; v5 includes its body descriptor)."""
    raw = body.to_bytes()
    if body_type is not None:
        return header.to_bytes() + struct.pack("<HI", body_type, len(raw)) + raw
    return header.to_bytes() + raw


def parse_quote(data: bytes) -> Quote:
    """Parse quote bytes (alias of :meth:`Quote.from_bytes`)."""
    return Quote.from_bytes(data)


__all__ = [
    "ATT_KEY_TYPE_ECDSA_P256",
    "ATT_KEY_TYPE_ECDSA_P384",
    "BODY_TYPE_SGX",
    "BODY_TYPE_TD_REPORT10",
    "BODY_TYPE_TD_REPORT15",
    "CERT_DATA_HEADER_SIZE",
    "CERT_TYPE_PCK_CHAIN",
    "CERT_TYPE_PCK_CLEARTEXT",
    "CERT_TYPE_PLATFORM_MANIFEST",
    "CERT_TYPE_PPID_CLEARTEXT",
    "CERT_TYPE_PPID_RSA2048_ENCRYPTED",
    "CERT_TYPE_PPID_RSA3072_ENCRYPTED",
    "CERT_TYPE_QE_REPORT",
    "ECDSA_PUBLIC_KEY_SIZE",
    "ECDSA_SIGNATURE_SIZE",
    "INTEL_QE_VENDOR_ID",
    "SGX_SIGNATURE_DATA_LEN_OFFSET",
    "SGX_SIGNATURE_DATA_OFFSET",
    "SIGNATURE_DATA_LEN_SIZE",
    "TEE_TYPE_SGX",
    "TEE_TYPE_TDX",
    "V5_BODY_DESCRIPTOR_SIZE",
    "Body",
    "CertificationData",
    "EcdsaSigData",
    "EncryptedPpid",
    "QeReportCertData",
    "Quote",
    "QuoteHeader",
    "SignedRegions",
    "parse_quote",
    "signed_bytes",
]
