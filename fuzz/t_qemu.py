"""QEMU's GetQuote reply checks (``wire.qemu.QemuGetQuote``) on any bytes a QGS may send back.

Invariants: the outcome (the forwarded quote, or QEMU's refusal and the guest's status word) does
not depend on how the reply was chunked; nothing but :class:`QemuRefused` escapes; an accepted quote
is exactly the bytes after the 28 bytes of prefix and GET_QUOTE_RESP fields, within the length
prefix and the guest's buffer.
"""

from __future__ import annotations

from functools import cache

from sgx_quote_helper.abi import qgs as q
from sgx_quote_helper.wire.qemu import QemuGetQuote, QemuRefused, QuoteForwarded
from sgx_quote_helper.wire.qgs import NEED_DATA, encode_frame

from .t_wire import chunks, decode_frames_input
from .target import Target

#: a small guest buffer so the fuzzer reaches the capacity checks
GUEST_BUFFER = 1536


def _run(pieces: list[bytes]) -> bytes | tuple[str, int]:
    conn = QemuGetQuote(GUEST_BUFFER)
    conn.send(b"\x81" + bytes(1023))
    try:
        for piece in [*pieces, b""]:
            conn.receive_data(piece)
            event = conn.next_event()
            if event is not NEED_DATA:
                assert isinstance(event, QuoteForwarded)
                return event.quote
    except QemuRefused as exc:
        assert str(exc) and exc.guest_status >> 63
        return str(exc), exc.guest_status
    raise AssertionError("no outcome after EOF")


def check_qemu(inp: tuple[bytes, tuple[int, ...]]) -> int:
    stream, cuts = inp
    whole = _run([stream])
    assert _run(chunks(stream, cuts)) == whole, "chunking changed QEMU's outcome"
    if isinstance(whole, bytes):
        length = int.from_bytes(stream[:4], "big")
        assert length <= GUEST_BUFFER - 4 and whole == stream[28 : 4 + length]
    return 1


@cache
def qemu_seeds() -> tuple[bytes, ...]:
    replies = [
        q.GetQuoteResponse(b"\x04\x00\x02\x00\x81" + bytes(600)).to_bytes(),
        q.GetQuoteResponse(error_code=0x12001).to_bytes(),
        q.GetQuoteResponse(b"quote", b"\xe8" * 16).to_bytes(),
        q.GetQuoteResponse(b"quote", minor_version=0).to_bytes(),
        q.GetPlatformInfoResponse(4, 13, b"\x01" * 16, b"\x02" * 16).to_bytes(),
    ]
    return tuple(b"\x00" + encode_frame(r) for r in replies)


QEMU = Target(
    "qemu",
    "wire.qemu.QemuGetQuote: QEMU's checks of a QGS reply (chunking differential, the forwarded quote)",
    check_qemu,
    qemu_seeds,
    decode=decode_frames_input,
    max_size=2000,
)

__all__ = ["QEMU", "check_qemu", "qemu_seeds"]
