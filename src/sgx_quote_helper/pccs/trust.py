"""What the caching PCCS checks before it stores an upstream answer: every signature chains to the
configured root CA (Intel's SGX Root CA unless the operator names another, e.g. the SIMULATED one).

:func:`.document.upstream_document` already checked each signature against the first certificate
of the issuer chain the answer carries; here that chain must itself be a chain to the root:

- TCB Info, QE/QvE Identity, TCB evaluation data numbers, PCK CRL, PCK certificate: every
  certificate of the issuer-chain header is signed by the next one, and the last is the trusted root
  (same key and signature, :func:`verify.chain.check_pinned`); a PCK CRL and a PCK certificate are
  signed by the chain's first certificate (the JSON documents' signatures by it were checked by
  ``upstream_document``, which always runs first);
- root CA CRL (``rootcacrl``, ``crl?uri=``): signed by the trusted root itself. A ``crl?uri=`` that
  names a PCK CRL comes without an issuer chain, so it is served but never cached (QCNL asks for PCK
  CRLs with ``pckcrl``, which carries its chain).

No dates are checked: validity is the verifier's business, a cache only refuses what is not Intel's
(or the configured root's). An answer that fails is served once and never cached (``cache.py``).
"""

from __future__ import annotations

import itertools

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import CollateralError, VerificationError
from ..verify.chain import TrustedRoot, check_pinned
from ..verify.collateral import crl_to_der, decode_issuer_chain
from .document import Document, chain_header_name
from .resource import Resource

_X509_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion, InvalidSignature)


def _issuer_chain(resource: Resource, document: Document, what: str) -> list[x509.Certificate]:
    name = chain_header_name(resource)
    value = document.header(name) if name is not None else None
    if not value:
        raise CollateralError(f"{what}: no issuer chain to check")
    try:
        certs = x509.load_pem_x509_certificates(decode_issuer_chain(value).encode("latin-1"))
    except _X509_ERRORS:
        raise CollateralError(f"{what}: the issuer chain does not parse") from None
    if not certs:
        raise CollateralError(f"{what}: the issuer chain is empty")
    return certs


def _check_chain(certs: list[x509.Certificate], root: TrustedRoot, what: str) -> None:
    try:
        check_pinned(certs[-1], root, 0)
    except VerificationError:
        raise CollateralError(f"{what}: the issuer chain does not end at the trusted root CA") from None
    for child, issuer in itertools.pairwise(certs):
        try:
            child.verify_directly_issued_by(issuer)
        except _X509_ERRORS:
            raise CollateralError(
                f"{what}: {child.subject.rfc4514_string()[:80]} is not signed by its issuer"
            ) from None


def _crl_signed_by(der: bytes, cert: x509.Certificate, what: str) -> None:
    try:
        crl = x509.load_der_x509_crl(der)
        key = cert.public_key()
        good = isinstance(key, ec.EllipticCurvePublicKey) and crl.is_signature_valid(key)
    except _X509_ERRORS:
        good = False
    if not good:
        raise CollateralError(f"{what}: the CRL is not signed by {cert.subject.rfc4514_string()[:80]}")


def check_trusted(resource: Resource, document: Document, root: TrustedRoot) -> None:
    """Raise CollateralError unless ``document`` (an answer for ``resource``, already through
    :func:`.document.upstream_document`) chains to ``root`` (see the module doc)."""
    what = f"upstream {resource.endpoint}"
    if resource.kind in ("rootcacrl", "crl"):
        _crl_signed_by(crl_to_der(document.body, what), root.cert, what)
        return
    certs = _issuer_chain(resource, document, what)
    _check_chain(certs, root, what)
    if resource.kind == "pckcrl":
        _crl_signed_by(crl_to_der(document.body, what), certs[0], what)
    elif resource.kind == "pckcert":
        try:
            x509.load_pem_x509_certificate(document.body).verify_directly_issued_by(certs[0])
        except _X509_ERRORS:
            raise CollateralError(f"{what}: the PCK certificate is not signed by its issuer chain") from None
    # tcb, identities, evaluation numbers: the body's signature by certs[0] was checked by
    # upstream_document (document.py _check_signature); the chain to the root is what was left


__all__ = ["check_trusted"]
