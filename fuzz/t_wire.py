"""Daemon-facing targets: the frame decoder under random chunkings, and protobuf requests.

Both push every request they decode through a real :class:`AesmService` (FakeEngine behind it) and
check the answer: a response of the request's own type that encodes and decodes back to itself,
or "close" (None) only for an empty or unknown envelope.
"""

from __future__ import annotations

import itertools
from functools import cache

from hypothesis import strategies as st

from sgx_quote_helper.abi.keyid import AttKeyId, AttKeyIdList, QeReportInfo
from sgx_quote_helper.abi.report import Report, ReportBody, TargetInfo
from sgx_quote_helper.errors import Fault, RemoteProtocolError
from sgx_quote_helper.service import AesmService
from sgx_quote_helper.testing.fakes import FakeEngine
from sgx_quote_helper.wire import messages as m
from sgx_quote_helper.wire.connection import (
    NEED_DATA,
    PEER_CLOSED,
    ClientConnection,
    ProtocolViolation,
    ServerConnection,
)
from sgx_quote_helper.wire.framing import FrameDecoder, encode_frame

from .target import Target, ours

#: small, so that random length prefixes hit the limit often
MAX_FRAME = 4096
KEY = AttKeyId.ecdsa_p256_qe3().to_bytes()


@cache
def service() -> AesmService:
    """One service for the whole run (as the daemon has one)."""
    return AesmService(FakeEngine(initialised=True), version="fuzz", instance_id="fuzz")


def valid_requests() -> list[m.Request]:
    """One of every request kind with plausible fields (the synthesized seeds)."""
    rep = Report(ReportBody(report_data=b"\x42" * 64), key_id=bytes(32), mac=b"\x01" * 16).to_bytes()
    return [
        m.GetSupportedAttKeyIDNumRequest(15000),
        m.GetSupportedAttKeyIDsRequest(256, 15000),
        m.SelectAttKeyIDRequest(AttKeyIdList((AttKeyId.ecdsa_p256_qe3(),)).to_bytes(), 15000),
        m.SelectAttKeyIDRequest(None, None),
        m.InitQuoteExRequest(KEY, True, 32, 15000),
        m.InitQuoteExRequest(KEY, False, None, 15000),
        m.GetQuoteSizeExRequest(KEY, 15000),
        m.GetQuoteExRequest(rep, KEY, None, 8192, 15000),
        m.GetQuoteExRequest(
            rep, KEY, QeReportInfo(b"\x07" * 16, TargetInfo(mr_enclave=b"\x08" * 32)).to_bytes(), 8192, 15000
        ),
        m.GetQuoteExRequest(bytes(432), KEY, None, 8192, None),
        m.HelperProbeRequest(1000),
        m.LegacyRequest(1, b""),
    ]


@cache
def request_seeds() -> tuple[bytes, ...]:
    """Encoded request bodies, Intel's exact GetSupportedAttKeyIDNum bytes, the empty envelope."""
    return (*(m.encode_request(r) for r in valid_requests()), bytes.fromhex("aa0103489875"), b"")


def check_answer(request: m.Request) -> None:
    """The service's answer to ``request`` is valid (see the module doc)."""
    response = service().handle(request)
    if response is None:
        assert isinstance(request, m.EmptyRequest | m.UnknownRequest), f"no answer to {request!r}"
        return
    assert m.response_field(response) == m.request_field(request), (request, response)
    back = m.decode_response(m.encode_response(response))
    assert back == response, (response, back)
    quoted = isinstance(response, m.GetQuoteExResponse) and response.error_code == 0
    if isinstance(request, m.GetQuoteExRequest) and isinstance(response, m.GetQuoteExResponse) and quoted:
        assert response.quote is not None and len(response.quote) <= request.buf_size


def check_request(body: bytes) -> int:
    """decode_request parses or raises RemoteProtocolError; the service answers what parses."""
    request = ours(m.decode_request, body)
    if request is not None:
        check_answer(request)
    return 1


# ---------------------------------------------------------------- frames


def decode_frames_input(data: bytes) -> tuple[bytes, tuple[int, ...]]:
    """Raw bytes -> (stream, cut points): byte 0 says how many u16 cut points follow (0-8)."""
    if not data:
        return b"", ()
    k = data[0] % 9
    cuts = tuple(int.from_bytes(data[1 + 2 * i : 3 + 2 * i], "little") for i in range(k))
    return data[1 + 2 * k :], cuts


def chunks(stream: bytes, cuts: tuple[int, ...]) -> list[bytes]:
    """``stream`` split at the cut points (taken modulo its length, in order)."""
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    return [stream[a:b] for a, b in itertools.pairwise(points)]


def check_frames(inp: tuple[bytes, tuple[int, ...]]) -> int:
    """The decoder gives the same frames however the stream is chunked, or fails the same way;
    every frame it gives is answered validly by the service."""
    stream, cuts = inp
    whole = FrameDecoder(MAX_FRAME)
    try:
        expected: list[bytes] | None = whole.feed(stream)
    except RemoteProtocolError:
        expected = None
    decoder = FrameDecoder(MAX_FRAME)
    got: list[bytes] = []
    failed = False
    for piece in chunks(stream, cuts):
        try:
            got += decoder.feed(piece)
        except RemoteProtocolError:
            failed = True
            break
    if expected is None:
        assert failed, "the whole stream failed, the chunked one did not"
    else:
        assert not failed and got == expected, "chunking changed the frames"
        assert decoder.buffered == whole.buffered and decoder.in_frame == whole.in_frame
        ours(decoder.eof)
    for body in got:
        check_request(body)
    return max(len(got), 1)


@cache
def frame_seeds() -> tuple[bytes, ...]:
    """Raw frames-target inputs: 0-3 cut points, then streams of 1-4 valid frames."""
    bodies = request_seeds()
    seeds = []
    for i, body in enumerate(bodies):
        stream = b"".join(encode_frame(b) for b in (body, *bodies[i + 1 : i + 1 + i % 4]))
        cuts = [4, 5, len(stream) // 2][: i % 4]
        seeds.append(bytes([len(cuts)]) + b"".join(c.to_bytes(2, "little") for c in cuts) + stream)
    return tuple(seeds)


def _structured_frames() -> st.SearchStrategy[tuple[bytes, tuple[int, ...]]]:
    body = st.sampled_from(list(request_seeds())) | st.binary(max_size=64)
    frame = body.map(encode_frame) | st.binary(min_size=4, max_size=8)  # valid or a raw prefix
    stream = st.lists(frame, max_size=6).map(b"".join)
    return st.tuples(stream, st.lists(st.integers(0, 4096), max_size=8).map(tuple))


FRAMES = Target(
    "frames",
    "wire.framing.FrameDecoder fed random chunkings (differential vs. one feed); each frame through "
    "decode_request and the service",
    check_frames,
    frame_seeds,
    decode=decode_frames_input,
    max_size=4096,
    extra=_structured_frames,
)

# ---------------------------------------------------------------- the connection core


def _events(conn: ServerConnection | ClientConnection, pieces: list[bytes]) -> list[object]:
    out: list[object] = []
    for piece in [*pieces, b""]:  # b"": the peer closes at the end
        conn.receive_data(piece, 0.0)
        while True:
            ev = conn.next_event()
            if ev is NEED_DATA:
                break
            out.append(ev)
            if ev is PEER_CLOSED or isinstance(ev, ProtocolViolation):
                return out
    raise AssertionError("no end event after EOF")


def check_connection(inp: tuple[bytes, tuple[int, ...]]) -> int:
    """The sans-I/O connection (both sides) gives the same events however the stream is chunked,
    ends in a clean close or a violation whose error is a RemoteProtocolError (never an exception),
    and every request it gives is answered validly by the service."""
    stream, cuts = inp
    pieces = chunks(stream, cuts)
    whole = _events(ServerConnection(max_frame_size=MAX_FRAME), [stream] if stream else [])
    got = _events(ServerConnection(max_frame_size=MAX_FRAME), pieces)
    # a violation found on receipt (an oversized prefix, EOF inside a frame) drops the frames that
    # arrived with it (rule 1 of wire.connection): fed whole, fewer requests come out before it
    w_ok = [e for e in whole if not isinstance(e, ProtocolViolation)]
    g_ok = [e for e in got if not isinstance(e, ProtocolViolation)]
    assert g_ok[: len(w_ok)] == w_ok, (got, whole)
    w_end, end = whole[-1], got[-1]
    if not (isinstance(w_end, ProtocolViolation) and w_end.fault in (Fault.OVERSIZED, Fault.TRUNCATED)):
        assert g_ok == w_ok and type(end) is type(w_end), (got, whole)
        if isinstance(end, ProtocolViolation):
            assert end.fault == w_end.fault  # type: ignore[union-attr]
    if isinstance(end, ProtocolViolation):
        assert isinstance(end.error, RemoteProtocolError)
    for ev in got[:-1]:
        check_answer(ev)  # type: ignore[arg-type]
    client = ClientConnection(max_frame_size=MAX_FRAME)
    client.send(m.GetQuoteExRequest(bytes(432), KEY, None, 8192))
    reply = _events(client, pieces)
    first = reply[0]  # the awaited reply is of the request's type, or the exchange failed cleanly
    assert isinstance(first, m.GetQuoteExResponse | ProtocolViolation) or first is PEER_CLOSED, first
    return max(len(got), 1)


CONNECTION = Target(
    "connection",
    "wire.connection (server and client side) fed random chunkings (differential vs. one feed), "
    "ending in a clean close or a ProtocolViolation; each request through the service",
    check_connection,
    frame_seeds,
    decode=decode_frames_input,
    max_size=4096,
    extra=_structured_frames,
)

REQUESTS = Target(
    "requests",
    "wire.messages.decode_request (protobuf Request envelope), answered by the service",
    check_request,
    request_seeds,
    max_size=2048,
)

__all__ = ["CONNECTION", "FRAMES", "REQUESTS", "check_answer", "service", "valid_requests"]
