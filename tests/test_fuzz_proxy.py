"""Fuzz: the proxy's error replies for arbitrary request bytes (outside input) never crash."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_quote_helper.abi.codes import AesmStatus
from sgx_quote_helper.server.proxy import error_reply
from sgx_quote_helper.wire import messages as m


def _envelopes() -> st.SearchStrategy[bytes]:
    """Mostly well-formed envelopes (field, length, payload) plus raw noise."""
    field = st.integers(min_value=1, max_value=2000)
    payload = st.binary(max_size=64)

    def envelope(f: int, p: bytes) -> bytes:
        def varint(n: int) -> bytes:
            out = bytearray()
            while n > 0x7F:
                out.append(n & 0x7F | 0x80)
                n >>= 7
            out.append(n)
            return bytes(out)

        return varint(f << 3 | 2) + varint(len(p)) + p

    return st.one_of(st.binary(max_size=200), st.builds(envelope, field, payload))


@settings(max_examples=400, deadline=None)
@given(_envelopes())
def test_error_reply_is_a_response_of_the_same_field_or_none(body: bytes) -> None:
    reply = error_reply(body, AesmStatus.SERVICE_UNAVAILABLE)
    if reply is None:
        return
    decoded = m.decode_response(reply)
    request = m.decode_request(body)
    if isinstance(request, m.UnknownRequest):  # one field we could not parse: {field: {1: 30}}
        (number,) = request.fields
        if isinstance(decoded, m.UnknownResponse):
            assert decoded.fields == (number,)
            return
        assert m.response_field(decoded) == number  # a number we know, sent with another wire type
    else:
        assert m.response_field(decoded) == m.request_field(request)
    assert decoded.error_code == AesmStatus.SERVICE_UNAVAILABLE  # type: ignore[union-attr]
