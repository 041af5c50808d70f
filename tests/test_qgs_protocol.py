"""QGS protocol conformance, byte for byte: Intel's qgs_msg_lib v1.1 layouts, size rules, error
codes and quirks (abi.qgs), framing, raw mode and the server/client connections (wire.qgs), and
what QEMU's tdx-quote-generator accepts (tdx-qgs.md §1.2-§1.5, §2)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_quote_helper.abi.qgs import (
    GetCollateralRequest,
    GetCollateralResponse,
    GetPlatformInfoRequest,
    GetPlatformInfoResponse,
    GetQuoteRequest,
    GetQuoteResponse,
    MsgError,
    MsgType,
    decode_request,
    decode_response,
    error_response,
    message_type,
)
from sgx_quote_helper.errors import LocalProtocolError, QgsMessageError, RemoteProtocolError
from sgx_quote_helper.wire.qgs import (
    NEED_DATA,
    CloseConnection,
    MalformedRequest,
    QgsClientConnection,
    QgsServerConnection,
    RawReportReceived,
    RequestReceived,
    ResponseReceived,
    encode_frame,
)

REPORT = bytes([0x81, 0, 0, 0]) + bytes(range(256)) * 3 + bytes(252)
assert len(REPORT) == 1024
QUOTE = b"\x04\x00\x02\x00\x81\x00\x00\x00" + b"Q" * 5000


def hdr(mtype: int, size: int, code: int = 0, major: int = 1, minor: int = 1) -> bytes:
    return struct.pack("<HHIII", major, minor, mtype, size, code)


def qemu_request(report: bytes) -> bytes:
    """Exactly what QEMU's tdx_generate_quote writes: BE length, 1.1 GET_QUOTE_REQ, id_list 0."""
    body = hdr(0, 24 + len(report)) + struct.pack("<II", len(report), 0) + report
    return len(body).to_bytes(4, "big") + body


def qemu_reply(data: bytes, guest_buffer: int = 8192 - 24) -> bytes:
    """QEMU's tdx_get_quote_read checks on a reply, in its order; the quote it copies to the guest.

    ``guest_buffer`` is the guest's payload capacity (Linux: an 8 KiB shared buffer minus QEMU's
    24-byte header)."""
    payload_len = guest_buffer
    if len(data) < 4:
        raise AssertionError("QEMU: end of file before reply received")
    length = int.from_bytes(data[:4], "big")
    assert 0 < length <= payload_len - 4, (
        f"QEMU: message len {length} must be non-zero & <= {payload_len - 4}"
    )
    payload_len = 4 + length
    major, minor, mtype, size, code = struct.unpack_from("<HHIII", data, 4)
    assert (major, minor) == (1, 1), f"QEMU: invalid QGS message header version {major}.{minor}"
    assert mtype == 1, f"QEMU: invalid QGS message type {mtype}"
    assert size <= payload_len - 4, "QEMU: QGS message size exceeds payload capacity"
    assert code == 0, f"QEMU: QGS message error code {code}"
    sel, qsize = struct.unpack_from("<II", data, 20)
    assert sel == 0, "QEMU: selected ID not 0"
    assert qsize == payload_len - 4 - 24, "QEMU: quote size mismatch"
    assert len(data) == payload_len, "QEMU: waits for (or ignores past) payload_len bytes"
    return data[28:payload_len]


# -- messages: exact bytes ---------------------------------------------------------------------------


def test_get_quote_request_bytes() -> None:
    req = GetQuoteRequest(REPORT)
    raw = req.to_bytes()
    assert raw[:24] == hdr(0, 1048) + struct.pack("<II", 1024, 0) and raw[24:] == REPORT
    assert qemu_request(REPORT) == encode_frame(raw) == b"\x00\x00\x04\x18" + raw
    with_ids = GetQuoteRequest(REPORT, b"\xe8" * 16).to_bytes()
    assert with_ids[8:12] == (1064).to_bytes(4, "little") and with_ids[20:24] == (16).to_bytes(4, "little")
    assert GetQuoteRequest.from_bytes(with_ids) == GetQuoteRequest(REPORT, b"\xe8" * 16)


def test_get_quote_response_bytes_pass_qemu() -> None:
    raw = GetQuoteResponse(QUOTE).to_bytes()
    assert raw[:24] == hdr(1, 24 + len(QUOTE)) + struct.pack("<II", 0, len(QUOTE))
    assert qemu_reply(encode_frame(raw)) == QUOTE
    assert GetQuoteResponse.from_bytes(raw) == GetQuoteResponse(QUOTE)


def test_error_responses_have_the_fixed_sizes_and_zero_fields() -> None:
    assert GetQuoteResponse(error_code=0x12001).to_bytes() == hdr(1, 24, 0x12001) + bytes(8)
    assert GetCollateralResponse(error_code=0x12001).to_bytes() == hdr(3, 48, 0x12001) + bytes(32)
    assert GetPlatformInfoResponse(error_code=0x12001).to_bytes() == hdr(5, 28, 0x12001) + bytes(12)
    for t in (0, 2, 4):
        assert error_response(t).error_code == MsgError.UNEXPECTED
    # QEMU refuses an error reply (the guest sees GET_QUOTE_ERROR)
    with pytest.raises(AssertionError, match="error code"):
        qemu_reply(encode_frame(GetQuoteResponse(error_code=0x12001).to_bytes()))
    assert GetQuoteResponse.from_bytes(hdr(1, 24, 0x12007) + bytes(8)).error_code == 0x12007


def test_platform_info_quirk() -> None:
    ok = GetPlatformInfoResponse(4, 13, b"\x11" * 16, b"\x22" * 16).to_bytes()
    assert len(ok) == 4 + 28 + 32 and ok[8:12] == (64).to_bytes(4, "little") and ok[-4:] == bytes(4)
    assert ok[16:28] == struct.pack("<HHII", 4, 13, 16, 16)
    assert GetPlatformInfoResponse.from_bytes(ok).cpusvn == b"\x22" * 16
    # Intel's own 28-byte error form is refused by Intel's inflater (INVALID_SIZE)
    with pytest.raises(QgsMessageError) as exc:
        GetPlatformInfoResponse.from_bytes(GetPlatformInfoResponse(error_code=0x12001).to_bytes())
    assert exc.value.code == MsgError.INVALID_SIZE
    # without the 4 bytes: refused too
    with pytest.raises(QgsMessageError):
        GetPlatformInfoResponse.from_bytes(ok[:8] + (60).to_bytes(4, "little") + ok[12:-4])
    assert GetPlatformInfoRequest().to_bytes() == hdr(4, 16)


BLOBS = tuple(bytes([i + 1]) * (i + 3) for i in range(7))


def test_collateral_bytes_and_minor_zero_quirk() -> None:
    raw = GetCollateralResponse(BLOBS, 3, 1).to_bytes()
    total = 48 + sum(len(b) for b in BLOBS)
    assert raw[:48] == hdr(3, total) + struct.pack("<HH7I", 3, 1, *(len(b) for b in BLOBS))
    assert raw[48:] == b"".join(BLOBS)
    assert GetCollateralResponse.from_bytes(raw).blob("qe_identity") == BLOBS[6]
    # reply to a minor-0 request: 4 zero bytes more, header still minor 1 -> Intel's client refuses
    padded = GetCollateralResponse(BLOBS, 3, 1, pad=True).to_bytes()
    assert len(padded) == total + 4 and padded[-4:] == bytes(4) and padded[2:4] == b"\x01\x00"
    with pytest.raises(QgsMessageError) as exc:
        GetCollateralResponse.from_bytes(padded)
    assert exc.value.code == MsgError.INVALID_SIZE
    # a reply whose own minor is 0 may carry them
    minor0 = GetCollateralResponse(BLOBS, 3, 1, pad=True, minor_version=0).to_bytes()
    assert GetCollateralResponse.from_bytes(minor0).blobs == BLOBS
    req = GetCollateralRequest(b"\x00\xa0\xa5\x51\x00\x00", b"processor\0").to_bytes()
    assert req == hdr(2, 24 + 16) + struct.pack("<II", 6, 10) + b"\x00\xa0\xa5\x51\x00\x00processor\0"
    assert GetCollateralRequest.from_bytes(req).ca_name == "processor"


# -- Intel's inflater error codes -----------------------------------------------------------------------


def _quote_req(**kw: int) -> bytes:
    f = {"major": 1, "minor": 1, "type": 0, "size": 1048, "code": 0, "rs": 1024, "ids": 0} | kw
    head = struct.pack("<HHIII", f["major"], f["minor"], f["type"], f["size"], f["code"])
    return head + struct.pack("<II", f["rs"], f["ids"]) + REPORT


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (_quote_req(major=2), MsgError.INVALID_VERSION),
        (_quote_req(type=2), MsgError.INVALID_TYPE),
        (_quote_req(size=1047), MsgError.INVALID_SIZE),
        (_quote_req(code=5), MsgError.INVALID_CODE),
        (_quote_req(rs=0, size=1048), MsgError.INVALID_CODE),
        (_quote_req(rs=1000), MsgError.INVALID_SIZE),
        (_quote_req(rs=0xFFFFFFF0, ids=0x20), MsgError.UNEXPECTED),
        (_quote_req()[:23], MsgError.INVALID_PARAMETER),
        (b"", MsgError.INVALID_PARAMETER),
    ],
)
def test_get_quote_request_inflater_codes(data: bytes, code: int) -> None:
    with pytest.raises(QgsMessageError) as exc:
        GetQuoteRequest.from_bytes(data)
    assert exc.value.code == code


def test_only_the_major_version_is_checked() -> None:
    for minor in (0, 2, 0xFFFF):
        assert GetQuoteRequest.from_bytes(_quote_req(minor=minor)).minor_version == minor
    with pytest.raises(QgsMessageError) as exc:
        message_type(hdr(6, 16))
    assert exc.value.code == MsgError.INVALID_VERSION  # Intel's code for type >= 6
    with pytest.raises(QgsMessageError) as exc:
        message_type(hdr(0, 16, major=0))
    assert exc.value.code == MsgError.INVALID_VERSION


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (hdr(1, 24, 0x12008) + bytes(8), MsgError.INVALID_CODE),
        (hdr(1, 24) + bytes(8), MsgError.INVALID_SIZE),  # success with no quote
        (hdr(1, 28, 0x12001) + struct.pack("<II", 0, 4) + b"QQQQ", MsgError.INVALID_SIZE),
        (hdr(1, 30) + struct.pack("<II", 0, 5) + b"Q" * 6, MsgError.INVALID_SIZE),
        (hdr(3, 48) + bytes(32), MsgError.INVALID_SIZE),  # collateral success with no blobs
        (hdr(2, 24) + bytes(8), MsgError.INVALID_TYPE),
    ],
)
def test_response_inflater_codes(data: bytes, code: int) -> None:
    with pytest.raises(QgsMessageError) as exc:
        decode_response(data) if data[4] != 2 else GetQuoteResponse.from_bytes(data)
    assert exc.value.code == code


def test_collateral_and_platform_requests_inflate_like_intel() -> None:
    empty = hdr(2, 24 + 6) + struct.pack("<II", 6, 0) + bytes(6)
    with pytest.raises(QgsMessageError) as exc:
        GetCollateralRequest.from_bytes(empty)
    assert exc.value.code == MsgError.INVALID_SIZE
    # a longer platform-info request is accepted when its header says so (size >= 16, size == len)
    assert decode_request(hdr(4, 20) + bytes(4)) == GetPlatformInfoRequest()
    with pytest.raises(QgsMessageError) as exc:
        decode_request(hdr(4, 16, code=1))
    assert exc.value.code == MsgError.INVALID_CODE
    with pytest.raises(QgsMessageError) as exc:
        decode_request(hdr(1, 24) + bytes(8))
    assert exc.value.code == MsgError.INVALID_TYPE


def test_encoders_refuse_what_intel_refuses() -> None:
    with pytest.raises(QgsMessageError):
        GetQuoteRequest(b"").to_bytes()
    with pytest.raises(QgsMessageError):
        GetQuoteResponse(b"").to_bytes()
    with pytest.raises(QgsMessageError):
        GetCollateralResponse((b"x",) * 6).to_bytes()
    with pytest.raises(QgsMessageError):
        GetPlatformInfoResponse(1, 1, b"", b"x").to_bytes()


# -- the server connection ----------------------------------------------------------------------------


def feed(conn: QgsServerConnection, data: bytes, chunk: int | None = None, eof: bool = False) -> object:
    step = chunk or max(len(data), 1)
    event: object = NEED_DATA
    for i in range(0, len(data), step):
        conn.receive_data(data[i : i + step], now=1.0)
        event = conn.next_event()
        if event is not NEED_DATA:
            return event
    if eof:
        conn.receive_data(b"")
        event = conn.next_event()
    return event


@pytest.mark.parametrize("chunk", [None, 1, 3, 19, 20, 21, 1000])
def test_qemu_request_any_chunking_and_reply_passes_qemu(chunk: int | None) -> None:
    conn = QgsServerConnection(0.0)
    event = feed(conn, qemu_request(REPORT), chunk)
    assert isinstance(event, RequestReceived) and event.request == GetQuoteRequest(REPORT)
    reply = conn.send(GetQuoteResponse(QUOTE))
    assert qemu_reply(reply) == QUOTE
    assert conn.state == "DONE" and isinstance(conn.next_event(), CloseConnection)


@pytest.mark.parametrize("chunk", [None, 1, 512])
def test_raw_mode(chunk: int | None) -> None:
    conn = QgsServerConnection(0.0)
    event = feed(conn, REPORT, chunk)
    assert event == RawReportReceived(REPORT)
    assert conn.send_raw_quote(QUOTE) == QUOTE  # bare bytes: no prefix, no header
    # what follows the report is never read (the same event however the stream is cut)
    conn = QgsServerConnection(0.0)
    assert feed(conn, REPORT + b"trailing", chunk) == RawReportReceived(REPORT)
    # a refused raw report: close with no data
    conn = QgsServerConnection(0.0)
    feed(conn, REPORT)
    conn.refuse()
    assert conn.state == "DONE"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (REPORT[:1023], "1024-byte raw TDREPORT"),
        (b"\x00\x00\x00", "start of a request"),
        (qemu_request(REPORT)[:500], "end of a 1048-byte message"),
        (encode_frame(GetQuoteResponse(QUOTE).to_bytes()), "not a request"),
        ((2 << 20).to_bytes(4, "big") + hdr(0, 2 << 20), "exceeds the limit"),
    ],
)
def test_closed_without_reply(data: bytes, words: str) -> None:
    event = feed(QgsServerConnection(0.0), data, eof=True)
    assert isinstance(event, CloseConnection) and words in event.reason


def test_oversized_prefix_refused_before_the_body() -> None:
    conn = QgsServerConnection(0.0)
    conn.receive_data((2 << 20).to_bytes(4, "big") + hdr(0, 2 << 20))
    event = conn.next_event()
    assert isinstance(event, CloseConnection) and "exceeds" in event.reason


def test_wrong_major_in_a_frame_is_raw_mode_like_intel() -> None:
    bad = encode_frame(bytes.fromhex("0200") + _quote_req()[2:])
    event = feed(QgsServerConnection(0.0), bad, eof=True)
    # not a framed message: its first 1024 bytes are taken as a raw TDREPORT (which no TDQE accepts:
    # it does not start with report type 0x81)
    assert isinstance(event, RawReportReceived) and event.report == bad[:1024]
    short = encode_frame(bytes.fromhex("0200") + hdr(0, 16)[2:])
    event = feed(QgsServerConnection(0.0), short, eof=True)
    assert isinstance(event, CloseConnection) and "TDREPORT" in event.reason


def test_malformed_request_is_answered_unexpected() -> None:
    conn = QgsServerConnection(0.0)
    event = feed(conn, encode_frame(_quote_req(code=7)))
    assert isinstance(event, MalformedRequest) and event.type == MsgType.GET_QUOTE_REQ
    assert event.code == MsgError.INVALID_CODE
    assert conn.send_error() == encode_frame(hdr(1, 24, 0x12001) + bytes(8))


def test_allow_list_and_raw_switch() -> None:
    vmm = frozenset({MsgType.GET_QUOTE_REQ})
    conn = QgsServerConnection(0.0, allowed=vmm, allow_raw=False)
    event = feed(conn, encode_frame(GetPlatformInfoRequest().to_bytes()))
    assert isinstance(event, CloseConnection) and "not allowed" in event.reason
    event = feed(QgsServerConnection(0.0, allowed=vmm, allow_raw=False), REPORT)
    assert isinstance(event, CloseConnection) and "raw mode" in event.reason
    assert isinstance(feed(QgsServerConnection(0.0, allowed=vmm), qemu_request(REPORT)), RequestReceived)
    with pytest.raises(ValueError):
        QgsServerConnection(0.0, allowed=frozenset({1}))


def test_deadline_is_passed_in() -> None:
    conn = QgsServerConnection(100.0, timeout=30.0)
    conn.receive_data(qemu_request(REPORT)[:100], now=110.0)
    assert conn.next_event() is NEED_DATA
    assert conn.next_event(now=129.9) is NEED_DATA
    event = conn.next_event(now=130.0)
    assert isinstance(event, CloseConnection) and "deadline" in event.reason


def test_send_rules() -> None:
    conn = QgsServerConnection(0.0)
    with pytest.raises(LocalProtocolError):
        conn.send(GetQuoteResponse(QUOTE))
    feed(conn, encode_frame(GetPlatformInfoRequest().to_bytes()))
    with pytest.raises(LocalProtocolError, match="GetPlatformInfoResponse"):
        conn.send(GetQuoteResponse(QUOTE))
    with pytest.raises(LocalProtocolError):
        conn.send_raw_quote(QUOTE)
    out = conn.send(GetPlatformInfoResponse(4, 13, b"\x01" * 16, b"\x02" * 16))
    assert out[:4] == (64).to_bytes(4, "big")
    # one request per connection: later bytes are never read
    conn.receive_data(qemu_request(REPORT))
    assert isinstance(conn.next_event(), CloseConnection)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 200), min_size=1, max_size=30))
def test_any_cut_gives_the_same_request(cuts: list[int]) -> None:
    data = encode_frame(GetCollateralRequest(b"\x00" * 6, b"platform\0").to_bytes())
    conn = QgsServerConnection(0.0)
    pos, event, i = 0, NEED_DATA, 0
    while pos < len(data) and event is NEED_DATA:
        n = cuts[i % len(cuts)]
        i += 1
        conn.receive_data(data[pos : pos + n])
        pos += n
        event = conn.next_event()
    assert event == RequestReceived(GetCollateralRequest(b"\x00" * 6, b"platform\0"))


# -- the client connection --------------------------------------------------------------------------------


def test_client_round_trip_and_errors() -> None:
    client = QgsClientConnection()
    sent = client.send(GetQuoteRequest(REPORT))
    assert sent == qemu_request(REPORT)
    reply = encode_frame(GetQuoteResponse(QUOTE).to_bytes())
    client.receive_data(reply[:2])  # a split prefix is fine here (libtdx_attest's single recv is not)
    assert client.next_event() is NEED_DATA
    client.receive_data(reply[2:])
    assert client.next_event() == ResponseReceived(GetQuoteResponse(QUOTE))
    with pytest.raises(LocalProtocolError):
        client.send(GetQuoteRequest(REPORT))
    c2 = QgsClientConnection()
    c2.send(GetQuoteRequest(REPORT))
    c2.receive_data(encode_frame(GetPlatformInfoResponse(1, 1, b"a", b"b").to_bytes()))
    with pytest.raises(RemoteProtocolError, match="GetQuoteResponse"):
        c2.next_event()
    c3 = QgsClientConnection()
    c3.send(GetPlatformInfoRequest())
    c3.receive_data(b"\x00\x00")
    c3.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="closed"):
        c3.next_event()
