"""X.509 for DCAP: the pinned root, PCK and TCB-signing chains, CRLs, validity windows.

Loading is separate from verifying (as in ``cryptography.x509``): ``load_*`` only parse, and every
check takes ``now`` and the trusted root as parameters. Failures raise
:class:`~sgx_quote_helper.errors.VerificationError` with the step number given by the caller.
Rules: ``shared/specs/dcap-quote.md`` §2 and §4 (QVL's PckCertVerifier / TCBSigningChain).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from types import TracebackType

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from ..abi import der
from ..abi.pck import SGX_EXTENSION_OID, SgxExtensions
from ..errors import CollateralError, ParseError, VerificationError
from .certificate import DerCertificate, crl_regions
from .roots import INTEL_SGX_ROOT_CA_DER

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----")
_SGX_EXT = x509.ObjectIdentifier(SGX_EXTENSION_OID)
_ECDSA = ec.ECDSA(hashes.SHA256())
#: AlgorithmIdentifier { ecdsa-with-SHA256 } (1.2.840.10045.4.3.2, no parameters), as DER
_ECDSA_WITH_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")

#: a validity window: (not before, not after, upper bound inclusive?)
Window = tuple[datetime, datetime, bool]


_CN_OID = bytes.fromhex("550403")  # 2.5.4.3


def common_name(cert: x509.Certificate | DerCertificate) -> str:
    """The subject CN ('' if absent), read straight from the subject Name's DER (no Name objects:
    this is on the cold path three times per quote)."""
    x = cert.cert if isinstance(cert, DerCertificate) else cert
    try:
        if isinstance(cert, DerCertificate) and cert.subject is not None:
            _, subject, _ = der.read_tlv(cert.subject, 0, "Name")
        else:
            subject = _tbs_subject(x.tbs_certificate_bytes)
        for _, rdn in der.read_all(subject, "Name"):
            for _, atv in der.read_all(rdn, "Name"):
                parts = der.read_all(atv, "Name")
                if len(parts) == 2 and parts[0] == (der.TAG_OID, _CN_OID):
                    return parts[1][1].decode("utf-8", "replace")
    except (ParseError, IndexError, ValueError):
        attrs = x.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = attrs[0].value if attrs else ""
        return cn if isinstance(cn, str) else cn.decode("utf-8", "replace")
    return ""


def _tbs_subject(tbs: bytes) -> bytes:
    """The subject Name's contents inside TBSCertificate bytes."""
    _, body, _ = der.read_tlv(tbs, 0, "TBSCertificate")
    pos = 0
    fields: list[tuple[int, bytes]] = []
    while pos < len(body) and len(fields) < 6:
        tag, value, pos = der.read_tlv(body, pos, "TBSCertificate")
        fields.append((tag, value))
    if fields and fields[0][0] == 0xA0:  # [0] version
        fields.pop(0)
    return fields[4][1]  # serial, signature alg, issuer, validity, subject


_MALFORMED = (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion, x509.DuplicateExtension)


class _Malformed:
    """:func:`malformed`'s context manager (a class: it wraps several calls of every cold check)."""

    __slots__ = ("step", "what")

    def __init__(self, step: int, what: str) -> None:
        self.step, self.what = step, what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and isinstance(exc, _MALFORMED) and not isinstance(exc, VerificationError):
            raise VerificationError(self.step, f"{self.what}-malformed", str(exc)) from None


def malformed(step: int, what: str) -> _Malformed:
    """Turn a lazily-decoded certificate field that does not parse into '<what>-malformed'."""
    return _Malformed(step, what)


def load_pem_chain(pem: bytes | str, step: int, what: str) -> list[x509.Certificate]:
    """Every PEM certificate in ``pem`` (NULs and text between them ignored), leaf first."""
    return [c.cert for c in load_pem_certificates(pem, step, what)]


def load_pem_certificates(pem: bytes | str, step: int, what: str) -> list[DerCertificate]:
    """:func:`load_pem_chain` with each certificate's DER and raw regions (one walk each)."""
    raw = pem.encode("latin-1", "replace") if isinstance(pem, str) else pem
    blocks = _PEM_CERT.findall(raw)
    if not blocks:
        raise VerificationError(step, f"{what}-missing", "no PEM certificate found")
    with malformed(step, what):
        return [DerCertificate.from_pem_block(b) for b in blocks]
    raise AssertionError("unreachable")  # pragma: no cover


def load_crl(der: bytes, step: int, what: str) -> x509.CertificateRevocationList:
    """A DER CRL, or VerificationError(step, '<what>-malformed')."""
    with malformed(step, what):
        crl = x509.load_der_x509_crl(der)
        _ = crl.next_update_utc, crl.last_update_utc  # decode the lazy fields now
        return crl
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class TrustedRoot:
    """The trust anchor: a self-signed root certificate given as DER or PEM."""

    der: bytes

    @classmethod
    def intel(cls) -> TrustedRoot:
        """Intel's production SGX Root CA (the embedded, hash-checked constant)."""
        return _INTEL

    @classmethod
    def load(cls, data: bytes) -> TrustedRoot:
        """Load a root from DER or PEM bytes; CollateralError if it is not one self-signed cert."""
        if b"-----BEGIN CERTIFICATE-----" in data:
            try:
                cert = x509.load_pem_x509_certificate(_PEM_CERT.findall(data)[0])
            except (ValueError, IndexError, x509.InvalidVersion):
                raise CollateralError("root CA: not a PEM certificate") from None
            data = cert.public_bytes(serialization.Encoding.DER)
        root = cls(bytes(data))
        try:
            cert = root.cert
            cert.verify_directly_issued_by(cert)
        # cryptography raises these two outside ValueError: unknown key OID, bad X.509 version
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm, x509.InvalidVersion):
            raise CollateralError("root CA: not a self-signed certificate") from None
        return root

    @cached_property
    def cert(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)

    @cached_property
    def parsed(self) -> DerCertificate:
        """The root as a :class:`DerCertificate` (raw subject, key loaded once)."""
        return DerCertificate(self.der, self.cert)

    @cached_property
    def sha256(self) -> bytes:
        return hashlib.sha256(self.der).digest()

    @cached_property
    def tbs(self) -> bytes:
        """The root's TBSCertificate bytes (cryptography builds a new bytes object per access)."""
        return self.cert.tbs_certificate_bytes

    @cached_property
    def signature(self) -> bytes:
        return self.cert.signature

    @cached_property
    def public_key(self) -> ec.EllipticCurvePublicKey | None:
        """The root's EC key, loaded once (it checks the root CA CRL on every cold verification);
        ``None`` for a root of another key type (whatever it signed then fails its check)."""
        key = self.cert.public_key()
        return key if isinstance(key, ec.EllipticCurvePublicKey) else None

    @cached_property
    def public_key_bytes(self) -> bytes:
        return self.cert.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )


_INTEL = TrustedRoot(INTEL_SGX_ROOT_CA_DER)


def public_key(cert: x509.Certificate, step: int, what: str) -> CertificatePublicKeyTypes:
    """The certificate's public key, or '<what>-bad-key' when it does not decode."""
    try:
        return cert.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise VerificationError(step, f"{what}-bad-key", str(exc)) from None


def check_window(cert: x509.Certificate, now: datetime, step: int, what: str) -> Window:
    """notBefore <= now <= notAfter, else '<what>-not-yet-valid' / '<what>-expired'."""
    lo, hi = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < lo:
        raise VerificationError(step, f"{what}-not-yet-valid", f"valid from {lo.isoformat()}")
    if now > hi:
        raise VerificationError(step, f"{what}-expired", f"expired {hi.isoformat()}")
    return (lo, hi, True)


def check_issued_by(child: x509.Certificate, issuer: x509.Certificate, step: int, what: str) -> None:
    """``child`` names ``issuer`` as its issuer and carries a valid signature by its key."""
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        raise VerificationError(step, f"{what}-bad-signature", "not signed by its issuer") from None


def check_signed_by(child: DerCertificate, issuer: DerCertificate, step: int, what: str) -> None:
    """:func:`check_issued_by` over the raw regions: the child's issuer Name is byte-for-byte the
    issuer's subject, and the issuer's (once loaded) key verifies the ECDSA-with-SHA256 signature
    over the TBS bytes as sent. Anything else (another algorithm or key type, names that are not
    byte-identical, a signature that does not verify) is decided by cryptography's check."""
    key = issuer.ec_key()
    if (
        key is not None
        and child.signature_algorithm == _ECDSA_WITH_SHA256
        and child.issuer is not None
        and child.issuer == issuer.subject
        and child.signature is not None
        and child.tbs is not None
    ):
        try:
            key.verify(child.signature, child.tbs, _ECDSA)
            return
        except InvalidSignature:
            pass  # cryptography's check below names the failure
    check_issued_by(child.cert, issuer.cert, step, what)


def check_pinned(chain_root: x509.Certificate, trusted: TrustedRoot, step: int) -> None:
    """The chain's root is the trusted root (same key and same signature bytes, as QVL checks)."""
    if chain_root.signature != trusted.signature:
        raise VerificationError(step, "untrusted-root", "the chain does not end at the trusted root CA")
    if chain_root.tbs_certificate_bytes == trusted.tbs:
        return  # the very same certificate
    key = public_key(chain_root, step, "root-ca").public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    if key != trusted.public_key_bytes:
        raise VerificationError(step, "untrusted-root", "the chain does not end at the trusted root CA")


def check_crl(
    crl: x509.CertificateRevocationList,
    issuer: x509.Certificate,
    now: datetime,
    step: int,
    what: str,
    issuer_key: ec.EllipticCurvePublicKey | None = None,
    der: bytes | None = None,
) -> Window:
    """The CRL is issued and signed by ``issuer`` (``issuer_key``: its key, already loaded) and
    ``thisUpdate <= now < nextUpdate``. ``der``: the bytes ``crl`` was loaded from (then its
    signature is checked over the TBSCertList as sent, see :func:`crl_signed_by`)."""
    with malformed(step, what):
        return _check_crl(crl, issuer, now, step, what, issuer_key, der)
    raise AssertionError("unreachable")  # pragma: no cover


def _check_crl(
    crl: x509.CertificateRevocationList,
    issuer: x509.Certificate,
    now: datetime,
    step: int,
    what: str,
    issuer_key: ec.EllipticCurvePublicKey | None,
    der: bytes | None,
) -> Window:
    key = issuer_key if issuer_key is not None else public_key(issuer, step, what)
    if not isinstance(key, ec.EllipticCurvePublicKey) or not crl_signed_by(crl, der, key):
        raise VerificationError(step, f"{what}-bad-signature", "not signed by the expected issuer")
    lo, hi = crl.last_update_utc, crl.next_update_utc
    if hi is None:
        raise VerificationError(step, f"{what}-malformed", "CRL has no nextUpdate")
    if now < lo:
        raise VerificationError(step, f"{what}-not-yet-valid", f"valid from {lo.isoformat()}")
    if now >= hi:
        raise VerificationError(step, f"{what}-expired", f"expired {hi.isoformat()}")
    return (lo, hi, False)


def crl_signed_by(
    crl: x509.CertificateRevocationList, der: bytes | None, key: ec.EllipticCurvePublicKey
) -> bool:
    """``crl.is_signature_valid(key)``, over the raw regions when ``der`` (the bytes ``crl`` was
    loaded from) has ECDSA-with-SHA256 as both its inner and outer algorithm; any other CRL, and
    a signature that does not verify, is decided by cryptography's check."""
    regions = crl_regions(der) if der is not None else None
    if (
        regions is not None
        and regions.algorithm == _ECDSA_WITH_SHA256
        and regions.inner_algorithm == _ECDSA_WITH_SHA256
    ):
        try:
            key.verify(regions.signature, regions.tbs, _ECDSA)
            return True
        except InvalidSignature:
            pass
    return crl.is_signature_valid(key)


def check_not_revoked(
    crl: x509.CertificateRevocationList | None, cert: x509.Certificate, step: int, what: str
) -> None:
    """``cert``'s serial is not listed in ``crl`` (no CRL: nothing to check)."""
    if crl is not None and crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
        raise VerificationError(step, f"{what}-revoked", f"serial {cert.serial_number:x} is revoked")


def check_cn(cert: x509.Certificate | DerCertificate, phrases: tuple[str, ...], step: int, what: str) -> str:
    """The subject CN contains every phrase (Intel's role names; SIMULATED prefixes allowed)."""
    cn = common_name(cert)
    if not all(p in cn for p in phrases):
        raise VerificationError(step, f"{what}-wrong-role", f"CN {cn!r} lacks {phrases!r}")
    return cn


def sgx_extensions(leaf: x509.Certificate, step: int) -> SgxExtensions:
    """The decoded SGX extension (OID 1.2.840.113741.1.13.1) of a PCK leaf certificate."""
    try:
        ext = leaf.extensions.get_extension_for_oid(_SGX_EXT).value
    except x509.ExtensionNotFound:
        raise VerificationError(step, "pck-sgx-extension-missing") from None
    except (ValueError, x509.DuplicateExtension) as exc:  # DuplicateExtension: found by fuzz/ pki
        raise VerificationError(step, "pck-cert-malformed", str(exc)) from None
    raw = getattr(ext, "value", None)
    if not isinstance(raw, bytes):
        raise VerificationError(step, "pck-sgx-extension-malformed")
    try:
        return SgxExtensions.from_der(raw)
    except ParseError as exc:
        raise VerificationError(step, "pck-sgx-extension-malformed", str(exc)) from None


def ec_key(cert: x509.Certificate, step: int, what: str) -> ec.EllipticCurvePublicKey:
    """The certificate's P-256 public key."""
    key = public_key(cert, step, what)
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise VerificationError(step, f"{what}-wrong-key-type", "expected an ECDSA P-256 key")
    return key


def split_root(chain: list[DerCertificate], trusted: TrustedRoot, step: int, what: str) -> DerCertificate:
    """The chain's root: its last certificate if self-issued (then pinned), else the trusted root."""
    last = chain[-1]
    if last.der == trusted.der:  # the very same certificate: pinned
        chain.pop()
        return trusted.parsed
    cert = last.cert
    if cert.tbs_certificate_bytes == trusted.tbs or cert.subject == cert.issuer:
        check_pinned(cert, trusted, step)
        chain.pop()
    return trusted.parsed


__all__ = [
    "TrustedRoot",
    "Window",
    "check_cn",
    "check_crl",
    "check_issued_by",
    "check_not_revoked",
    "check_pinned",
    "check_signed_by",
    "check_window",
    "common_name",
    "crl_signed_by",
    "ec_key",
    "load_crl",
    "load_pem_certificates",
    "load_pem_chain",
    "malformed",
    "public_key",
    "sgx_extensions",
    "split_root",
]
