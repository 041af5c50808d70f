"""The SIMULATED Intel SGX PKI: root CA, PCK CA, PCK leaf, TCB signing certificate and CRLs.

Everything here is real X.509 built with ``cryptography``; only the trust anchor is ours. The
certificates copy the structure of Intel's (``shared/specs/dcap-quote.md`` §2, §3.3, §F):

- ``SIMULATED Intel SGX Root CA``: self-signed, basicConstraints CA pathLen 1, keyCertSign+cRLSign;
- ``SIMULATED Intel SGX PCK Processor CA`` / ``... PCK Platform CA``: pathLen 0, issued by the root;
- ``SIMULATED Intel SGX PCK Certificate``: the leaf, digitalSignature+nonRepudiation, CA:false,
  carrying the SGX extension (OID 1.2.840.113741.1.13.1) given as DER;
- ``SIMULATED Intel SGX TCB Signing``: signs TCB Info and QE Identity, issued by the root.

Intel's CN phrases ("SGX Root CA", "SGX PCK Processor CA", "SGX PCK Certificate", "SGX TCB
Signing") are kept inside the names because verifiers find certificate roles and the CA type from
them. Every certificate has AKI, SKI and a CRL distribution point; CRLs carry CRLNumber and AKI.

This module does no I/O and reads no clock: keys, serial numbers and ``now`` are parameters.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..abi import pck
from ..errors import ConfigError

CaType = Literal["processor", "platform"]

#: the SGX extension of PCK certificates [dcap-quote.md §2.1]
SGX_EXTENSION_OID = x509.ObjectIdentifier(pck.SGX_EXTENSION_OID)

ROOT_CN = "SIMULATED Intel SGX Root CA"
PCK_CA_CN = {
    "processor": "SIMULATED Intel SGX PCK Processor CA",
    "platform": "SIMULATED Intel SGX PCK Platform CA",
}
PCK_LEAF_CN = "SIMULATED Intel SGX PCK Certificate"
TCB_SIGNING_CN = "SIMULATED Intel SGX TCB Signing"
ORGANIZATION = "SIMULATED Intel Corporation (sgx-quote-helper, not Intel)"

#: where a PCCS for the simulated platform serves the CRLs (loopback default of ``pccs serve``)
CRL_BASE_URL = "https://localhost:8081/sgx/certification/v4"
ROOT_CRL_URL = f"{CRL_BASE_URL}/rootcacrl"

# validity periods modelled on Intel's (root 2018 -> 2049, CA 15 years, leaf 7 years, TCB signing 7)
_DAY = dt.timedelta(days=1)
ROOT_VALIDITY = 30 * 365 * _DAY
CA_VALIDITY = 15 * 365 * _DAY
LEAF_VALIDITY = 7 * 365 * _DAY
#: notBefore lies this far before ``now`` so verifiers with a slightly slow clock accept at once
BACKDATE = _DAY
#: CRLs and signed collateral are issued this long before ``now`` (issue dates lie in the past)
ISSUE_BACKDATE = dt.timedelta(hours=1)
#: CRL validity: PCK CRLs are valid 30 days at Intel, the root CRL about a year
PCK_CRL_VALIDITY = 30 * _DAY
ROOT_CRL_VALIDITY = 365 * _DAY


def whole_seconds(now: dt.datetime) -> dt.datetime:
    """``now`` as an aware UTC datetime without microseconds (X.509 and TCB dates are whole seconds)."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    return now.astimezone(dt.UTC).replace(microsecond=0)


def simulated_name(common_name: str) -> x509.Name:
    """A subject/issuer name shaped like Intel's (CN, O, L, ST, C), with SIMULATED in CN and O."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )


def pck_crl_url(ca: CaType) -> str:
    """The CRL distribution point of PCK leaves issued by the ``ca`` PCK CA."""
    return f"{CRL_BASE_URL}/pckcrl?ca={ca}&encoding=der"


def _cdp(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints(
        [x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)]
    )


def _key_usage(*, sign: bool = False, ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=sign,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer_public_key: ec.EllipticCurvePublicKey,
    serial: int,
    now: dt.datetime,
    validity: dt.timedelta,
    crl_url: str,
) -> x509.CertificateBuilder:
    start = whole_seconds(now) - BACKDATE
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(start + validity)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key), critical=False)
        .add_extension(_cdp(crl_url), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def make_root_ca(key: ec.EllipticCurvePrivateKey, *, now: dt.datetime, serial: int) -> x509.Certificate:
    """The self-signed ``SIMULATED Intel SGX Root CA`` (pathLen 1, keyCertSign + cRLSign)."""
    name = simulated_name(ROOT_CN)
    pub = key.public_key()
    builder = _builder(name, name, pub, pub, serial, now, ROOT_VALIDITY, ROOT_CRL_URL)
    builder = builder.add_extension(_key_usage(ca=True), critical=True).add_extension(
        x509.BasicConstraints(ca=True, path_length=1), critical=True
    )
    return builder.sign(key, hashes.SHA256())


def make_pck_ca(
    ca: CaType,
    key: ec.EllipticCurvePrivateKey,
    root_key: ec.EllipticCurvePrivateKey,
    root: x509.Certificate,
    *,
    now: dt.datetime,
    serial: int,
) -> x509.Certificate:
    """``SIMULATED Intel SGX PCK Processor CA`` or ``... Platform CA`` issued by the root (pathLen 0)."""
    if ca not in PCK_CA_CN:
        raise ConfigError(f"PCK CA type must be 'processor' or 'platform', got {ca!r}")
    builder = _builder(
        simulated_name(PCK_CA_CN[ca]),
        root.subject,
        key.public_key(),
        root_key.public_key(),
        serial,
        now,
        CA_VALIDITY,
        ROOT_CRL_URL,
    )
    builder = builder.add_extension(_key_usage(ca=True), critical=True).add_extension(
        x509.BasicConstraints(ca=True, path_length=0), critical=True
    )
    return builder.sign(root_key, hashes.SHA256())


def make_tcb_signing(
    key: ec.EllipticCurvePrivateKey,
    root_key: ec.EllipticCurvePrivateKey,
    root: x509.Certificate,
    *,
    now: dt.datetime,
    serial: int,
) -> x509.Certificate:
    """``SIMULATED Intel SGX TCB Signing``: signs TCB Info and QE Identity; issued by the root."""
    builder = _builder(
        simulated_name(TCB_SIGNING_CN),
        root.subject,
        key.public_key(),
        root_key.public_key(),
        serial,
        now,
        LEAF_VALIDITY,
        ROOT_CRL_URL,
    )
    builder = builder.add_extension(_key_usage(sign=True), critical=True).add_extension(
        x509.BasicConstraints(ca=False, path_length=None), critical=True
    )
    return builder.sign(root_key, hashes.SHA256())


def make_pck_leaf(
    public_key: ec.EllipticCurvePublicKey,
    ca: CaType,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    sgx_extension_der: bytes,
    *,
    now: dt.datetime,
    serial: int,
) -> x509.Certificate:
    """The ``SIMULATED Intel SGX PCK Certificate`` leaf with the SGX extension (non-critical).

    Args:
        public_key: the PCK public key (the simulated PCE's signing key).
        ca: which PCK CA issues it (selects the CRL distribution point).
        ca_key, ca_cert: the issuing PCK CA.
        sgx_extension_der: the DER value of extension 1.2.840.113741.1.13.1
            (``abi.pck.SgxExtensions.to_der()``).
        now, serial: issue time (notBefore is one day earlier, whole seconds) and serial number.
    """
    builder = _builder(
        simulated_name(PCK_LEAF_CN),
        ca_cert.subject,
        public_key,
        ca_key.public_key(),
        serial,
        now,
        LEAF_VALIDITY,
        pck_crl_url(ca),
    )
    builder = (
        builder.add_extension(_key_usage(sign=True), critical=True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.UnrecognizedExtension(SGX_EXTENSION_OID, sgx_extension_der), critical=False)
    )
    return builder.sign(ca_key, hashes.SHA256())


def make_certificate(
    subject_cn: str,
    public_key: ec.EllipticCurvePublicKey,
    issuer_cn: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
    ca: bool,
    sgx_extension_der: bytes | None = None,
    crl_url: str = ROOT_CRL_URL,
) -> x509.Certificate:
    """Any certificate of the simulated PKI with an explicit validity window and issuer.

    The ``make_*`` functions above build the platform's chain as Intel's is shaped; this one lets
    a verifier's tests shape one certificate freely (an expired PCK CA, a leaf issued by a
    look-alike CA, a re-issued root with the same key) while every signature stays real.
    ``ca``: CA:true with keyCertSign+cRLSign, else CA:false with digitalSignature+nonRepudiation.
    """
    builder = (
        x509.CertificateBuilder()
        .subject_name(simulated_name(subject_cn))
        .issuer_name(simulated_name(issuer_cn))
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
        .add_extension(_cdp(crl_url), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_key_usage(sign=not ca, ca=ca), critical=True)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sgx_extension_der is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(SGX_EXTENSION_OID, sgx_extension_der), False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_crl(
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | x509.Name,
    *,
    now: dt.datetime,
    validity: dt.timedelta,
    number: int = 1,
    revoked_serials: Iterable[int] = (),
) -> x509.CertificateRevocationList:
    """A CRL issued by ``issuer`` (a certificate, or just a name: tests forge look-alike issuers)
    with CRLNumber and AuthorityKeyIdentifier (what dcap-qvl needs).

    ``thisUpdate`` is ``now - ISSUE_BACKDATE`` in whole seconds, ``nextUpdate`` = ``thisUpdate + validity``; the revoked
    entries carry reason keyCompromise as Intel's PCK CRLs do.
    """
    this_update = whole_seconds(now) - ISSUE_BACKDATE
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject if isinstance(issuer, x509.Certificate) else issuer)
        .last_update(this_update)
        .next_update(this_update + validity)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    )
    for serial in revoked_serials:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(this_update)
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(issuer_key, hashes.SHA256())


__all__ = [
    "BACKDATE",
    "ISSUE_BACKDATE",
    "PCK_CA_CN",
    "PCK_CRL_VALIDITY",
    "PCK_LEAF_CN",
    "ROOT_CN",
    "ROOT_CRL_VALIDITY",
    "SGX_EXTENSION_OID",
    "TCB_SIGNING_CN",
    "CaType",
    "make_certificate",
    "make_crl",
    "make_pck_ca",
    "make_pck_leaf",
    "make_root_ca",
    "make_tcb_signing",
    "pck_crl_url",
    "simulated_name",
    "whole_seconds",
]
