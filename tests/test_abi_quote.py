"""abi.quote and abi.pck on every real quote: byte-exact round trip and the documented fields."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import pytest
from cryptography import x509

from sgx_quote_helper.abi.pck import SGX_EXTENSION_OID, SgxExtensions
from sgx_quote_helper.abi.quote import (
    INTEL_QE_VENDOR_ID,
    CertificationData,
    Quote,
    parse_quote,
)
from sgx_quote_helper.abi.report import ReportBody
from sgx_quote_helper.abi.tdreport import TdReport10, TdReport15
from sgx_quote_helper.errors import ParseError

from .conftest import REAL_QUOTE_DIRS, real_dir


@pytest.mark.parametrize("vector", REAL_QUOTE_DIRS, ids=lambda p: p.name)
def test_real_quotes_round_trip_byte_for_byte(vector: Path) -> None:
    raw = (vector / "quote.bin").read_bytes()
    quote = parse_quote(raw)
    assert quote.to_bytes() == raw
    assert quote.header.qe_vendor_id == INTEL_QE_VENDOR_ID
    assert quote.signed_bytes == raw[: len(quote.signed_bytes)]


def leaf_extensions(quote: Quote) -> SgxExtensions:
    pem = quote.pck_chain_pem
    assert pem is not None
    leaf = x509.load_pem_x509_certificates(pem)[0]
    ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID)).value
    assert isinstance(ext, x509.UnrecognizedExtension)
    decoded = SgxExtensions.from_der(ext.value)
    assert decoded.to_der() == ext.value  # our encoder reproduces Intel's bytes
    return decoded


# (vector, qe_svn, pce_svn, fmspc, pck cpusvn, pck pcesvn, sgx_type, ca phrase, debug)
SGX_FACTS = [
    (
        "phala-sgx-v3-processor",
        10,
        15,
        "00a067110000",
        "0b0b0202ff0100000000000000000000",
        13,
        0,
        "Processor",
        False,
    ),
    (
        "automata-sgx-v3-debug",
        10,
        15,
        "00a067110000",
        "0b0b0202ff0100000000000000000000",
        13,
        0,
        "Processor",
        True,
    ),
    (
        "oasis-sgx-v3-platform",
        9,
        13,
        "00606a000000",
        "07090303ffff01000000000000000000",
        13,
        1,
        "Platform",
        False,
    ),
    ("cosmian-sgx-v3-platform", 9, 14, "30606a000000", None, None, None, "Platform", False),
]


@pytest.mark.parametrize("facts", SGX_FACTS, ids=lambda f: f[0])
def test_sgx_fields_match_sources(facts: tuple) -> None:  # type: ignore[type-arg]
    name, qe_svn, pce_svn, fmspc, cpusvn, pcesvn, sgx_type, ca, debug = facts
    quote = parse_quote((real_dir(name) / "quote.bin").read_bytes())
    assert quote.version == 3 and not quote.is_tdx
    assert (quote.header.qe_svn, quote.header.pce_svn) == (qe_svn, pce_svn)
    assert isinstance(quote.body, ReportBody)
    assert quote.body.debug is debug
    assert quote.certification_data.cert_type == 5
    ext = leaf_extensions(quote)
    assert ext.fmspc.hex() == fmspc
    if cpusvn is not None:
        assert ext.cpusvn.hex() == cpusvn and ext.pcesvn == pcesvn and ext.sgx_type == sgx_type
        assert list(ext.tcb_components) == list(bytes.fromhex(cpusvn))
    assert (ext.configuration is not None) == (ca == "Platform")
    assert quote.qe_report.mr_signer.hex().startswith("8c4f5775")
    assert len(quote.signature_data.qe_cert.qe_auth_data) == 32


def test_phala_report_data_and_identity() -> None:
    quote = parse_quote((real_dir("phala-sgx-v3-processor") / "quote.bin").read_bytes())
    assert quote.report_data.startswith(b"Hello, world!")
    assert len(quote.to_bytes()) == 4600 and quote.signature_data_len == 4164


def test_oasis_identity_matches_sources() -> None:
    quote = parse_quote((real_dir("oasis-sgx-v3-platform") / "quote.bin").read_bytes())
    assert isinstance(quote.body, ReportBody)
    assert quote.body.mr_enclave.hex() == "68823bc62f409ee33a32ea270cfe45d4b19a6fb3c8570d7bc186cbe062398e8f"
    assert quote.body.mr_signer.hex() == "9affcfae47b848ec2caf1c49b4b283531e1cc425f93582b36806e52a43d78d1a"


def test_encrypted_ppid_type3() -> None:
    raw = (real_dir("oasis-sgx-v3-encrypted-ppid") / "quote.bin").read_bytes()
    quote = parse_quote(raw)
    assert len(raw) == 1456 and quote.pck_chain_pem is None
    cd = quote.certification_data
    assert cd.cert_type == 3 and len(cd.data) == 404
    ppid = cd.encrypted_ppid()
    assert len(ppid.encrypted_ppid) == 384 and len(ppid.cpusvn) == 16
    assert ppid.to_bytes() == cd.data
    assert (quote.header.qe_svn, quote.header.pce_svn) == (7, 12)


@pytest.mark.parametrize(
    ("name", "version", "body_cls", "trailing"),
    [
        ("tdx/phala-tdx-v4", 4, TdReport10, 70),
        ("tdx/phala-tdx-v5-outdated", 5, TdReport15, 0),
        ("tdx/automata-tdx-v5", 5, TdReport15, 0),
    ],
)
def test_tdx_quotes(name: str, version: int, body_cls: type, trailing: int) -> None:
    quote = parse_quote((real_dir(name) / "quote.bin").read_bytes())
    assert quote.version == version and quote.is_tdx and isinstance(quote.body, body_cls)
    assert quote.header.tee_type == 0x81
    assert len(quote.trailing) == trailing
    assert quote.certification_data.cert_type == 5  # nested inside type 6
    leaf_extensions(quote)
    if version == 5:
        assert quote.body_type == body_cls.BODY_TYPE
        assert quote.signed_bytes[48:54] == struct.pack("<HI", body_cls.BODY_TYPE, body_cls.SIZE)


def test_automata_tdx_v5_has_nonzero_mrservicetd() -> None:
    quote = parse_quote((real_dir("tdx/automata-tdx-v5") / "quote.bin").read_bytes())
    assert isinstance(quote.body, TdReport15)
    assert quote.body.mr_service_td != bytes(48)


def test_rebuilt_quote_changes_only_what_was_replaced() -> None:
    raw = (real_dir("phala-sgx-v3-processor") / "quote.bin").read_bytes()
    quote = parse_quote(raw)
    sig = dataclasses.replace(quote.signature_data, signature=bytes(64))
    rebuilt = dataclasses.replace(quote, signature_data=sig).to_bytes()
    assert rebuilt[:436] == raw[:436] and rebuilt[436:500] == bytes(64) and rebuilt[500:] == raw[500:]


@pytest.mark.parametrize(
    ("mutate", "structure"),
    [
        (lambda b: b[:47], "Quote"),
        (lambda b: b"\x07\x00" + b[2:], "Quote"),  # version 7
        (lambda b: b[:2] + b"\x03\x00" + b[4:], "Quote"),  # P-384 key type
        (lambda b: b[:432] + struct.pack("<I", 10**6) + b[436:], "Quote"),  # sig len past the end
        (lambda b: b[:432] + struct.pack("<I", 4163) + b[436:], "EcdsaSigData"),  # 1 byte short
        (lambda b: b[:1012] + b"\xff\xff" + b[1014:], "EcdsaSigData"),  # auth size huge
    ],
)
def test_malformed_quotes_name_the_structure(mutate, structure: str) -> None:  # type: ignore[no-untyped-def]
    raw = (real_dir("phala-sgx-v3-processor") / "quote.bin").read_bytes()
    with pytest.raises(ParseError) as info:
        parse_quote(mutate(raw))
    assert info.value.structure in (structure, "QeReportCertData", "CertificationData")
    assert info.value.offset >= 0


def test_certification_data_type_checks() -> None:
    with pytest.raises(ParseError):
        CertificationData(3, bytes(404)).pck_chain_pem()
    with pytest.raises(ParseError):
        CertificationData(5, b"").qe_report_certification()
    with pytest.raises(ParseError):
        CertificationData(5, b"").encrypted_ppid()
    with pytest.raises(ParseError):
        CertificationData(3, bytes(403)).encrypted_ppid()


def test_pck_extension_refusals() -> None:
    quote = parse_quote((real_dir("phala-sgx-v3-processor") / "quote.bin").read_bytes())
    good = leaf_extensions(quote).to_der()
    for bad in (b"", good[:-1], good + b"\x00", b"\x30\x00", b"\x04\x00"):
        with pytest.raises(ParseError):
            SgxExtensions.from_der(bad)
    with pytest.raises(ParseError):
        SgxExtensions(bytes(16), (0,) * 15, 0, bytes(16), bytes(2), bytes(6), 0)
