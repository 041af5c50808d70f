"""sim.pki: the SIMULATED Intel SGX PKI has Intel's structure (names, extensions, CRLs)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from sgx_quote_helper.abi.pck import SgxExtensions
from sgx_quote_helper.errors import ConfigError
from sgx_quote_helper.sim import pki

NOW = dt.datetime(2026, 3, 1, 12, 30, 45, 123456, tzinfo=dt.UTC)
EXT = SgxExtensions(
    ppid=bytes(range(16)),
    tcb_components=tuple(range(16)),
    pcesvn=13,
    cpusvn=bytes(range(16)),
    pceid=b"\0\0",
    fmspc=bytes.fromhex("00A0A5510000"),
    sgx_type=0,
)


@pytest.fixture(scope="module")
def keys() -> dict[str, ec.EllipticCurvePrivateKey]:
    return {n: ec.generate_private_key(ec.SECP256R1()) for n in ("root", "ca", "leaf", "tcb")}


@pytest.fixture(scope="module")
def chain(keys: dict[str, ec.EllipticCurvePrivateKey]) -> dict[str, x509.Certificate]:
    root = pki.make_root_ca(keys["root"], now=NOW, serial=1001)
    ca = pki.make_pck_ca("processor", keys["ca"], keys["root"], root, now=NOW, serial=1002)
    leaf = pki.make_pck_leaf(
        keys["leaf"].public_key(), "processor", keys["ca"], ca, EXT.to_der(), now=NOW, serial=1003
    )
    tcb = pki.make_tcb_signing(keys["tcb"], keys["root"], root, now=NOW, serial=1004)
    return {"root": root, "ca": ca, "leaf": leaf, "tcb": tcb}


def _cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


@pytest.mark.parametrize(
    ("role", "cn", "phrase"),
    [
        ("root", "SIMULATED Intel SGX Root CA", "SGX Root CA"),
        ("ca", "SIMULATED Intel SGX PCK Processor CA", "SGX PCK Processor CA"),
        ("leaf", "SIMULATED Intel SGX PCK Certificate", "SGX PCK Certificate"),
        ("tcb", "SIMULATED Intel SGX TCB Signing", "SGX TCB Signing"),
    ],
)
def test_names_keep_intel_phrases_and_say_simulated(
    chain: dict[str, x509.Certificate], role: str, cn: str, phrase: str
) -> None:
    cert = chain[role]
    assert _cn(cert) == cn
    assert phrase in _cn(cert)
    org = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    assert "SIMULATED" in str(org)


def test_platform_ca_name(
    keys: dict[str, ec.EllipticCurvePrivateKey], chain: dict[str, x509.Certificate]
) -> None:
    ca = pki.make_pck_ca("platform", keys["ca"], keys["root"], chain["root"], now=NOW, serial=7)
    assert _cn(ca) == "SIMULATED Intel SGX PCK Platform CA"


def test_unknown_ca_type_refused(
    keys: dict[str, ec.EllipticCurvePrivateKey], chain: dict[str, x509.Certificate]
) -> None:
    with pytest.raises(ConfigError, match="processor"):
        pki.make_pck_ca("bogus", keys["ca"], keys["root"], chain["root"], now=NOW, serial=7)  # type: ignore[arg-type]


def test_chain_signatures(chain: dict[str, x509.Certificate]) -> None:
    chain["root"].verify_directly_issued_by(chain["root"])
    chain["ca"].verify_directly_issued_by(chain["root"])
    chain["leaf"].verify_directly_issued_by(chain["ca"])
    chain["tcb"].verify_directly_issued_by(chain["root"])
    with pytest.raises(ValueError):
        chain["leaf"].verify_directly_issued_by(chain["root"])


@pytest.mark.parametrize(("role", "path_len"), [("root", 1), ("ca", 0)])
def test_ca_constraints_and_usage(chain: dict[str, x509.Certificate], role: str, path_len: int) -> None:
    cert = chain[role]
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == path_len
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature


@pytest.mark.parametrize("role", ["leaf", "tcb"])
def test_end_entity_usage(chain: dict[str, x509.Certificate], role: str) -> None:
    cert = chain[role]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert (
        ku.critical
        and ku.value.digital_signature
        and ku.value.content_commitment
        and not ku.value.key_cert_sign
    )


@pytest.mark.parametrize("role", ["root", "ca", "leaf", "tcb"])
def test_required_extensions_and_times(chain: dict[str, x509.Certificate], role: str) -> None:
    cert = chain[role]
    issuer = chain["ca"] if role == "leaf" else chain["root"]
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == issuer_ski.digest
    assert cert.extensions.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS)
    nb = cert.not_valid_before_utc
    assert nb < NOW and nb.microsecond == 0
    assert cert.not_valid_after_utc > NOW + dt.timedelta(days=365)


def test_leaf_cdp_names_its_ca(chain: dict[str, x509.Certificate]) -> None:
    cdp = chain["leaf"].extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    url = cdp[0].full_name[0].value
    assert "pckcrl?ca=processor" in url


def test_leaf_carries_sgx_extension(chain: dict[str, x509.Certificate]) -> None:
    ext = chain["leaf"].extensions.get_extension_for_oid(pki.SGX_EXTENSION_OID)
    assert not ext.critical
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    assert SgxExtensions.from_der(ext.value.value) == EXT


def test_crl_structure(
    keys: dict[str, ec.EllipticCurvePrivateKey], chain: dict[str, x509.Certificate]
) -> None:
    crl = pki.make_crl(
        keys["ca"], chain["ca"], now=NOW, validity=pki.PCK_CRL_VALIDITY, number=5, revoked_serials=(77, 78)
    )
    assert crl.is_signature_valid(keys["ca"].public_key())
    assert not crl.is_signature_valid(keys["root"].public_key())
    assert crl.issuer == chain["ca"].subject
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 5
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert (
        aki.key_identifier
        == chain["ca"].extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    )
    assert crl.last_update_utc < NOW and crl.last_update_utc.microsecond == 0
    assert crl.next_update_utc == crl.last_update_utc + dt.timedelta(days=30)
    assert {r.serial_number for r in crl} == {77, 78}
    entry = crl.get_revoked_certificate_by_serial_number(77)
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        == x509.ReasonFlags.key_compromise
    )


def test_naive_now_is_utc() -> None:
    naive = dt.datetime(2026, 1, 2, 3, 4, 5, 999)
    assert pki.whole_seconds(naive) == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
