"""wire/messages.py at the byte level: Intel's frames, every request/response type, odd envelopes.

Expected bytes are built by hand with a tiny protobuf encoder below (independent of the generated
module), so these tests pin the wire format itself.
"""

from __future__ import annotations

import contextlib
import importlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_quote_helper.abi.codes import AesmStatus
from sgx_quote_helper.errors import LocalProtocolError, RemoteProtocolError
from sgx_quote_helper.wire import messages as m
from tests.protogen import differences, generate

ROOT = Path(__file__).resolve().parents[1]


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def vfield(num: int, value: int) -> bytes:
    return varint(num << 3) + varint(value)


def bfield(num: int, payload: bytes) -> bytes:
    return varint(num << 3 | 2) + varint(len(payload)) + payload


KEY = bytes(range(256))
REPORT = bytes([7]) * 432
INFO = bytes([9]) * 960

# (value, hand-made envelope bytes)
REQUESTS: list[tuple[m.Request, bytes]] = [
    (m.GetSupportedAttKeyIDNumRequest(15000), bytes.fromhex("aa0103489875")),
    (m.GetSupportedAttKeyIDsRequest(256, 15000), bfield(22, vfield(1, 256) + vfield(9, 15000))),
    (m.SelectAttKeyIDRequest(None, 15000), bfield(19, vfield(2, 15000))),
    (m.SelectAttKeyIDRequest(b"\0" * 8 + KEY, None), bfield(19, bfield(1, b"\0" * 8 + KEY))),
    (
        m.InitQuoteExRequest(KEY, True, 32, 15000),
        bfield(15, bfield(1, KEY) + vfield(3, 1) + vfield(4, 32) + vfield(9, 15000)),
    ),
    (
        m.InitQuoteExRequest(KEY, False, None, 15000),
        bfield(15, bfield(1, KEY) + vfield(3, 0) + vfield(9, 15000)),
    ),
    (m.GetQuoteSizeExRequest(KEY, 15000), bfield(16, bfield(1, KEY) + vfield(9, 15000))),
    (
        m.GetQuoteExRequest(REPORT, KEY, INFO, 5000, 15000),
        bfield(17, bfield(1, REPORT) + bfield(2, KEY) + bfield(3, INFO) + vfield(4, 5000) + vfield(9, 15000)),
    ),
    (
        m.GetQuoteExRequest(REPORT, KEY, None, 8192, None),
        bfield(17, bfield(1, REPORT) + bfield(2, KEY) + vfield(4, 8192)),
    ),
    (m.HelperProbeRequest(), bfield(1000, b"")),
]


@pytest.mark.parametrize(
    ("value", "wire"), REQUESTS, ids=lambda v: type(v).__name__ if not isinstance(v, bytes) else ""
)
def test_request_round_trip_bytes(value: m.Request, wire: bytes) -> None:
    assert m.encode_request(value) == wire
    assert m.decode_request(wire) == value


def test_intel_example_frame() -> None:
    frame = bytes.fromhex("06000000aa0103489875")
    from sgx_quote_helper.wire.framing import FrameDecoder

    (body,) = FrameDecoder().feed(frame)
    assert m.decode_request(body) == m.GetSupportedAttKeyIDNumRequest(timeout=15000)


@pytest.mark.parametrize("garbage", [140393291379042, 0xFFFFFFFFFFFFFFFF, 0])
def test_size_query_with_uninitialised_buf_size(garbage: int) -> None:
    wire = bfield(15, bfield(1, KEY) + vfield(3, 0) + vfield(4, garbage))
    req = m.decode_request(wire)
    assert isinstance(req, m.InitQuoteExRequest)
    assert (req.b_pub_key_id, req.buf_size) == (False, garbage)


def test_timeout_any_value_and_unknown_fields_ignored() -> None:
    wire = bfield(21, vfield(9, 30_000_000) + bfield(77, b"junk")) + bfield(40, b"more junk")
    assert m.decode_request(wire) == m.GetSupportedAttKeyIDNumRequest(30_000_000)


def test_missing_required_fields_read_as_defaults() -> None:
    assert m.decode_request(bfield(17, b"")) == m.GetQuoteExRequest(b"", None, None, 0, None)
    assert m.decode_request(bfield(22, b"")) == m.GetSupportedAttKeyIDsRequest(0)


def test_empty_and_unknown_envelopes() -> None:
    assert m.decode_request(b"") == m.EmptyRequest()
    assert m.decode_request(bfield(30, b"")) == m.UnknownRequest((30,))
    assert m.decode_request(bfield(20, b"")) == m.UnknownRequest((20,))  # 20 is a Response-only number
    two = bfield(21, b"") + bfield(16, b"")
    assert m.decode_request(two) == m.UnknownRequest((16, 21))


@pytest.mark.parametrize("field", [1, 2, 3, 4, 10, 11, 12, 13, 14, 18], ids=lambda f: m.request_name(f))
def test_legacy_requests_recognised(field: int) -> None:
    payload = bfield(1, b"abc") if field in (2, 3, 4, 14) else b""
    wire = bfield(field, payload + vfield(9, 15000))
    req = m.decode_request(wire)
    assert isinstance(req, m.LegacyRequest)
    assert req.field == field
    assert m.encode_request(req) == wire


@pytest.mark.parametrize(
    "garbage", [b"\xff", b"\x0a\x05ab", b"\xaa\x01\x05\x48", b"\x07", b"\x8a\x01\xff\xff\xff\xff\x0f"]
)
def test_garbage_is_remote_protocol_error(garbage: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        m.decode_request(garbage)


def code(n: int) -> bytes:
    return vfield(1, n)


RESPONSES: list[tuple[m.Response, bytes]] = [
    (m.GetSupportedAttKeyIDNumResponse(AesmStatus.SUCCESS, 1), bfield(21, code(0) + vfield(2, 1))),
    (
        m.GetSupportedAttKeyIDNumResponse(AesmStatus.SERVICE_UNAVAILABLE, 0),
        bfield(21, code(30) + vfield(2, 0)),
    ),
    (m.GetSupportedAttKeyIDsResponse(AesmStatus.SUCCESS, KEY), bfield(22, code(0) + bfield(2, KEY))),
    (m.GetSupportedAttKeyIDsResponse(AesmStatus.PARAMETER_ERROR), bfield(22, code(3))),
    (m.SelectAttKeyIDResponse(AesmStatus.SUCCESS, KEY), bfield(19, code(0) + bfield(2, KEY))),
    (m.SelectAttKeyIDResponse(AesmStatus.UNSUPPORTED_ATT_KEY_ID), bfield(19, code(38))),
    (
        m.InitQuoteExResponse(AesmStatus.SUCCESS, bytes(512), 32, bytes([5]) * 32),
        bfield(15, code(0) + bfield(2, bytes(512)) + vfield(3, 32) + bfield(4, bytes([5]) * 32)),
    ),
    (
        m.InitQuoteExResponse(AesmStatus.SUCCESS, bytes(512), 32),
        bfield(15, code(0) + bfield(2, bytes(512)) + vfield(3, 32)),
    ),
    (m.GetQuoteSizeExResponse(AesmStatus.SUCCESS, 4966), bfield(16, code(0) + vfield(2, 4966))),
    (m.GetQuoteSizeExResponse(AesmStatus.ATT_KEY_NOT_INITIALIZED), bfield(16, code(42))),
    (
        m.GetQuoteExResponse(AesmStatus.SUCCESS, b"Q" * 100, INFO),
        bfield(17, code(0) + bfield(2, b"Q" * 100) + bfield(3, INFO)),
    ),
    (m.GetQuoteExResponse(AesmStatus.INVALID_REPORT, None, INFO), bfield(17, code(47) + bfield(3, INFO))),
    (m.LegacyResponse(3, AesmStatus.SERVICE_UNAVAILABLE), bfield(3, code(30))),
    (m.LegacyResponse(18, AesmStatus.SERVICE_UNAVAILABLE), bfield(18, code(30))),
    (
        m.HelperProbeResponse(AesmStatus.SUCCESS, "sgx-quote-helper", "1.0", 42, "ab"),
        bfield(
            1000,
            code(0) + bfield(2, b"sgx-quote-helper") + bfield(3, b"1.0") + vfield(4, 42) + bfield(5, b"ab"),
        ),
    ),
]


@pytest.mark.parametrize(
    ("value", "wire"), RESPONSES, ids=lambda v: type(v).__name__ if not isinstance(v, bytes) else ""
)
def test_response_bytes_errorcode_first_number_order_one_field(value: m.Response, wire: bytes) -> None:
    assert m.encode_response(value) == wire
    assert m.decode_response(wire) == value


def test_error_code_zero_is_still_sent() -> None:
    # proto2 `required errorCode [default = 1]`: a missing one reads as 1 in Intel's C++ client
    assert m.encode_response(m.GetQuoteSizeExResponse(AesmStatus.SUCCESS)) == bfield(16, b"\x08\x00")


def test_decode_response_without_error_code_is_refused() -> None:
    with pytest.raises(RemoteProtocolError):
        m.decode_response(bfield(16, vfield(2, 10)))


def test_unknown_response_envelope() -> None:
    assert m.decode_response(b"") == m.UnknownResponse(())
    assert m.decode_response(bfield(20, code(1)) + bfield(21, code(0))) == m.UnknownResponse((20, 21))


def test_encode_refuses_what_cannot_be_sent() -> None:
    with pytest.raises(LocalProtocolError):
        m.encode_request(m.EmptyRequest())
    with pytest.raises(LocalProtocolError):
        m.encode_request(m.GetQuoteExRequest(REPORT, KEY, None, 1 << 32))
    with pytest.raises(LocalProtocolError):
        m.encode_response(m.LegacyResponse(99, AesmStatus.UNEXPECTED_ERROR))
    with pytest.raises(LocalProtocolError):
        m.encode_request(m.LegacyRequest(17, b""))


def _protobuf_quote_ex_response(value: m.GetQuoteExResponse) -> bytes:
    env = m.pb.Response()
    sub = env.getQuoteExRes
    sub.SetInParent()
    sub.errorCode = value.error_code
    if value.quote is not None:
        sub.quote = value.quote
    if value.qe_report_info is not None:
        sub.qe_report_info = value.qe_report_info
    return env.SerializeToString()  # type: ignore[no-any-return]


@given(
    st.one_of(st.sampled_from(list(AesmStatus)), st.integers(0, 0xFFFFFFFF)),
    st.one_of(st.none(), st.binary(max_size=300), st.binary(min_size=4000, max_size=5000)),
    st.one_of(st.none(), st.binary(max_size=600)),
)
@settings(max_examples=300, deadline=None)
def test_quote_ex_response_written_directly_is_what_protobuf_writes(
    code: int, quote: bytes | None, info: bytes | None
) -> None:
    value = m.GetQuoteExResponse(code, quote, info)
    wire = m.encode_response(value)
    assert wire == _protobuf_quote_ex_response(value)
    assert m.decode_response(wire) == m.GetQuoteExResponse(int(code), quote, info)


@pytest.mark.parametrize(
    "value",
    [m.GetQuoteExResponse(-1), m.GetQuoteExResponse(1 << 32), m.GetQuoteExResponse(0, "text")],  # type: ignore[arg-type]
)
def test_quote_ex_response_protobuf_refuses_is_refused(value: m.GetQuoteExResponse) -> None:
    with pytest.raises(LocalProtocolError):
        m.encode_response(value)


def test_field_numbers_match_intel() -> None:
    aesm_pb2: Any = importlib.import_module("sgx_quote_helper.wire.aesm_pb2")

    req = {f.name: f.number for f in aesm_pb2.Request.DESCRIPTOR.fields}
    assert req["initQuoteExReq"] == 15 and req["getQuoteSizeExReq"] == 16 and req["getQuoteExReq"] == 17
    assert req["selectAttKeyIDReq"] == 19 and req["getSupportedAttKeyIDNumReq"] == 21
    assert req["getSupportedAttKeyIDsReq"] == 22 and req["getLicTokenReq"] == 3
    init = {f.name: f.number for f in aesm_pb2.Request.InitQuoteExRequest.DESCRIPTOR.fields}
    assert init == {"att_key_id": 1, "b_pub_key_id": 3, "buf_size": 4, "timeout": 9}
    sel = {f.name: f.number for f in aesm_pb2.Request.SelectAttKeyIDRequest.DESCRIPTOR.fields}
    assert sel == {"att_key_id_list": 1, "timeout": 2}
    assert aesm_pb2.DESCRIPTOR.package == "aesm.message"
    for f in aesm_pb2.Response.DESCRIPTOR.fields:
        ec = f.message_type.fields_by_name["errorCode"]
        assert ec.number == 1 and ec.default_value == 1, f.name


def test_generated_module_is_current(tmp_path: Path) -> None:
    # regenerated with the installed grpcio-tools and compared by meaning (tests/protogen.py)
    proto = "sgx_quote_helper/wire/aesm.proto"
    generate(ROOT / "src", proto, tmp_path)
    stale = differences(
        tmp_path / "sgx_quote_helper/wire", ROOT / "src/sgx_quote_helper/wire", ("aesm_pb2.py",)
    )
    assert stale == [], "aesm_pb2.py is stale: python -m grpc_tools.protoc -I src --python_out=src " + proto
    # and the comparison can fail: another package name is another descriptor
    changed = tmp_path / "changed"
    (changed / "sgx_quote_helper/wire").mkdir(parents=True)
    text = (ROOT / "src" / proto).read_text()
    assert "package aesm.message;" in text
    (changed / proto).write_text(text.replace("package aesm.message;", "package aesm.changed;", 1))
    out = tmp_path / "out"
    out.mkdir()
    generate(changed, proto, out)
    assert differences(
        out / "sgx_quote_helper/wire", ROOT / "src/sgx_quote_helper/wire", ("aesm_pb2.py",)
    ) == ["aesm_pb2.py"]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_decode_request_parses_or_raises_our_error(data: bytes) -> None:
    try:
        req = m.decode_request(data)
    except RemoteProtocolError:
        return
    assert isinstance(
        req,
        m.GetSupportedAttKeyIDNumRequest
        | m.GetSupportedAttKeyIDsRequest
        | m.SelectAttKeyIDRequest
        | m.InitQuoteExRequest
        | m.GetQuoteSizeExRequest
        | m.GetQuoteExRequest
        | m.LegacyRequest
        | m.HelperProbeRequest
        | m.EmptyRequest
        | m.UnknownRequest,
    )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_decode_response_parses_or_raises_our_error(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        m.decode_response(data)
