"""A collateral document as served over HTTP (body, content type, Intel's headers, validity), and the
checks an upstream answer must pass before it is served or cached.

The header names and encodings are Intel's (dcap-quote.md §3.4): issuer chains are URL-encoded PEM
(leaf first, root last); ``/tcb`` says ``TCB-Info-Issuer-Chain`` in API v4 and
``SGX-TCB-Info-Issuer-Chain`` in v3; ``/tcbevaluationdatanumbers`` says
``TCB-Evaluation-Data-Numbers-Issuer-Chain``; ``/rootcacrl`` answers the DER CRL as hex text,
``/crl?uri=`` as raw DER, and ``/pckcrl`` as hex text unless ``encoding=der`` (DER) or ``encoding=pem``,
as Intel's PCCS does (``rootcacrlService.js``, ``crlService.js``, ``pckcrlService.js``). A document's ``next_update`` is when it stops being valid (TCB Info / QE Identity
``nextUpdate``, a CRL's nextUpdate, a PCK certificate's notAfter).

Nothing here does I/O or reads the clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from ..errors import CollateralError
from ..verify.collateral import crl_to_der, decode_issuer_chain, signed_member
from .resource import Resource

JSON = "application/json"
PEM = "application/x-pem-file"
CRL = "application/pkix-crl"

TCB_CHAIN_V4 = "TCB-Info-Issuer-Chain"
TCB_CHAIN_V3 = "SGX-TCB-Info-Issuer-Chain"
EVALUATION_CHAIN = "TCB-Evaluation-Data-Numbers-Issuer-Chain"
ENCLAVE_CHAIN = "SGX-Enclave-Identity-Issuer-Chain"
PCK_CRL_CHAIN = "SGX-PCK-CRL-Issuer-Chain"
PCK_CERT_CHAIN = "SGX-PCK-Certificate-Issuer-Chain"
TCBM = "SGX-TCBm"
FMSPC = "SGX-FMSPC"
CA_TYPE = "SGX-PCK-Certificate-CA-Type"

_HEX = re.compile(r"[0-9A-Fa-f]+")
#: what cryptography raises for bytes that are not a certificate / CRL (InvalidVersion is no ValueError)
_X509_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion)


@dataclass(frozen=True)
class Document:
    """One answer to serve: exact body bytes, content type, extra headers, and its validity window."""

    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...]
    next_update: datetime
    issue_date: datetime | None = None

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), or ``None``."""
        low = name.lower()
        return next((v for k, v in self.headers if k.lower() == low), None)

    def to_json(self) -> str:
        """Metadata (everything but the body) as JSON text, for the cache."""
        return json.dumps(
            {
                "content_type": self.content_type,
                "headers": [list(h) for h in self.headers],
                "next_update": self.next_update.isoformat(),
                "issue_date": self.issue_date.isoformat() if self.issue_date else None,
            }
        )

    @classmethod
    def from_json(cls, body: bytes, meta: str) -> Document:
        """Inverse of :meth:`to_json` (raises CollateralError on a corrupt record)."""
        try:
            obj = json.loads(meta)
            return cls(
                body=body,
                content_type=str(obj["content_type"]),
                headers=tuple((str(k), str(v)) for k, v in obj["headers"]),
                next_update=datetime.fromisoformat(obj["next_update"]),
                issue_date=datetime.fromisoformat(obj["issue_date"]) if obj["issue_date"] else None,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CollateralError(f"cache record is corrupt: {exc}") from None


def encode_chain(pem: str | bytes) -> str:
    """URL-encode a PEM chain for an issuer-chain header, as Intel does (every reserved byte escaped)."""
    text = pem.decode("ascii") if isinstance(pem, bytes) else pem
    return quote(text, safe="")


def chain_header_name(resource: Resource) -> str | None:
    """The issuer-chain header this resource's answer carries (``None`` for ``rootcacrl``)."""
    if resource.kind == "tcb":
        return TCB_CHAIN_V3 if resource.version == 3 else TCB_CHAIN_V4
    if resource.kind == "tcbevaluationdatanumbers":
        return EVALUATION_CHAIN
    return {
        "qe_identity": ENCLAVE_CHAIN,
        "qve_identity": ENCLAVE_CHAIN,
        "pckcrl": PCK_CRL_CHAIN,
        "pckcert": PCK_CERT_CHAIN,
    }.get(resource.kind)


def content_type(resource: Resource) -> str:
    """The Content-Type PCS/PCCS use for this resource."""
    if resource.kind in ("tcb", "qe_identity", "qve_identity", "tcbevaluationdatanumbers"):
        return JSON
    if resource.kind == "pckcrl":
        return CRL if resource.der_crl else PEM
    if resource.kind in ("rootcacrl", "crl"):
        return CRL
    return PEM


def parse_time(value: Any, what: str) -> datetime:
    """An RFC 3339 UTC timestamp from Intel JSON (``2025-06-19T10:56:11Z``)."""
    if not isinstance(value, str):
        raise CollateralError(f"{what}: missing or not a string")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise CollateralError(f"{what}: not an RFC 3339 date: {value[:40]!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _chain(headers: Mapping[str, str], names: tuple[str, ...], what: str) -> tuple[str, x509.Certificate]:
    """The PEM issuer chain from the first of ``names`` present, and its first certificate."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in names:
        value = lowered.get(name.lower())
        if value:
            pem = decode_issuer_chain(value)
            try:
                certs = x509.load_pem_x509_certificates(pem.encode("latin-1"))
            except _X509_ERRORS:
                raise CollateralError(f"{what}: issuer chain header holds no valid certificate") from None
            if not certs:
                raise CollateralError(f"{what}: issuer chain header is empty")
            return pem, certs[0]
    raise CollateralError(f"{what}: missing header {names[0]}")


def _ec_key(cert: x509.Certificate, what: str) -> ec.EllipticCurvePublicKey:
    try:
        key = cert.public_key()
    except _X509_ERRORS:
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CollateralError(f"{what}: the issuer chain's first certificate has no ECDSA key")
    return key


def _check_signature(cert: x509.Certificate, text: str, signature: bytes, what: str) -> None:
    """The raw r||s ``signature`` over ``text`` verifies with ``cert``'s key (no trust decision: a
    transport-corrupted answer is refused, whether the chain is trusted is the verifier's job)."""
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        _ec_key(cert, what).verify(der, text.encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise CollateralError(f"{what}: signature does not verify with the issuer chain") from None


def _signed_json(
    resource: Resource, body: bytes, member: str
) -> tuple[dict[str, Any], datetime, datetime, str, bytes]:
    text, signature = signed_member(body, member)
    try:
        obj = json.loads(text)
    except ValueError:
        raise CollateralError(f"{resource.endpoint}: {member} is not JSON") from None
    if not isinstance(obj, dict):
        raise CollateralError(f"{resource.endpoint}: {member} is not a JSON object")
    issue = parse_time(obj.get("issueDate"), f"{resource.endpoint}: issueDate")
    nxt = parse_time(obj.get("nextUpdate"), f"{resource.endpoint}: nextUpdate")
    if nxt <= issue:
        raise CollateralError(f"{resource.endpoint}: nextUpdate is not after issueDate")
    return obj, issue, nxt, text, signature


def _crl(der: bytes, what: str) -> x509.CertificateRevocationList:
    try:
        crl = x509.load_der_x509_crl(der)
        _ = crl.next_update_utc, crl.last_update_utc, crl.issuer
    except _X509_ERRORS:
        raise CollateralError(f"{what}: not a valid X.509 CRL") from None
    if crl.next_update_utc is None:
        raise CollateralError(f"{what}: CRL has no nextUpdate")
    return crl


def _check_evaluation(resource: Resource, obj: Mapping[str, Any], what: str) -> None:
    """An answer to ``tcbEvaluationDataNumber=N`` must be evaluation N (an upstream that ignores the
    parameter, e.g. Intel's PCCS, must not get another baseline cached under N's key)."""
    if resource.evaluation is not None and obj.get("tcbEvaluationDataNumber") != resource.evaluation:
        raise CollateralError(
            f"{what}: answer is for tcbEvaluationDataNumber {obj.get('tcbEvaluationDataNumber')!r}, "
            f"not {resource.evaluation}"
        )


def evaluation_numbers(obj: Mapping[str, Any], what: str) -> list[int]:
    """The numbers a ``tcbEvaluationDataNumbers`` object lists (checked: ``tcbEvalNumbers`` is a
    non-empty list of objects with a positive integer number and RFC 3339 dates)."""
    entries = obj.get("tcbEvalNumbers")
    if not isinstance(entries, list) or not entries or len(entries) > 1024:
        raise CollateralError(f"{what}: tcbEvalNumbers must be a non-empty list")
    numbers: list[int] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise CollateralError(f"{what}: a tcbEvalNumbers entry is not an object")
        number = entry.get("tcbEvaluationDataNumber")
        if not isinstance(number, int) or isinstance(number, bool) or number <= 0:
            raise CollateralError(f"{what}: tcbEvaluationDataNumber must be a positive integer")
        parse_time(entry.get("tcbRecoveryEventDate"), f"{what}: tcbRecoveryEventDate")
        parse_time(entry.get("tcbDate"), f"{what}: tcbDate")
        numbers.append(number)
    return numbers


def upstream_document(resource: Resource, headers: Mapping[str, str], body: bytes) -> Document:
    """Check a 200 answer from an upstream PCS/PCCS and turn it into a :class:`Document`.

    Checks: JSON parses and holds the signed member and a 64-byte hex signature, dates parse and the
    FMSPC / identity kind match the request; CRLs parse (DER, PEM or hex text); the PCK certificate
    parses and its info headers are well-formed; issuer-chain headers hold PEM certificates; and
    every signature (TCB Info, QE Identity, PCK CRL, PCK certificate) verifies with the first
    certificate of its issuer chain. Nothing here decides trust (the chain is not checked against a
    root: that is the verifier's job); it keeps corrupted or mismatched answers out of the cache.

    Raises:
        CollateralError: the answer is malformed (it must then be neither served nor cached).
    """
    what = f"upstream {resource.endpoint}"
    name = chain_header_name(resource)
    if resource.kind == "tcb":
        obj, issue, nxt, text, signature = _signed_json(resource, body, "tcbInfo")
        if str(obj.get("fmspc", "")).upper() != resource.fmspc:
            raise CollateralError(f"{what}: answer is for FMSPC {obj.get('fmspc')!r}, not {resource.fmspc}")
        if "id" in obj and obj["id"] != resource.tee.upper():
            raise CollateralError(f"{what}: TCB Info id {obj['id']!r} does not match {resource.tee}")
        _check_evaluation(resource, obj, what)
        pem, signer = _chain(headers, (TCB_CHAIN_V4, TCB_CHAIN_V3), what)
        _check_signature(signer, text, signature, what)
        return Document(body, JSON, ((name or TCB_CHAIN_V4, encode_chain(pem)),), nxt, issue)
    if resource.kind in ("qe_identity", "qve_identity"):
        obj, issue, nxt, text, signature = _signed_json(resource, body, "enclaveIdentity")
        expected = {
            "qe_identity": ("TD_QE",) if resource.tee == "tdx" else ("QE",),
            "qve_identity": ("QVE",),
        }[resource.kind]
        if "id" in obj and obj["id"] not in expected:
            raise CollateralError(f"{what}: identity id {obj['id']!r} is not {'/'.join(expected)}")
        _check_evaluation(resource, obj, what)
        pem, signer = _chain(headers, (ENCLAVE_CHAIN,), what)
        _check_signature(signer, text, signature, what)
        return Document(body, JSON, ((ENCLAVE_CHAIN, encode_chain(pem)),), nxt, issue)
    if resource.kind == "tcbevaluationdatanumbers":
        obj, issue, nxt, text, signature = _signed_json(resource, body, "tcbEvaluationDataNumbers")
        if obj.get("id") != resource.tee.upper():
            raise CollateralError(f"{what}: id {obj.get('id')!r} does not match {resource.tee}")
        evaluation_numbers(obj, what)
        pem, signer = _chain(headers, (EVALUATION_CHAIN,), what)
        _check_signature(signer, text, signature, what)
        return Document(body, JSON, ((EVALUATION_CHAIN, encode_chain(pem)),), nxt, issue)
    if resource.kind in ("pckcrl", "rootcacrl", "crl"):
        der = crl_to_der(body, what)
        crl = _crl(der, what)
        assert crl.next_update_utc is not None
        if resource.kind == "rootcacrl":  # hex text, as Intel's PCCS answers it
            return Document(der.hex().encode(), CRL, (), crl.next_update_utc, crl.last_update_utc)
        if resource.kind == "crl":  # raw DER, as Intel's PCCS answers /crl?uri=
            return Document(der, CRL, (), crl.next_update_utc, crl.last_update_utc)
        pem, issuer = _chain(headers, (PCK_CRL_CHAIN,), what)
        if not crl.is_signature_valid(_ec_key(issuer, what)):
            raise CollateralError(f"{what}: CRL signature does not verify with the issuer chain")
        if resource.der_crl:
            out = der
        elif resource.encoding == "pem":
            out = crl.public_bytes(Encoding.PEM)
        else:  # hex text of the DER, as Intel's PCCS answers pckcrl without encoding=der
            out = der.hex().encode()
        return Document(
            out,
            content_type(resource),
            ((PCK_CRL_CHAIN, encode_chain(pem)),),
            crl.next_update_utc,
            crl.last_update_utc,
        )
    return _pck_document(resource, headers, body, what)


def _pck_document(resource: Resource, headers: Mapping[str, str], body: bytes, what: str) -> Document:
    try:
        cert = x509.load_pem_x509_certificate(body)
    except _X509_ERRORS:
        raise CollateralError(f"{what}: body is not a PEM certificate") from None
    pem, issuer = _chain(headers, (PCK_CERT_CHAIN,), what)
    try:
        cert.verify_directly_issued_by(issuer)
    except (*_X509_ERRORS, InvalidSignature):
        raise CollateralError(
            f"{what}: the certificate is not signed by the issuer chain's first certificate"
        ) from None
    lowered = {k.lower(): v for k, v in headers.items()}
    tcbm, fmspc, ca = (lowered.get(h.lower(), "") for h in (TCBM, FMSPC, CA_TYPE))
    if len(tcbm) != 36 or not _HEX.fullmatch(tcbm):
        raise CollateralError(f"{what}: {TCBM} must be 36 hex digits")
    if len(fmspc) != 12 or not _HEX.fullmatch(fmspc):
        raise CollateralError(f"{what}: {FMSPC} must be 12 hex digits")
    if ca.lower() not in ("processor", "platform"):
        raise CollateralError(f"{what}: {CA_TYPE} must be processor or platform")
    return pck_document(body, pem, tcbm, fmspc, ca, cert.not_valid_after_utc, cert.not_valid_before_utc)


def pck_document(
    cert_pem: bytes,
    chain_pem: str | bytes,
    tcbm: str,
    fmspc: str,
    ca: str,
    not_after: datetime,
    not_before: datetime | None = None,
) -> Document:
    """The ``pckcert`` answer: PEM leaf plus the issuer chain, TCBm, FMSPC and CA-type headers."""
    headers = (
        (PCK_CERT_CHAIN, encode_chain(chain_pem)),
        (TCBM, tcbm.upper()),
        (FMSPC, fmspc.upper()),
        (CA_TYPE, ca.lower()),
    )
    return Document(cert_pem, PEM, headers, not_after, not_before)


__all__ = [
    "CA_TYPE",
    "CRL",
    "ENCLAVE_CHAIN",
    "EVALUATION_CHAIN",
    "FMSPC",
    "JSON",
    "PCK_CERT_CHAIN",
    "PCK_CRL_CHAIN",
    "PEM",
    "TCBM",
    "TCB_CHAIN_V3",
    "TCB_CHAIN_V4",
    "Document",
    "chain_header_name",
    "content_type",
    "encode_chain",
    "evaluation_numbers",
    "parse_time",
    "pck_document",
    "upstream_document",
]
