"""verify.certificate: the raw regions and fast checks agree with cryptography's own, byte for byte.

The verifier reads certificates and CRLs once (PEM decoded here, one DER walk) and checks
issued-by and CRL signatures over the bytes as sent; every case the fast form does not cover is
left to cryptography. These tests pin that the two never disagree: on every real certificate and
CRL, on PEM text cryptography reads its own way, and on signatures and names that do not match.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_quote_helper.abi.quote import Quote
from sgx_quote_helper.errors import VerificationError
from sgx_quote_helper.verify import chain as ch
from sgx_quote_helper.verify.certificate import DerCertificate, crl_regions
from sgx_quote_helper.verify.roots import INTEL_SGX_ROOT_CA_DER
from sgx_quote_helper.verify.steps import Step

from .conftest import REAL
from .verify_pki import NOW, _cert, _crl, _key

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----")


def _real_blocks() -> list[bytes]:
    blocks: list[bytes] = []
    for f in sorted(Path(REAL).rglob("*")):
        if not f.is_file():
            continue
        raw = f.read_bytes()
        if f.name == "quote.bin":
            try:
                raw = Quote.from_bytes(raw).pck_chain_pem or b""
            except Exception:  # quotes without a type-5 chain
                continue
        blocks += _PEM.findall(raw.replace(b"\\n", b"\n"))
    return blocks


def _real_crls() -> list[bytes]:
    out = []
    for f in sorted(Path(REAL).rglob("*.json")):
        try:
            obj = json.loads(f.read_text())
        except ValueError:
            continue
        if isinstance(obj, dict) and f.name.endswith(".dcap-qvl.json"):  # CRLs as hex DER
            out += [bytes.fromhex(obj[k]) for k in ("root_ca_crl", "pck_crl") if obj.get(k)]
    return out


def test_regions_of_every_real_certificate_are_cryptographys() -> None:
    blocks = _real_blocks()
    assert len(blocks) >= 10
    for block in blocks:
        d = DerCertificate.from_pem_block(block)
        c = x509.load_pem_x509_certificate(block)
        assert d.der == c.public_bytes(serialization.Encoding.DER)
        assert d.tbs == c.tbs_certificate_bytes
        assert d.signature == c.signature
        assert d.issuer == c.issuer.public_bytes()
        assert d.subject == c.subject.public_bytes()
        assert ch.common_name(d) == ch.common_name(c)


def test_regions_of_every_real_crl_are_cryptographys() -> None:
    crls = _real_crls()
    assert crls
    for der in crls:
        crl = x509.load_der_x509_crl(der)
        r = crl_regions(der)
        assert r is not None
        assert (r.tbs, r.signature) == (crl.tbs_certlist_bytes, crl.signature)


def _variants(der: bytes) -> dict[str, bytes]:
    b64 = base64.b64encode(der)
    lines = b"\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    return {
        "standard": b"\n" + lines + b"\n",
        "crlf": b"\r\n" + lines.replace(b"\n", b"\r\n") + b"\r\n",
        "one line": b64,
        "blank line inside": b"\n" + lines.replace(b"\n", b"\n\n", 1) + b"\n",
        "blank lines after BEGIN": b"\n\n\n" + lines + b"\n",
        "blank lines before END": b"\n" + lines + b"\n\n\n",
        "lone CR": b"\n" + lines.replace(b"\n", b"\r", 1) + b"\n",
        "space at a line end": b"\n" + lines.replace(b"\n", b" \n", 1) + b"\n",
        "space inside a line": b"\n" + lines[:10] + b" " + lines[10:] + b"\n",
        "tab": b"\n\t" + lines + b"\n",
        "no padding": b"\n" + b64.rstrip(b"=") + b"\n",
        "padding inside": b"\n" + b64[:8] + b"=" + b64[8:] + b"\n",
        "non-canonical last bits": b"\n" + b64[:-3] + bytes([b64[-3] | 1]) + b64[-2:] + b"\n",
        "truncated": b"\n" + b64[:-8] + b"\n",
    }


def _agree(block: bytes) -> None:
    """DerCertificate.from_pem_block gives cryptography's certificate or cryptography's error."""
    try:
        want = x509.load_pem_x509_certificate(block).public_bytes(serialization.Encoding.DER)
    except ValueError as exc:
        with pytest.raises(ValueError) as got:
            DerCertificate.from_pem_block(block)
        assert str(got.value) == str(exc)
        return
    assert DerCertificate.from_pem_block(block).der == want


@pytest.mark.parametrize("variant", sorted(_variants(INTEL_SGX_ROOT_CA_DER)))
def test_pem_text_read_as_cryptography_reads_it(variant: str) -> None:
    body = _variants(INTEL_SGX_ROOT_CA_DER)[variant]
    _agree(b"-----BEGIN CERTIFICATE-----" + body + b"-----END CERTIFICATE-----")


@settings(max_examples=150, deadline=None)
@given(
    widths=st.lists(st.integers(1, 120), min_size=1, max_size=40),
    breaks=st.lists(st.sampled_from([b"\n", b"\r\n", b"\n\n", b"\r", b" \n", b""]), min_size=1, max_size=40),
    lead=st.sampled_from([b"", b"\n", b"\r\n", b"\n\n", b" "]),
)
def test_pem_line_layouts_agree_with_cryptography(
    widths: list[int], breaks: list[bytes], lead: bytes
) -> None:
    b64 = base64.b64encode(INTEL_SGX_ROOT_CA_DER)
    out, pos, i = [lead], 0, 0
    while pos < len(b64):
        w = widths[i % len(widths)]
        out += [b64[pos : pos + w], breaks[i % len(breaks)]]
        pos, i = pos + w, i + 1
    _agree(b"-----BEGIN CERTIFICATE-----" + b"".join(out) + b"-----END CERTIFICATE-----")


def _signed(
    subject: str,
    issuer: str,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    alg: hashes.HashAlgorithm | None = None,
) -> DerCertificate:
    c = _cert(subject, key, issuer, signer, ca=False, serial=7)
    if alg is not None:  # the same certificate signed with another hash
        b = (
            x509.CertificateBuilder()
            .subject_name(c.subject)
            .issuer_name(c.issuer)
            .public_key(c.public_key())
            .serial_number(7)
            .not_valid_before(c.not_valid_before_utc)
            .not_valid_after(c.not_valid_after_utc)
        )
        c = b.sign(signer, alg)
    return DerCertificate.from_der(c.public_bytes(serialization.Encoding.DER))


def test_signed_by_agrees_with_verify_directly_issued_by() -> None:
    ca_key, other_key, leaf_key = _key(), _key(), _key()
    ca = _signed("SIMULATED CA", "SIMULATED CA", ca_key, ca_key)
    cases = {
        "good": (_signed("leaf", "SIMULATED CA", leaf_key, ca_key), True),
        "wrong key": (_signed("leaf", "SIMULATED CA", leaf_key, other_key), False),
        "wrong issuer name": (_signed("leaf", "SIMULATED CB", leaf_key, ca_key), False),
        "ECDSA-SHA384 (cryptography's path)": (
            _signed("leaf", "SIMULATED CA", leaf_key, ca_key, hashes.SHA384()),
            True,
        ),
    }
    for name, (leaf, ok) in cases.items():
        try:
            leaf.cert.verify_directly_issued_by(ca.cert)
            theirs = True
        except Exception:
            theirs = False
        assert theirs == ok, name
        if ok:
            ch.check_signed_by(leaf, ca, Step.PCK_CHAIN, "pck-cert")
        else:
            with pytest.raises(VerificationError) as exc:
                ch.check_signed_by(leaf, ca, Step.PCK_CHAIN, "pck-cert")
            assert exc.value.reason == "pck-cert-bad-signature", name


def test_crl_signed_by_agrees_with_is_signature_valid() -> None:
    good, wrong = _key(), _key()
    der = _crl("SIMULATED CA", good, (5,), NOW - timedelta(days=1), NOW + timedelta(days=1))
    crl = x509.load_der_x509_crl(der)
    for key, want in ((good, True), (wrong, False)):
        assert crl.is_signature_valid(key.public_key()) is want
        assert ch.crl_signed_by(crl, der, key.public_key()) is want
    tampered = bytearray(der)
    tampered[-5] ^= 1  # inside the signature
    t = x509.load_der_x509_crl(bytes(tampered))
    assert ch.crl_signed_by(t, bytes(tampered), good.public_key()) is t.is_signature_valid(good.public_key())


def test_a_walk_that_does_not_apply_leaves_cryptography_in_charge() -> None:
    d = DerCertificate.from_der(INTEL_SGX_ROOT_CA_DER)
    d.tbs = d.issuer = d.subject = d.signature = d.signature_algorithm = None
    root = ch.TrustedRoot.intel().parsed
    ch.check_signed_by(d, root, Step.ROOT_CA, "root-ca")  # self-signed: cryptography's check passes
    assert ch.common_name(d) == ch.common_name(d.cert)
