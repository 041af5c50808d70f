"""The direct GetQuoteEx request reader decodes exactly what protobuf's parser decodes.

``decode_request`` reads the once-per-quote request without protobuf when it has the usual shape
(``messages._quote_ex_request``); anything else goes to the general path. Here both are compared
on every shape a client can write (each optional field present or not, any varint width) and on
arbitrary corruptions of them: the direct reader either declines (``None``) or agrees.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_quote_helper.errors import RemoteProtocolError
from sgx_quote_helper.wire import messages as m


def _general(body: bytes) -> object:
    try:
        return m._decode_request(body)
    except RemoteProtocolError as exc:
        return ("error", exc.fault)


def _decoded(body: bytes) -> object:
    try:
        return m.decode_request(body)
    except RemoteProtocolError as exc:
        return ("error", exc.fault)


u32 = st.integers(0, 0xFFFFFFFF)
opt_bytes = st.none() | st.binary(max_size=300)
requests = st.builds(
    m.GetQuoteExRequest,
    report=st.binary(max_size=600),
    att_key_id=opt_bytes,
    qe_report_info=opt_bytes,
    buf_size=u32,
    timeout=st.none() | u32,
)


@settings(max_examples=400, deadline=None)
@given(requests)
def test_every_well_formed_request_reads_directly_as_protobuf_reads_it(value: m.GetQuoteExRequest) -> None:
    body = m.encode_request(value)
    direct = m._quote_ex_request(body)
    assert direct is not None
    assert direct == m._decode_request(body) == value
    assert type(direct) is m.GetQuoteExRequest
    with pytest.raises(AttributeError):  # still a frozen value
        direct.buf_size = 1  # type: ignore[misc]


@settings(max_examples=1500, deadline=None)
@given(requests, st.data())
def test_corrupted_requests_decline_or_agree(value: m.GetQuoteExRequest, data: st.DataObject) -> None:
    body = bytearray(m.encode_request(value))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "append"]))
        pos = data.draw(st.integers(0, max(0, len(body) - 1)))
        if op == "flip" and body:
            body[pos] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del body[pos:]
        elif op == "insert":
            body[pos:pos] = data.draw(st.binary(min_size=1, max_size=6))
        else:
            body += data.draw(st.binary(min_size=1, max_size=12))
    raw = bytes(body)
    direct = m._quote_ex_request(raw) if raw[:2] == b"\x8a\x01" else None
    if direct is not None:
        assert direct == m._decode_request(raw)
    assert _decoded(raw) == _general(raw)


@pytest.mark.parametrize(
    "extra",
    [
        b"\x20\x05",  # buf_size twice: protobuf keeps the last
        b"\x50\x01",  # an unknown field 10
        b"\x0a\x00",  # report again
    ],
)
def test_unusual_shapes_go_to_the_general_path(extra: bytes) -> None:
    value = m.GetQuoteExRequest(bytes(432), bytes(256), None, 5000, 15000)
    sub = m.encode_request(value)[4:] + extra  # (envelope tag 2 bytes + length 2 bytes)
    body = b"\x8a\x01" + m._varint(len(sub)) + sub
    assert m._quote_ex_request(body) is None
    assert m.decode_request(body) == m._decode_request(body)


def test_oversized_varints_go_to_the_general_path() -> None:
    # buf_size as a 6-byte varint (protobuf truncates to 32 bits): only the general path judges it
    sub = b"\x0a\x00\x20" + b"\x81\x80\x80\x80\x80\x01"
    body = b"\x8a\x01" + m._varint(len(sub)) + sub
    assert m._quote_ex_request(body) is None
    assert m.decode_request(body) == m._decode_request(body)
