"""A minimal DER reader/writer: just what the SGX certificate extension needs.

Supports definite lengths, SEQUENCE, INTEGER (non-negative), OCTET STRING, BOOLEAN, ENUMERATED
and OBJECT IDENTIFIER. Pure; raises :class:`ParseError` on malformed input.
"""

from __future__ import annotations

from functools import lru_cache

from ..errors import ParseError

TAG_BOOLEAN = 0x01
TAG_INTEGER = 0x02
TAG_OCTET_STRING = 0x04
TAG_OID = 0x06
TAG_ENUMERATED = 0x0A
TAG_SEQUENCE = 0x30

_MAX_LEN_BYTES = 4


def read_tlv(data: bytes, pos: int, structure: str) -> tuple[int, bytes, int]:
    """Read one TLV at ``pos``; return ``(tag, value, next_pos)``."""
    if pos + 2 > len(data):
        raise ParseError(structure, pos, "truncated DER header")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise ParseError(structure, pos, "multi-byte DER tags are not supported")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > _MAX_LEN_BYTES:
            raise ParseError(structure, pos - 1, "unsupported DER length form")
        if pos + n > len(data):
            raise ParseError(structure, pos, "truncated DER length")
        length = int.from_bytes(data[pos : pos + n], "big")
        if length < 0x80 or data[pos] == 0:
            raise ParseError(structure, pos, "non-minimal DER length")
        pos += n
    if pos + length > len(data):
        raise ParseError(structure, pos, f"DER value needs {length} bytes, {len(data) - pos} left")
    return tag, data[pos : pos + length], pos + length


def read_all(data: bytes, structure: str) -> list[tuple[int, bytes]]:
    """Split ``data`` (the contents of a constructed value) into its TLVs.

    The same rules as :func:`read_tlv`, inlined for the short-form lengths that make up almost
    every element of a PCK certificate (this loop is on the verifier's cold path)."""
    out: list[tuple[int, bytes]] = []
    pos, end = 0, len(data)
    while pos < end:
        if pos + 2 > end or data[pos] & 0x1F == 0x1F or data[pos + 1] >= 0x80:
            tag, value, pos = read_tlv(data, pos, structure)  # long form, or an error to report
        else:
            tag, length = data[pos], data[pos + 1]
            pos += 2
            if pos + length > end:
                raise ParseError(structure, pos, f"DER value needs {length} bytes, {end - pos} left")
            value = data[pos : pos + length]
            pos += length
        out.append((tag, value))
    return out


def expect(tag: int, want: int, structure: str, what: str) -> None:
    if tag != want:
        raise ParseError(structure, 0, f"{what}: expected DER tag {want:#04x}, got {tag:#04x}")


def decode_int(value: bytes, structure: str, what: str) -> int:
    if not value:
        raise ParseError(structure, 0, f"{what}: empty INTEGER")
    if value[0] & 0x80:
        raise ParseError(structure, 0, f"{what}: negative INTEGER")
    return int.from_bytes(value, "big")


@lru_cache(maxsize=512)  # a PCK extension repeats the same ~23 OIDs; decoding them dominates parsing
def decode_oid(value: bytes, structure: str) -> str:
    if not value:
        raise ParseError(structure, 0, "empty OBJECT IDENTIFIER")
    arcs: list[int] = []
    n = 0
    for i, b in enumerate(value):
        n = (n << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(n)
            n = 0
        elif i == len(value) - 1:
            raise ParseError(structure, 0, "truncated OBJECT IDENTIFIER")
    first = arcs[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(a) for a in head + arcs[1:])


def tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes((tag, n)) + value
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(raw))) + raw + value


def enc_int(value: int, tag: int = TAG_INTEGER) -> bytes:
    if value < 0:
        raise ValueError("only non-negative integers are supported")
    raw = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return tlv(tag, raw)


def enc_oid(oid: str) -> bytes:
    arcs = [int(a) for a in oid.split(".")]
    body = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return tlv(TAG_OID, bytes(body))


def enc_seq(*items: bytes) -> bytes:
    return tlv(TAG_SEQUENCE, b"".join(items))


def enc_octets(value: bytes) -> bytes:
    return tlv(TAG_OCTET_STRING, value)


def enc_bool(value: bool) -> bytes:
    return tlv(TAG_BOOLEAN, b"\xff" if value else b"\x00")
