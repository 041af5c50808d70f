"""The simulated QE3 and PCE: the QE's identity, its certified attestation key, and quote assembly.

What real QE3 + PCE do, in software (``shared/specs/aesm-protocol.md`` §4, §6;
``shared/specs/dcap-quote.md`` §1.3-1.4):

- the QE's identity: a fixed simulated MRENCLAVE, Intel's QE3 MRSIGNER, ISVPRODID 1, ATTRIBUTES
  flags 0x15 (INIT | MODE64BIT | PROVISIONKEY, what real QE reports carry), MISCSELECT 0;
- certification: the QE report body has report_data = SHA-256(attestation public key X||Y || QE
  auth data) || 32 zero bytes and is signed by the PCK key (the PCE's key), raw r||s;
- the QE auth data is the 32 reference bytes 00 01 .. 1f that QE3 uses;
- certification data: type 5 (PEM chain leaf | PCK CA | root, then one NUL as real QEs emit) or
  type 3 (PPID encrypted with RSA-3072-OAEP-SHA256 to the PCE encryption key | CPUSVN | PCESVN |
  PCE-ID), as QE3 does without a quote provider library.

No I/O; the platform supplies keys and identity.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from ..abi.keyid import QE3_MRSIGNER, QE3_PROD_ID
from ..abi.quote import (
    ATT_KEY_TYPE_ECDSA_P256,
    CERT_TYPE_PCK_CHAIN,
    CERT_TYPE_PPID_RSA3072_ENCRYPTED,
    INTEL_QE_VENDOR_ID,
    TEE_TYPE_SGX,
    CertificationData,
    EcdsaSigData,
    EncryptedPpid,
    QeReportCertData,
    Quote,
    QuoteHeader,
)
from ..abi.report import FLAG_INIT, FLAG_MODE64BIT, FLAG_PROVISIONKEY, Attributes, ReportBody, TargetInfo
from .platform import Platform

#: MRENCLAVE of the simulated QE (SHA-256 of a fixed label; no real enclave has it)
SIMULATED_QE_MRENCLAVE = hashlib.sha256(b"sgx-quote-helper SIMULATED QE3 v1").digest()
#: real QE3 reports carry flags 0x15; XFRM x87|SSE|AVX|AVX-512 state
QE_ATTRIBUTES = Attributes(FLAG_INIT | FLAG_MODE64BIT | FLAG_PROVISIONKEY, 0xE7)
#: QE3's authentication data: the reference bytes 0x00..0x1f (quoting_enclave_3.cpp gen_att_key)
QE_AUTH_DATA = bytes(range(32))
QE_TARGET_INFO = TargetInfo(mr_enclave=SIMULATED_QE_MRENCLAVE, attributes=QE_ATTRIBUTES, misc_select=0)
#: how the PCE encrypts the PPID for certification data type 3 (RSA-3072, OAEP with SHA-256)
PPID_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


#: the signature algorithm of quotes and QE reports (immutable: built once)
ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


#: the same signature over a digest computed beforehand (hashlib: no hash object per call)
_ECDSA_PREHASHED_SHA256 = ec.ECDSA(Prehashed(hashes.SHA256()))
_sha256 = hashlib.sha256


def raw_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA-P256-SHA256 over ``data`` as quotes carry it: r || s, 32 bytes each, big-endian.

    The digest is SHA-256(``data``) as ``ECDSA(SHA256())`` would compute it. When both DER
    INTEGERs are 32 or 33 bytes long (``30 L 02 lr r 02 ls s``; 33 = a 0x00 before a value whose
    top bit is set: all but about 1 in 128 signatures) r and s are their last 32 bytes, cut out
    directly; any other encoding goes through ``decode_dss_signature``."""
    der = key.sign(_sha256(data).digest(), _ECDSA_PREHASHED_SHA256)
    lr = der[3]
    if 32 <= lr <= 33:
        ls = der[lr + 5]
        if 32 <= ls <= 33 and len(der) == lr + ls + 6:
            return der[lr - 28 : lr + 4] + der[-32:]
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def raw_public_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The 64-byte X || Y public key (no 0x04 prefix)."""
    nums = key.public_key().public_numbers()
    return nums.x.to_bytes(32, "big") + nums.y.to_bytes(32, "big")


def qe_report_body(platform: Platform, report_data: bytes) -> ReportBody:
    """A report body with the simulated QE's identity and ``report_data`` (64 bytes)."""
    return ReportBody(
        cpu_svn=platform.identity.cpusvn,
        misc_select=0,
        attributes=QE_ATTRIBUTES,
        mr_enclave=SIMULATED_QE_MRENCLAVE,
        mr_signer=QE3_MRSIGNER,
        isv_prod_id=QE3_PROD_ID,
        isv_svn=platform.identity.qe_svn,
        report_data=report_data,
    )


def certification_data(platform: Platform) -> CertificationData:
    """Type 5 (PCK chain + NUL) or type 3 (encrypted PPID), by the platform's ``cert_data`` setting."""
    ident = platform.identity
    if ident.cert_data == "pck-chain":
        return CertificationData(CERT_TYPE_PCK_CHAIN, platform.pck_chain_pem() + b"\0")
    encrypted = platform.pce_encryption_key.public_key().encrypt(ident.ppid, PPID_OAEP)
    ppid = EncryptedPpid(encrypted, ident.cpusvn, ident.pcesvn, ident.pce_id)
    return CertificationData(CERT_TYPE_PPID_RSA3072_ENCRYPTED, ppid.to_bytes())


@dataclass(frozen=True, slots=True)
class CertifiedKey:
    """An attestation key with everything that is fixed per key: built once, reused per quote.

    A v3 quote is ``header | body | u32 signature_data_len | r||s | attestation key | QE
    certification``; everything but the body and the signature is the same for every quote of a
    key, so its bytes are kept (``header_bytes``, ``sig_tail``) and a quote costs one signature and
    one concatenation (the same bytes :class:`~..abi.quote.Quote` ``.to_bytes()`` produces).
    """

    key: ec.EllipticCurvePrivateKey
    public_key: bytes  # X || Y
    ecdsa_id: bytes  # SHA-256(public_key || QE auth data)
    qe_cert: QeReportCertData
    header: QuoteHeader
    header_bytes: bytes = field(init=False, repr=False)
    #: attestation key || QE certification data: what follows r||s in the signature data
    sig_tail: bytes = field(init=False, repr=False)
    #: ``signature_data_len`` as the quote carries it (u32 little-endian)
    sig_len_bytes: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        tail = self.public_key + self.qe_cert.to_bytes()
        object.__setattr__(self, "header_bytes", self.header.to_bytes())
        object.__setattr__(self, "sig_tail", tail)
        object.__setattr__(self, "sig_len_bytes", struct.pack("<I", 64 + len(tail)))

    @classmethod
    def certify(cls, platform: Platform, key: ec.EllipticCurvePrivateKey) -> CertifiedKey:
        """The PCE's certification of ``key``: QE report bound to the key, signed by the PCK key."""
        pub = raw_public_key(key)
        ecdsa_id = hashlib.sha256(pub + QE_AUTH_DATA).digest()
        body = qe_report_body(platform, ecdsa_id + bytes(32))
        qe_cert = QeReportCertData(
            qe_report=body,
            qe_report_signature=raw_signature(platform.keys["pck"], body.to_bytes()),
            qe_auth_data=QE_AUTH_DATA,
            certification_data=certification_data(platform),
        )
        ident = platform.identity
        header = QuoteHeader(
            version=3,
            att_key_type=ATT_KEY_TYPE_ECDSA_P256,
            tee_type=TEE_TYPE_SGX,
            qe_svn=ident.qe_svn,
            pce_svn=ident.pcesvn,
            qe_vendor_id=INTEL_QE_VENDOR_ID,
            user_data=ident.qe_id + bytes(4),
        )
        return cls(key, pub, ecdsa_id, qe_cert, header)

    def quote(self, body: ReportBody | bytes) -> bytes:
        """A signed v3 quote of ``body`` (the app's report body, or its 384 bytes)."""
        raw = body.to_bytes() if isinstance(body, ReportBody) else body
        if len(raw) != ReportBody.SIZE:
            raise ValueError(f"a report body is {ReportBody.SIZE} bytes, got {len(raw)}")
        signed = self.header_bytes + raw
        return b"".join((signed, self.sig_len_bytes, raw_signature(self.key, signed), self.sig_tail))

    def quote_via_abi(self, body: ReportBody) -> bytes:
        """The same quote built through :class:`~..abi.quote.Quote` (the reference layout; tests
        compare :meth:`quote` with it)."""
        signed = self.header.to_bytes() + body.to_bytes()
        sig = EcdsaSigData(raw_signature(self.key, signed), self.public_key, self.qe_cert)
        return Quote(self.header, body, sig).to_bytes()

    @property
    def quote_size(self) -> int:
        """The exact length of :meth:`quote`'s output (every part has a fixed size per key)."""
        return QuoteHeader.SIZE + ReportBody.SIZE + 4 + 64 + len(self.sig_tail)


__all__ = [
    "ECDSA_SHA256",
    "PPID_OAEP",
    "QE_ATTRIBUTES",
    "QE_AUTH_DATA",
    "QE_TARGET_INFO",
    "SIMULATED_QE_MRENCLAVE",
    "CertifiedKey",
    "certification_data",
    "qe_report_body",
    "raw_public_key",
    "raw_signature",
]
