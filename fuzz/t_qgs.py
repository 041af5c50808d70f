"""QGS targets: framing/raw-mode dispatch of the server connection, and every message inflater.

Invariants: the server connection gives the same event however the stream is chunked (a
differential against one feed), never raises for any input, and every event is one it documents;
a framed request it accepts re-encodes to the bytes sent (GET_QUOTE, GET_COLLATERAL); answering it
yields a response Intel's inflater accepts; each inflater parses or raises QgsMessageError with an
Intel error code.
"""

from __future__ import annotations

from functools import cache

from hypothesis import strategies as st

from sgx_quote_helper.abi import qgs as q
from sgx_quote_helper.errors import QgsMessageError, RemoteProtocolError
from sgx_quote_helper.wire.qgs import (
    NEED_DATA,
    CloseConnection,
    MalformedRequest,
    ProbeAnswer,
    ProbeReceived,
    QgsProbeClient,
    QgsServerConnection,
    RawReportReceived,
    RequestReceived,
    ServerEvent,
    encode_frame,
    probe_request,
)

from .t_wire import chunks, decode_frames_input
from .target import Target

#: a small cap so the fuzzer reaches the oversized-prefix branch
MAX_MESSAGE = 4096


def _run(pieces: list[bytes]) -> tuple[ServerEvent, QgsServerConnection]:
    conn = QgsServerConnection(0.0, max_message=MAX_MESSAGE)
    event: ServerEvent = NEED_DATA
    for piece in pieces:
        conn.receive_data(piece, now=1.0)
        event = conn.next_event()
        if event is not NEED_DATA:
            return event, conn
    conn.receive_data(b"")
    return conn.next_event(), conn


def _answer(event: ServerEvent, conn: QgsServerConnection) -> None:
    if isinstance(event, RequestReceived):
        req = event.request
        out = conn.send_error()
        q.decode_response(out[4:]) if event.type != q.MsgType.GET_PLATFORM_INFO_REQ else None
        if isinstance(req, (q.GetQuoteRequest, q.GetCollateralRequest)):
            assert encode_frame(req.to_bytes())[4:] == req.to_bytes()
    elif isinstance(event, MalformedRequest):
        assert (
            q.MsgError.INVALID_PARAMETER <= event.code <= q.MsgError.INVALID_CODE
            or event.code == q.MsgError.UNEXPECTED
        )
        conn.send_error()
    elif isinstance(event, RawReportReceived):
        assert len(event.report) == 1024
        assert conn.send_raw_quote(b"quote") == b"quote"
    elif isinstance(event, ProbeReceived):
        answer = ProbeAnswer("sgx-quote-helper", "0", 1, "id", 2, "serving")
        client = QgsProbeClient()
        client.send()
        client.receive_data(conn.send_probe_answer(answer))
        assert client.next_event() == answer
    else:
        assert isinstance(event, CloseConnection) and event.reason


def check_qgs(inp: tuple[bytes, tuple[int, ...]]) -> int:
    stream, cuts = inp
    whole, _ = _run([stream])
    chunked, conn2 = _run(chunks(stream, cuts))
    if isinstance(whole, CloseConnection):
        assert isinstance(chunked, CloseConnection), "chunking changed a close into an event"
    else:
        assert chunked == whole, "chunking changed the event"
    _answer(chunked, conn2)
    # every inflater on the bytes after a would-be prefix
    body = stream[4:]
    for cls in (*(c for c, _ in q.REQUESTS.values()), *q.RESPONSES.values()):
        try:
            cls.from_bytes(body)
        except QgsMessageError as exc:
            assert 0x12001 <= exc.code <= 0x12007
    return 1


@cache
def qgs_seeds() -> tuple[bytes, ...]:
    report = b"\x81" + bytes(1023)
    messages = [
        q.GetQuoteRequest(report).to_bytes(),
        q.GetQuoteRequest(report, q.TDX_SGX_ECDSA_ATTESTATION_ID).to_bytes(),
        q.GetCollateralRequest(b"\x00\xa0\xa5\x51\x00\x00", b"processor\0").to_bytes(),
        q.GetPlatformInfoRequest().to_bytes(),
        q.GetQuoteResponse(b"quote").to_bytes(),
        q.GetPlatformInfoResponse(4, 13, b"\x01" * 16, b"\x02" * 16).to_bytes(),
        q.GetCollateralResponse(tuple(b"x" for _ in range(7))).to_bytes(),
    ]
    seeds = [b"\x00" + encode_frame(m) for m in messages]
    seeds += [b"\x01" + (20).to_bytes(2, "little") + encode_frame(messages[0]), b"\x00" + report]
    seeds += [b"\x00" + probe_request(), b"\x00" + probe_request()[:-1] + b"?"]
    return tuple(seeds)


def _structured() -> st.SearchStrategy[tuple[bytes, tuple[int, ...]]]:
    msg = st.sampled_from([s[1:] for s in qgs_seeds() if s[0] == 0])
    mutated = st.tuples(msg, st.integers(0, 60), st.integers(0, 255)).map(
        lambda t: t[0][: t[1]] + bytes([t[2]]) + t[0][t[1] + 1 :]
    )
    stream = st.one_of(msg, mutated, st.binary(min_size=1020, max_size=1030), st.binary(max_size=64))
    return st.tuples(stream, st.lists(st.integers(0, 2048), max_size=8).map(tuple))


QGS = Target(
    "qgs",
    "wire.qgs.QgsServerConnection (framing vs raw mode, chunking differential) and abi.qgs inflaters",
    check_qgs,
    qgs_seeds,
    decode=decode_frames_input,
    max_size=2200,
    extra=_structured,
)


def _probe_client(pieces: list[bytes]) -> object:
    client = QgsProbeClient()
    client.send()
    try:
        for piece in pieces:
            client.receive_data(piece)
            event = client.next_event()
            if event is not NEED_DATA:
                return event
        client.receive_data(b"")
        return client.next_event()
    except RemoteProtocolError as exc:
        return ("error", str(exc))


def check_qgs_probe(inp: tuple[bytes, tuple[int, ...]]) -> int:
    """The probe's asking side on any reply: an answer, a close, or RemoteProtocolError; the same
    however the reply is chunked."""
    stream, cuts = inp
    whole = _probe_client([stream])
    chunked = _probe_client(chunks(stream, cuts))
    assert isinstance(whole, (ProbeAnswer, CloseConnection, tuple)), whole
    if isinstance(whole, tuple):
        assert isinstance(chunked, tuple), "chunking changed an error into an event"
    else:
        assert type(chunked) is type(whole) and (isinstance(whole, CloseConnection) or chunked == whole)
    return 1


@cache
def probe_seeds() -> tuple[bytes, ...]:
    good = ProbeAnswer("sgx-quote-helper", "0.1.0", 42, "abcd", 1, "serving").to_bytes()
    return (
        b"\x00" + good,
        b"\x00" + good[:-3] + b"}}}",
        b"\x00" + good.replace(b'"pid":42', b'"pid":-1'),
        b"\x00" + good[:30],
        b"\x00",
    )


QGS_PROBE = Target(
    "qgs-probe",
    "wire.qgs.QgsProbeClient / ProbeAnswer.from_message: what a QGS socket answers our probe",
    check_qgs_probe,
    probe_seeds,
    decode=decode_frames_input,
    max_size=5000,
)

__all__ = ["QGS", "QGS_PROBE", "check_qgs", "check_qgs_probe", "probe_seeds", "qgs_seeds"]
