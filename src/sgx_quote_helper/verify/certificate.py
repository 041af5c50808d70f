"""A chain certificate parsed once: cryptography's object plus the raw DER regions the verifier reads.

cryptography re-encodes the certificate on every ``tbs_certificate_bytes`` / ``public_bytes``
access, builds Name objects for ``subject`` / ``issuer`` and reloads the issuer's key inside
``verify_directly_issued_by``. The verifier reads the exact TBS, the issuer and subject Names, the
outer signature algorithm and the signature of every chain certificate, so one DER walk of the
bytes as sent finds them (:meth:`DerCertificate.from_der`), and the key is loaded once.

cryptography still parses every certificate (its strictness stays the verifier's); every check
that uses these regions falls back to cryptography's own where the fast form does not apply (a
walk that fails, another signature algorithm, names that differ byte-wise), so results and error
reasons are the same either way.
"""

from __future__ import annotations

import binascii
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import ParseError

#: the bytes a PEM body of plain base64 lines holds
_B64_AND_LF = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n"
_BEGIN = b"-----BEGIN CERTIFICATE-----"
_END = b"-----END CERTIFICATE-----"
_S = "Certificate"
_SEQ = 0x30


class DerCertificate:
    """One certificate: ``der`` (as sent), ``cert`` (cryptography's parse of those bytes) and the
    raw regions of one DER walk — ``tbs`` (the signed TBSCertificate TLV), ``signature_algorithm``
    (the outer AlgorithmIdentifier TLV), ``signature`` (the BIT STRING's bytes), ``issuer`` and
    ``subject`` (Name TLVs). The regions are ``None`` when the walk did not apply."""

    __slots__ = ("_key", "cert", "der", "issuer", "signature", "signature_algorithm", "subject", "tbs")

    def __init__(self, der_bytes: bytes, cert: x509.Certificate) -> None:
        self.der = der_bytes
        self.cert = cert
        self.tbs: bytes | None = None
        self.signature_algorithm: bytes | None = None
        self.signature: bytes | None = None
        self.issuer: bytes | None = None
        self.subject: bytes | None = None
        self._key: ec.EllipticCurvePublicKey | bool | None = False  # False: not loaded yet
        try:
            self._walk(der_bytes)
        except (ParseError, IndexError):
            self.tbs = self.signature_algorithm = self.signature = self.issuer = self.subject = None

    @classmethod
    def from_der(cls, data: bytes) -> DerCertificate:
        """Parse DER bytes (cryptography's errors: ValueError and friends)."""
        return cls(data, x509.load_der_x509_certificate(data))

    @classmethod
    def from_pem_block(cls, block: bytes) -> DerCertificate:
        """One ``-----BEGIN CERTIFICATE-----`` ... ``-----END CERTIFICATE-----`` block.

        The DER comes from decoding the block here when it is plain base64 lines in canonical
        form (what cryptography's PEM reader accepts and decodes to the same bytes); any other
        block, and any error, is left to ``x509.load_pem_x509_certificate`` (its result, its
        exception)."""
        data = _canonical_base64(block)
        if data is not None:
            try:
                return cls.from_der(data)
            except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion):
                pass  # cryptography's PEM path raises its own error below
        cert = x509.load_pem_x509_certificate(block)
        from cryptography.hazmat.primitives.serialization import Encoding

        return cls(cert.public_bytes(Encoding.DER), cert)

    def _walk(self, data: bytes) -> None:
        """Find the regions. ``data`` already parsed as a certificate (cryptography's strict DER
        reader), so reading the headers is enough; anything unexpected leaves them ``None``."""
        start, end = _content(data, 0)
        if data[0] != _SEQ or end != len(data):
            raise ParseError(_S, 0, "not one SEQUENCE")
        tbs_start, tbs_end = _content(data, start)  # TBSCertificate
        _, alg_end = _content(data, tbs_end)  # signatureAlgorithm
        sig_start, sig_end = _content(data, alg_end)  # signatureValue
        if data[start] != _SEQ or data[tbs_end] != _SEQ or data[alg_end] != 0x03 or sig_end != end:
            raise ParseError(_S, start, "not a certificate")
        if sig_start >= sig_end or data[sig_start] != 0:
            raise ParseError(_S, sig_start, "signature BIT STRING with unused bits")
        # TBSCertificate: [0] version, serial, signature, issuer, validity, subject, ...
        pos = tbs_start
        if data[pos] == 0xA0:
            pos = _content(data, pos)[1]
        pos = _content(data, pos)[1]  # serial
        pos = _content(data, pos)[1]  # signature
        issuer_end = _content(data, pos)[1]
        subject_start = _content(data, issuer_end)[1]  # after validity
        subject_end = _content(data, subject_start)[1]
        if data[pos] != _SEQ or data[subject_start] != _SEQ or subject_end > tbs_end:
            raise ParseError(_S, pos, "issuer/subject are not Names")
        self.tbs = data[start:tbs_end]
        self.signature_algorithm = data[tbs_end:alg_end]
        self.signature = data[sig_start + 1 : sig_end]
        self.issuer = data[pos:issuer_end]
        self.subject = data[subject_start:subject_end]

    def ec_key(self) -> ec.EllipticCurvePublicKey | None:
        """The certificate's EC public key, loaded once; ``None`` for any other key or one that
        does not load (callers then take cryptography's own path and its error)."""
        if self._key is False:
            try:
                key = self.cert.public_key()
            except (ValueError, TypeError, UnsupportedAlgorithm):
                key = None
            self._key = key if isinstance(key, ec.EllipticCurvePublicKey) else None
        return self._key  # type: ignore[return-value]


class CrlRegions(NamedTuple):
    """The signed parts of a CRL as sent: TBSCertList, its inner and the outer AlgorithmIdentifier,
    the signature (BIT STRING bytes)."""

    tbs: bytes
    inner_algorithm: bytes
    algorithm: bytes
    signature: bytes


def crl_regions(data: bytes) -> CrlRegions | None:
    """The :class:`CrlRegions` of DER bytes that already parsed as a CRL, or ``None``."""
    try:
        start, end = _content(data, 0)
        tbs_start, tbs_end = _content(data, start)
        alg_end = _content(data, tbs_end)[1]
        sig_start, sig_end = _content(data, alg_end)
        if data[0] != _SEQ or end != len(data) or data[start] != _SEQ or data[alg_end] != 0x03:
            return None
        if sig_end != end or sig_start >= sig_end or data[sig_start] != 0:
            return None
        pos = tbs_start
        if data[pos] == 0x02:  # version
            pos = _content(data, pos)[1]
        inner_end = _content(data, pos)[1]
        if inner_end > tbs_end:
            return None
        return CrlRegions(
            data[start:tbs_end], data[pos:inner_end], data[tbs_end:alg_end], data[sig_start + 1 : sig_end]
        )
    except IndexError:
        return None


def _content(data: bytes, pos: int) -> tuple[int, int]:
    """Where the contents of the DER element at ``pos`` start and end (definite lengths)."""
    n = data[pos + 1]
    if n < 0x80:
        return pos + 2, pos + 2 + n
    k = n & 0x7F
    start = pos + 2 + k
    return start, start + int.from_bytes(data[pos + 2 : start], "big")


def _canonical_base64(block: bytes) -> bytes | None:
    """The DER inside a PEM certificate block of plain base64 lines (LF or CRLF), or ``None``.

    Accepted: an optional line break after BEGIN, then non-empty lines of base64 characters (no
    headers, blank lines or other whitespace, which cryptography's reader treats in its own
    ways), in canonical base64 (re-encoding gives the same text): exactly text cryptography's
    PEM reader decodes to the same bytes. Everything else is left to it."""
    if not (block.startswith(_BEGIN) and block.endswith(_END)):
        return None
    body = block[len(_BEGIN) : -len(_END)].replace(b"\r\n", b"\n")
    if body[:1] == b"\n":
        body = body[1:]
    if body[:1] == b"\n" or b"\n\n" in body or body.translate(None, _B64_AND_LF):
        return None
    text = body.replace(b"\n", b"")
    try:
        data = binascii.a2b_base64(text)
    except binascii.Error:
        return None
    if not data or binascii.b2a_base64(data, newline=False) != text:
        return None
    return data


__all__ = ["CrlRegions", "DerCertificate", "crl_regions"]
