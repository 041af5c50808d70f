"""abi's one-pass decoders agree with the element-by-element readers they stand in front of.

``Quote.from_bytes`` tries ``_decode_well_formed`` (offset arithmetic) and falls back to
``Quote._from_bytes_checked`` (which names the fault). The two must accept exactly the same
inputs with equal results: on every real quote and on mutations of each (truncations, appended
bytes, every length and type field rewritten), never one without the other.

``SgxExtensions.from_der`` tries ``_plain_extensions`` (Intel's layout read in place): whatever
it returns, the checked reader returns too, on every real PCK certificate's extension and on
every single-byte mutation and truncation of it.
"""

from __future__ import annotations

import random
import struct
from dataclasses import fields
from pathlib import Path

import pytest
from cryptography import x509

from sgx_quote_helper.abi.pck import SGX_EXTENSION_OID, SgxExtensions, _plain_extensions
from sgx_quote_helper.abi.quote import Quote, _decode_well_formed
from sgx_quote_helper.abi.tdreport import TdReport10, TdReport15
from sgx_quote_helper.errors import ParseError

from .conftest import REAL_QUOTE_DIRS


def checked(data: bytes) -> Quote | None:
    try:
        return Quote._from_bytes_checked(data)
    except ParseError:
        return None


def same_quote(a: Quote, b: Quote) -> bool:
    return a == b and type(a.body) is type(b.body) and a.to_bytes() == b.to_bytes()


def length_fields(raw: bytes) -> list[tuple[int, str]]:
    """(offset, struct format) of every version/type/length field of a parsed real quote."""
    q = Quote.from_bytes(raw)
    out = [(0, "<H"), (2, "<H"), (4, "<I")]
    pos = 48
    if q.version == 5:
        out += [(48, "<H"), (50, "<I")]
        pos += 6
    pos += type(q.body).SIZE
    out.append((pos, "<I"))  # signature_data_len
    pos += 4 + 128
    if q.version != 3:
        out += [(pos, "<H"), (pos + 2, "<I")]  # the type-6 block
        pos += 6
    pos += 384 + 64
    out.append((pos, "<H"))  # QE auth data size
    pos += 2 + len(q.signature_data.qe_cert.qe_auth_data)
    out += [(pos, "<H"), (pos + 2, "<I")]  # inner certification data type and size
    return out


def mutations(raw: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = [raw + b"\x00", raw + b"\x01" * 7]
    cuts = {0, 1, 47, 48, 49, 53, 54, len(raw) - 1, len(raw) - 6}
    cuts |= {rng.randrange(len(raw)) for _ in range(40)}
    out += [raw[:c] for c in sorted(cuts) if 0 <= c < len(raw)]
    for offset, fmt in length_fields(raw):
        size = struct.calcsize(fmt)
        (value,) = struct.unpack_from(fmt, raw, offset)
        top = (1 << (8 * size)) - 1
        for new in {0, 1, 2, 3, 4, 5, 6, 7, 0x81, value - 1, value + 1, value + 6, top, value ^ 0x100}:
            if 0 <= new <= top and new != value:
                out.append(raw[:offset] + struct.pack(fmt, new) + raw[offset + size :])
    return out


@pytest.mark.parametrize("vector", REAL_QUOTE_DIRS, ids=lambda p: p.name)
def test_real_quotes_decode_the_same_both_ways(vector: Path) -> None:
    raw = (vector / "quote.bin").read_bytes()
    fast = _decode_well_formed(raw)
    assert fast is not None
    slow = checked(raw)
    assert slow is not None and same_quote(fast, slow)
    assert same_quote(Quote.from_bytes(raw), slow)


@pytest.mark.parametrize("vector", REAL_QUOTE_DIRS, ids=lambda p: p.name)
def test_mutated_quotes_are_accepted_by_both_or_neither(vector: Path) -> None:
    raw = (vector / "quote.bin").read_bytes()
    accepted = rejected = 0
    for i, data in enumerate(mutations(raw, seed=len(raw))):
        fast, slow = _decode_well_formed(data), checked(data)
        assert (fast is None) == (slow is None), (i, len(data))
        if fast is not None and slow is not None:
            assert same_quote(fast, slow), i
            accepted += 1
        else:
            rejected += 1
            with pytest.raises(ParseError):
                Quote.from_bytes(data)
    assert accepted and rejected  # both sides of the decision were exercised


@pytest.mark.parametrize("cls", [TdReport10, TdReport15])
def test_td_report_layout_is_the_field_order(cls: type[TdReport10]) -> None:
    # TdReport*.from_bytes unpacks LAYOUT in one struct and builds the fields in that order
    assert [f.name for f in fields(cls)] == [name for name, _ in cls.LAYOUT]
    raw = bytes(range(256)) * 3
    report = cls.from_bytes(raw[: cls.SIZE])
    assert type(report) is cls and report.to_bytes() == raw[: cls.SIZE]
    assert report == cls(**{f.name: getattr(report, f.name) for f in fields(cls)})


def extension_of(raw_quote: bytes) -> bytes | None:
    pem = Quote.from_bytes(raw_quote).pck_chain_pem
    if pem is None:
        return None
    leaf = x509.load_pem_x509_certificates(pem)[0]
    ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID)).value
    assert isinstance(ext, x509.UnrecognizedExtension)
    return ext.value


def decoded(parse: object, data: bytes) -> SgxExtensions | None:
    try:
        return parse(data)  # type: ignore[operator, no-any-return]
    except ParseError:
        return None


#: the real quotes that carry their PCK chain (certification data type 5), whose extension is read
WITH_PCK_CHAIN = [d for d in REAL_QUOTE_DIRS if extension_of((d / "quote.bin").read_bytes()) is not None]


def test_real_quotes_with_a_pck_chain_are_there() -> None:
    assert len(WITH_PCK_CHAIN) >= 2, [d.name for d in REAL_QUOTE_DIRS]


@pytest.mark.parametrize("vector", WITH_PCK_CHAIN, ids=lambda p: p.name)
def test_pck_extension_plain_reader_agrees_with_the_checked_one(vector: Path) -> None:
    raw = extension_of((vector / "quote.bin").read_bytes())
    assert raw is not None
    plain = _plain_extensions(raw)
    checked_ext = SgxExtensions._from_der_checked(raw)
    if plain is not None:  # Platform-CA certificates (Configuration entry) take the checked reader
        assert plain == checked_ext
    assert SgxExtensions.from_der(raw) == checked_ext
    both = only_checked = 0
    inputs = [raw[:cut] for cut in range(len(raw))] + [raw + b"\x00"]
    for i in range(len(raw)):
        for new in {0x00, 0x01, 0x02, 0x7F, 0x80, 0x81, 0x82, 0xFF, raw[i] ^ 0x01} - {raw[i]}:
            inputs.append(raw[:i] + bytes((new,)) + raw[i + 1 :])
    for data in inputs:
        fast, slow = decoded(_plain_extensions, data), decoded(SgxExtensions._from_der_checked, data)
        if fast is not None:
            assert slow == fast, data.hex()
            both += 1
        elif slow is not None:
            only_checked += 1
        assert decoded(SgxExtensions.from_der, data) == slow
    assert both  # mutations the plain reader accepts (SVN values, PPID bytes...) were exercised
