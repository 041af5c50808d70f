"""Binary-structure targets: reports, target info, key ids, QE report info, TD reports (``abi``),
quotes (``abi.quote``) and the PCK certificate's SGX extension (``abi.pck``).

Invariant: parse, or raise ParseError; whatever parses re-encodes to exactly the input bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from typing import Any

from cryptography import x509

from sgx_quote_helper.abi.keyid import AttKeyId, AttKeyIdList, QeReportInfo
from sgx_quote_helper.abi.pck import SGX_EXTENSION_OID, SgxExtensions
from sgx_quote_helper.abi.quote import QuoteHeader, parse_quote
from sgx_quote_helper.abi.report import Attributes, Report, ReportBody, TargetInfo
from sgx_quote_helper.abi.tdreport import TdReport10, TdReport15
from sgx_quote_helper.abi.tdx_report import TdxReport
from sgx_quote_helper.cli.inspect_cmd import summarize

from .seeds import real_quotes
from .target import Target, ours

#: selector byte -> (structure, how to encode a parsed value)
STRUCTURES: tuple[tuple[str, Callable[[bytes], Any], Callable[[Any], bytes]], ...] = (
    ("Attributes", Attributes.from_bytes, lambda v: v.to_bytes()),
    ("ReportBody", ReportBody.from_bytes, lambda v: v.to_bytes()),
    ("Report", Report.from_bytes, lambda v: v.to_bytes()),
    ("TargetInfo", TargetInfo.from_bytes, lambda v: v.to_bytes()),
    ("AttKeyId", AttKeyId.from_bytes, lambda v: v.to_bytes()),
    ("AttKeyIdList", AttKeyIdList.from_bytes, lambda v: v.to_bytes()),
    ("QeReportInfo", QeReportInfo.from_bytes, lambda v: v.to_bytes()),
    ("TdReport10", TdReport10.from_bytes, lambda v: v.to_bytes()),
    ("TdReport15", TdReport15.from_bytes, lambda v: v.to_bytes()),
    ("QuoteHeader", QuoteHeader.from_bytes, lambda v: v.to_bytes()),
    ("TdxReport", TdxReport.from_bytes, lambda v: v.to_bytes()),
)


def check_abi(data: bytes) -> int:
    """Byte 0 picks the structure; the rest is parsed as it and must round-trip."""
    if not data:
        return 1
    name, parse, encode = STRUCTURES[data[0] % len(STRUCTURES)]
    body = data[1:]
    value = ours(parse, body)
    if value is not None:
        # QuoteHeader.from_bytes reads the header at the start of a longer quote: a prefix parser
        expected = body[: QuoteHeader.SIZE] if name == "QuoteHeader" else body
        assert encode(value) == expected, f"{name} does not round-trip"
    return 1


@cache
def abi_seeds() -> tuple[bytes, ...]:
    """A valid encoding of every structure (and real QE reports cut from the real quotes)."""
    examples: list[bytes] = [
        Attributes(flags=5, xfrm=3).to_bytes(),
        ReportBody(report_data=b"\x11" * 64).to_bytes(),
        Report(ReportBody(), key_id=b"\x01" * 32, mac=b"\x02" * 16).to_bytes(),
        TargetInfo(mr_enclave=b"\x03" * 32).to_bytes(),
        AttKeyId.ecdsa_p256_qe3().to_bytes(),
        AttKeyIdList((AttKeyId.ecdsa_p256_qe3(), AttKeyId())).to_bytes(),
        QeReportInfo(b"\x07" * 16, TargetInfo(mr_enclave=b"\x08" * 32)).to_bytes(),
        bytes(TdReport10.SIZE),
        bytes(TdReport15.SIZE),
    ]
    seeds = [bytes([i]) + raw for i, raw in enumerate(examples)]
    seeds += [bytes([9]) + q[:48] for q in real_quotes()]
    seeds += [bytes([1]) + q[48 : 48 + 384] for q in real_quotes() if q[:2] == b"\x03\x00"]
    seeds += [bytes([10]) + b"\x81" + bytes(1023)]
    return tuple(seeds)


ABI = Target(
    "abi",
    "abi reports / target info / key ids / key id lists / QE report info / TD reports / quote headers",
    check_abi,
    abi_seeds,
    max_size=2600,
)


def check_quote(data: bytes) -> int:
    """parse_quote parses or raises ParseError; accepted quotes re-encode exactly; the
    certification data accessors raise only ParseError."""
    quote = ours(parse_quote, data)
    if quote is None:
        return 1
    assert quote.to_bytes() == data, "quote does not round-trip"
    cert = quote.signature_data.qe_cert
    ours(lambda: quote.pck_chain_pem)
    ours(lambda: quote.certification_data)
    ours(cert.certification_data.pck_chain_pem)
    ours(cert.certification_data.qe_report_certification)
    ours(cert.certification_data.encrypted_ppid)
    summary = ours(summarize, quote)  # what ``inspect --json`` prints
    if summary is not None:
        json.dumps(summary)
    return 1


QUOTE = Target(
    "quote",
    "abi.quote.parse_quote (v3 SGX, v4/v5 TDX), the certification data accessors, inspect's summary",
    check_quote,
    real_quotes,
    max_size=12000,
)


@cache
def pck_extension_seeds() -> tuple[bytes, ...]:
    """The SGX extension of every PCK leaf certificate in the real quotes (processor and platform
    CA, with and without platform instance id / configuration), plus a synthesized one."""
    seeds: dict[bytes, None] = {}
    for raw in real_quotes():
        quote = ours(parse_quote, raw)
        pem = ours(lambda q=quote: q.pck_chain_pem) if quote is not None else None
        if not pem:
            continue
        leaf = x509.load_pem_x509_certificates(pem)[0]
        ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
        value = ext.value
        assert isinstance(value, x509.UnrecognizedExtension)
        seeds[value.value] = None
    synthetic = SgxExtensions(
        ppid=b"\x01" * 16,
        tcb_components=tuple(range(16)),
        pcesvn=13,
        cpusvn=bytes(range(16)),
        pceid=b"\x00\x00",
        fmspc=b"\x00\x90\x6e\xa1\x00\x00",
        sgx_type=0,
        platform_instance_id=None,
        configuration=None,
    )
    seeds[synthetic.to_der()] = None
    return tuple(seeds)


def check_pck(data: bytes) -> int:
    """SgxExtensions.from_der parses or raises ParseError; what parses survives to_der/from_der."""
    ext = ours(SgxExtensions.from_der, data)
    if ext is not None:
        assert SgxExtensions.from_der(ext.to_der()) == ext, "PCK extension does not survive re-encoding"
    return 1


PCK = Target(
    "pck",
    "abi.pck.SgxExtensions.from_der (the PCK certificate's SGX extension, pure DER)",
    check_pck,
    pck_extension_seeds,
    max_size=1200,
)

__all__ = ["ABI", "PCK", "QUOTE", "STRUCTURES", "pck_extension_seeds"]
