"""wire/connection.py: the sans-I/O AESM connection, without sockets (h11's test style: whole vs
byte-at-a-time, every violation by its fault, deadlines on a fake clock, a client and a server
wired back to back)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_quote_helper.abi.codes import AesmStatus
from sgx_quote_helper.errors import Fault, LocalProtocolError, RemoteProtocolError
from sgx_quote_helper.wire import messages as m
from sgx_quote_helper.wire.connection import (
    EXPIRED,
    NEED_DATA,
    PEER_CLOSED,
    ClientConnection,
    ProtocolViolation,
    ServerConnection,
)
from sgx_quote_helper.wire.framing import encode_frame

REQ = m.GetQuoteExRequest(bytes(432), bytes(256), bytes(960), 5000, 15000)
RES = m.GetQuoteExResponse(AesmStatus.SUCCESS, b"q" * 5000, bytes(960))


def frame(value: m.Request) -> bytes:
    return encode_frame(m.encode_request(value))


def events(conn: ServerConnection | ClientConnection) -> list[object]:
    out: list[object] = []
    while True:
        ev = conn.next_event()
        out.append(ev)
        if ev is NEED_DATA or ev is PEER_CLOSED or isinstance(ev, ProtocolViolation):
            return out


def feed(conn: ServerConnection | ClientConnection, data: bytes, chunk: int) -> list[object]:
    got: list[object] = []
    for i in range(0, len(data), chunk):
        conn.receive_data(data[i : i + chunk], 0.0)
        got.extend(e for e in events(conn) if e is not NEED_DATA)
        if got and isinstance(got[-1], ProtocolViolation):
            return got
    conn.receive_data(b"", 0.0)
    got.extend(events(conn))
    return got


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 5, 7, 1 << 20])
def test_byte_at_a_time_is_the_same_as_whole(chunk: int) -> None:
    stream = frame(REQ) + frame(m.GetSupportedAttKeyIDNumRequest(15000)) + frame(m.HelperProbeRequest())
    got = feed(ServerConnection(), stream, chunk)
    assert got == [REQ, m.GetSupportedAttKeyIDNumRequest(15000), m.HelperProbeRequest(), PEER_CLOSED]


def test_client_and_server_back_to_back() -> None:
    client, server = ClientConnection(), ServerConnection()
    server.receive_data(client.send(REQ, 1.0), 1.0)
    assert server.next_event() == REQ and server.owed == 1
    reply = server.send(RES, 2.0)
    assert server.owed == 0 and server.served == 1 and server.last_activity == 2.0
    for i in range(len(reply)):  # the client too, one byte at a time
        assert client.next_event() is NEED_DATA
        client.receive_data(reply[i : i + 1], 0.0)
    assert client.next_event() == RES and client.owed == 0
    with pytest.raises(LocalProtocolError):  # one reply awaited at a time
        client.send(REQ)
        client.send(REQ)


def test_every_typed_request_knows_its_response_and_failure() -> None:
    for req in (
        m.GetSupportedAttKeyIDNumRequest(),
        m.GetSupportedAttKeyIDsRequest(256),
        m.SelectAttKeyIDRequest(),
        m.InitQuoteExRequest(bytes(256), True, 32),
        m.GetQuoteSizeExRequest(bytes(256)),
        REQ,
        m.HelperProbeRequest(),
        m.LegacyRequest(2),
    ):
        failed = req.failure(AesmStatus.BUSY)
        assert type(failed) is type(req).Response
        assert failed.error_code == AesmStatus.BUSY
        assert m.response_field(failed) == m.request_field(req)
    assert REQ.failure(18).qe_report_info == REQ.qe_report_info  # echoed as aesmd does
    assert m.InitQuoteExRequest(None, False, 999).failure(18).pub_key_id_size == 32
    assert m.InitQuoteExRequest(None, True, 64).failure(18).pub_key_id_size == 64
    assert m.EmptyRequest().failure(18) is None and m.UnknownRequest((5, 6)).failure(18) is None
    assert m.encode_response(m.UnknownRequest((5000,)).failure(30)) == m.raw_envelope(5000, b"\x08\x1e")


def violation(conn: ServerConnection | ClientConnection) -> ProtocolViolation:
    ev = conn.next_event()
    assert isinstance(ev, ProtocolViolation), ev
    assert conn.next_event() is ev  # dead: the same violation again
    return ev


@pytest.mark.parametrize(
    "data",
    [((1 << 20) + 1).to_bytes(4, "little"), (0xFFFFFFFF).to_bytes(4, "little") + b"x" * 100],
    ids=["just-over", "4GiB"],
)
def test_oversized_prefix(data: bytes) -> None:
    conn = ServerConnection()
    conn.receive_data(frame(REQ) + data, 0.0)  # pre-empts the request before it (rule 1)
    assert violation(conn).fault == Fault.OVERSIZED
    assert conn.buffered == 0


@pytest.mark.parametrize(
    ("data", "fault"),
    [
        (encode_frame(b"\xff\xff\xff"), Fault.MALFORMED),
        (encode_frame(b""), Fault.UNEXPECTED),  # empty envelope
        (encode_frame(m.raw_envelope(777, b"")), Fault.UNEXPECTED),  # unknown envelope
        (frame(REQ)[:-1], Fault.TRUNCATED),  # truncated at EOF
        (b"\x05\x00", Fault.TRUNCATED),  # EOF inside the prefix
    ],
    ids=["garbage", "empty", "unknown", "truncated-body", "truncated-prefix"],
)
def test_violations_in_the_body(data: bytes, fault: str) -> None:
    conn = ServerConnection()
    conn.receive_data(frame(m.HelperProbeRequest()) + data, 0.0)
    conn.receive_data(b"", 0.0)
    if fault != Fault.TRUNCATED:  # found on its turn: the request before it is answered (rule 1)
        assert conn.next_event() == m.HelperProbeRequest()
    v = violation(conn)
    assert v.fault == fault and isinstance(v.error, RemoteProtocolError) and v.reason


@pytest.mark.parametrize(
    ("reply", "fault"),
    [
        (encode_frame(m.encode_response(m.GetQuoteSizeExResponse(AesmStatus.SUCCESS, 5))), Fault.UNEXPECTED),
        (encode_frame(bytes.fromhex("aa01021001")), Fault.MALFORMED),  # no errorCode
        (encode_frame(b"\xff\xff"), Fault.MALFORMED),
        (b"\x05\x00\x00\x00ab", Fault.TRUNCATED),
        ((5 << 20).to_bytes(4, "little"), Fault.OVERSIZED),
    ],
)
def test_client_side_faults_are_the_same_faults(reply: bytes, fault: str) -> None:
    conn = ClientConnection(max_frame_size=4 << 20)
    conn.send(REQ)
    conn.receive_data(reply, 0.0)
    conn.receive_data(b"", 0.0)
    assert violation(conn).fault == fault


def test_client_sees_a_clean_close_before_any_reply_byte() -> None:
    conn = ClientConnection()
    conn.send(REQ)
    conn.receive_data(b"", 0.0)
    assert conn.next_event() is PEER_CLOSED


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self, dt: float = 0.0) -> float:
        self.t += dt
        return self.t


def test_frame_timeout() -> None:
    now = Clock()
    conn = ServerConnection(frame_timeout=1.0, idle_timeout=5.0, now=now())
    conn.receive_data(frame(REQ)[:10], now(0.5))
    assert conn.next_deadline() == pytest.approx(101.5)
    assert conn.handle_timeout(now(0.9)) is None
    conn.receive_data(frame(REQ)[10:20], now(0.5))  # more bytes of the same frame: the clock runs on
    v = conn.handle_timeout(now(0.2))
    assert isinstance(v, ProtocolViolation) and v.fault == Fault.FRAME_TIMEOUT
    assert violation(conn) is v


def test_idle_timeout_before_any_request_is_a_violation_after_one_it_expires() -> None:
    now = Clock()
    conn = ServerConnection(frame_timeout=1.0, idle_timeout=5.0, now=now())
    assert conn.next_deadline() == pytest.approx(105.0)
    assert conn.handle_timeout(now(5.0)) is None
    v = conn.handle_timeout(now(0.01))
    assert isinstance(v, ProtocolViolation) and v.fault == Fault.IDLE_TIMEOUT

    conn = ServerConnection(frame_timeout=1.0, idle_timeout=5.0, now=now())
    conn.receive_data(frame(REQ), now(1))
    assert conn.next_event() == REQ
    assert conn.handle_timeout(now(60)) is None  # a request is owed: never idle (rule 2)
    conn.send(RES, now())
    assert conn.handle_timeout(now(5.01)) is EXPIRED


def test_draining_closes_served_connections_at_once_and_others_soon() -> None:
    now = Clock()
    served = ServerConnection(frame_timeout=1.0, idle_timeout=30.0, now=now())
    served.receive_data(frame(REQ), now())
    served.next_event()
    served.send(RES, now())
    fresh = ServerConnection(frame_timeout=1.0, idle_timeout=30.0, now=now())
    assert served.handle_timeout(now(0.01), draining=True) is EXPIRED
    assert fresh.handle_timeout(now(), draining=True) is None
    assert fresh.handle_timeout(now(1.0), draining=True) is EXPIRED


def test_a_peer_that_does_not_read_its_reply_times_out() -> None:
    now = Clock()
    conn = ServerConnection(frame_timeout=1.0, idle_timeout=5.0, now=now())
    conn.receive_data(frame(REQ) * 3, now())
    conn.next_event()
    conn.send(RES, now())
    conn.writing_paused(now(), pending=1 << 20)
    assert conn.write_blocked and conn.next_deadline() == pytest.approx(105.0)
    conn.write_progress(now(4), pending=900_000)  # it read some: the clock restarts
    assert conn.handle_timeout(now(4)) is None
    conn.write_progress(now(0.5), pending=900_000)  # nothing more read
    v = conn.handle_timeout(now(0.6))  # queued requests do not keep it alive
    assert isinstance(v, ProtocolViolation) and v.fault == Fault.REPLY_TIMEOUT
    assert conn.queued == 0


def test_a_peer_that_reads_again_is_not_blocked() -> None:
    now = Clock()
    conn = ServerConnection(frame_timeout=1.0, idle_timeout=5.0, now=now())
    conn.writing_paused(now(), pending=1 << 20)
    conn.writing_resumed(now(3))
    assert not conn.write_blocked and conn.handle_timeout(now(4)) is None


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), chunk=st.integers(1, 64))
def test_fuzz_any_bytes_give_events_or_a_violation_never_an_exception(data: bytes, chunk: int) -> None:
    whole = ServerConnection()
    whole.receive_data(data, 0.0)
    whole.receive_data(b"", 0.0)
    expected = events(whole)
    pieces = ServerConnection()
    got = feed(pieces, data, chunk)
    assert [type(e) for e in got] == [type(e) for e in expected]
    assert isinstance(got[-1], ProtocolViolation) or got[-1] is PEER_CLOSED
