"""wire.qemu: the bytes QEMU writes for a TD's GetQuote and every check QEMU makes on the QGS's
reply, against the independent QEMU model in test_qgs_protocol (qemu_request / qemu_reply)."""

from __future__ import annotations

import struct

import pytest

from sgx_quote_helper.abi.qgs import GetPlatformInfoResponse, GetQuoteResponse
from sgx_quote_helper.errors import LocalProtocolError, RemoteProtocolError
from sgx_quote_helper.wire.qemu import (
    GET_QUOTE_ERROR,
    GET_QUOTE_SERVICE_UNAVAILABLE,
    LINUX_GUEST_PAYLOAD,
    QemuGetQuote,
    QemuRefused,
    QuoteForwarded,
)
from sgx_quote_helper.wire.qgs import NEED_DATA, encode_frame

from .test_qgs_protocol import QUOTE, REPORT, hdr, qemu_reply, qemu_request


def forward(reply: bytes, chunk: int | None = None, guest_buffer: int = LINUX_GUEST_PAYLOAD) -> bytes:
    qemu = QemuGetQuote(guest_buffer)
    assert qemu.send(REPORT) == qemu_request(REPORT)
    pieces = [reply[i : i + chunk] for i in range(0, len(reply), chunk)] if chunk else [reply]
    for piece in [*pieces, b""]:
        event = qemu.next_event()
        if isinstance(event, QuoteForwarded):
            return event.quote
        assert event is NEED_DATA
        qemu.receive_data(piece)
    event = qemu.next_event()
    assert isinstance(event, QuoteForwarded)
    return event.quote


@pytest.mark.parametrize("chunk", [None, 1, 7, 1000])
def test_a_good_reply_gives_the_guest_what_qemu_copies(chunk: int | None) -> None:
    reply = encode_frame(GetQuoteResponse(QUOTE).to_bytes())
    assert forward(reply, chunk) == qemu_reply(reply) == QUOTE
    # bytes after the length prefix's worth are not read (QEMU stops there)
    assert forward(reply + b"trailing garbage", chunk) == QUOTE


def test_one_get_quote_per_connection() -> None:
    qemu = QemuGetQuote()
    qemu.send(REPORT)
    with pytest.raises(LocalProtocolError):
        qemu.send(REPORT)
    with pytest.raises(LocalProtocolError):
        QemuGetQuote().next_event()


def _resp(mtype: int = 1, code: int = 0, major: int = 1, minor: int = 1, sel: int = 0, qsize: int | None = None,
          size: int | None = None, payload: bytes = QUOTE) -> bytes:  # fmt: skip
    qsize = len(payload) - sel if qsize is None else qsize
    body = struct.pack("<II", sel, qsize) + payload
    return encode_frame(hdr(mtype, 16 + len(body) if size is None else size, code, major, minor) + body)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (_resp(minor=0), "version 1.0"),
        (_resp(minor=2), "version 1.2"),
        (_resp(major=2), "version 2.1"),
        (_resp(mtype=5), "message type 5"),
        (_resp(code=0x12001), "error code 0x12001"),
        (_resp(sel=16), "selected ID size 16"),
        (_resp(qsize=len(QUOTE) - 1), "quote size"),
        (_resp(size=9000), "exceeds the payload capacity"),
        (encode_frame(GetQuoteResponse(error_code=0x12001).to_bytes()), "error code 0x12001"),
        (
            encode_frame(GetPlatformInfoResponse(4, 13, b"\x01" * 16, b"\x02" * 16).to_bytes()),
            "message type 5",
        ),
        (b"\x00\x00\x00\x00" + bytes(40), "message len 0"),
        ((9000).to_bytes(4, "big") + bytes(9000), "message len 9000"),
        (encode_frame(b"\x01\x00\x01\x00"), "shorter than GET_QUOTE_RESP"),
    ],
)
def test_replies_qemu_refuses(reply: bytes, reason: str) -> None:
    with pytest.raises(QemuRefused, match=reason) as exc:
        forward(reply)
    assert exc.value.guest_status == GET_QUOTE_ERROR
    assert isinstance(exc.value, RemoteProtocolError)
    if len(reply) < 8192 - 24:  # the independent model refuses it too (the giant one cannot fit)
        with pytest.raises((AssertionError, struct.error)):  # the model has no short-reply check
            qemu_reply(reply)


def test_size_field_is_not_compared_with_the_prefix_as_in_qemu() -> None:
    reply = _resp(size=100)  # within the buffer, wrong: QEMU (05caf269) never compares it
    assert forward(reply) == QUOTE == qemu_reply(reply)


@pytest.mark.parametrize("cut", [0, 3, 4, 27, 500])
def test_a_close_before_the_reply_is_service_unavailable(cut: int) -> None:
    reply = encode_frame(GetQuoteResponse(QUOTE).to_bytes())[:cut]
    with pytest.raises(QemuRefused, match="end of file") as exc:
        forward(reply)
    assert exc.value.guest_status == GET_QUOTE_SERVICE_UNAVAILABLE


def test_a_quote_too_big_for_the_guest_buffer() -> None:
    reply = encode_frame(GetQuoteResponse(b"q" * 3000).to_bytes())
    assert forward(reply, guest_buffer=4096) == b"q" * 3000
    with pytest.raises(QemuRefused, match="message len 3024"):
        forward(reply, guest_buffer=2048)
    with pytest.raises(LocalProtocolError):
        QemuGetQuote(20)
