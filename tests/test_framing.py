"""wire/framing.py: the 4-byte little-endian length prefix, any chunking, caps, truncation."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_quote_helper.errors import LocalProtocolError, RemoteProtocolError
from sgx_quote_helper.wire.framing import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, encode_frame

# sgx_get_supported_att_key_id_num() as Intel's client sends it (aesm-protocol.md §2)
INTEL_FRAME = bytes.fromhex("06000000aa0103489875")


def test_encode_is_little_endian_u32_prefix() -> None:
    assert encode_frame(bytes.fromhex("aa0103489875")) == INTEL_FRAME
    assert encode_frame(b"") == b"\0\0\0\0"
    assert encode_frame(b"x" * 0x0102) == b"\x02\x01\x00\x00" + b"x" * 0x102


def test_encode_refuses_over_limit() -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(b"x" * 11, max_frame_size=10)


def test_whole_frame_in_one_chunk() -> None:
    assert FrameDecoder().feed(INTEL_FRAME) == [bytes.fromhex("aa0103489875")]


def test_byte_at_a_time_equals_whole() -> None:
    stream = INTEL_FRAME + encode_frame(b"") + encode_frame(b"abc" * 100) + INTEL_FRAME
    whole = FrameDecoder().feed(stream)
    dec = FrameDecoder()
    pieces: list[bytes] = []
    for i in range(len(stream)):
        pieces.extend(dec.feed(stream[i : i + 1]))
    assert pieces == whole == [INTEL_FRAME[4:], b"", b"abc" * 100, INTEL_FRAME[4:]]
    assert not dec.in_frame
    dec.eof()  # clean end: no error


def test_intel_two_writes() -> None:
    dec = FrameDecoder()
    assert dec.feed(INTEL_FRAME[:4]) == []
    assert dec.in_frame
    assert dec.feed(INTEL_FRAME[4:]) == [INTEL_FRAME[4:]]


def test_oversized_prefix_refused_before_body() -> None:
    dec = FrameDecoder(max_frame_size=100)
    with pytest.raises(RemoteProtocolError):
        dec.feed((101).to_bytes(4, "little"))
    assert dec.buffered == 0
    with pytest.raises(RemoteProtocolError):  # poisoned
        dec.feed(b"\0\0\0\0")


def test_default_cap_is_one_mib() -> None:
    assert DEFAULT_MAX_FRAME_SIZE == 1 << 20
    dec = FrameDecoder()
    assert dec.feed((1 << 20).to_bytes(4, "little")) == []
    with pytest.raises(RemoteProtocolError):
        FrameDecoder().feed(b"\xff\xff\xff\xff")
    with pytest.raises(RemoteProtocolError):
        FrameDecoder().feed(((1 << 20) + 1).to_bytes(4, "little") + b"x" * 10)


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 9])
def test_truncated_frame_on_eof(cut: int) -> None:
    dec = FrameDecoder()
    assert dec.feed(INTEL_FRAME[:cut]) == []
    with pytest.raises(RemoteProtocolError):
        dec.eof()


@settings(max_examples=200, deadline=None)
@given(
    bodies=st.lists(st.binary(max_size=300), max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_any_chunking_gives_the_same_frames(bodies: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(b) for b in bodies)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    dec = FrameDecoder()
    got: list[bytes] = []
    for a, b in itertools.pairwise(points):
        got.extend(dec.feed(stream[a:b]))
    assert got == bodies
    dec.eof()


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64), limit=st.integers(min_value=0, max_value=40))
def test_fuzz_decoder_returns_frames_or_raises_our_error(data: bytes, limit: int) -> None:
    dec = FrameDecoder(max_frame_size=limit)
    try:
        for frame in dec.feed(data):
            assert len(frame) <= limit
        dec.eof()
    except RemoteProtocolError:
        pass
