"""Byte-level AESM conformance (aesm-protocol.md §2-§8): exact request bytes in, exact reply bytes out.

Every reply is also read with a hand-written parser shaped like Open Enclave's legacy client
(exactly one top-level field, errorCode first, fields in number order) and checked against the
length rules of Intel's, Enarx's, oasis-core's and Fortanix's clients.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sgx_quote_helper.abi.keyid import AttKeyId
from sgx_quote_helper.service import AesmService
from sgx_quote_helper.testing.fakes import FakeEngine, fake_quote
from sgx_quote_helper.wire import messages as m
from sgx_quote_helper.wire.framing import FrameDecoder, encode_frame

from ._aesm_helpers import raw_connect, read_frame, report, short_dir
from .test_messages import bfield, varint, vfield

KEY = AttKeyId.ecdsa_p256_qe3().to_bytes()
TIMEOUTS = [None, 0, 15000, 600000, 1_000_000, 30_000_000, 2**32 - 1]


def answer(body: bytes, engine: FakeEngine | None = None) -> bytes | None:
    """Request bytes -> reply bytes through the real codec and service (None: close, no reply)."""
    svc = AesmService(engine or FakeEngine(initialised=True))
    try:
        request = m.decode_request(body)
    except Exception:
        return None
    response = svc.handle(request)
    return None if response is None else m.encode_response(response)


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def oe_parse(reply: bytes, field: int) -> list[tuple[int, int | bytes]]:
    """Open Enclave legacy style: one top-level field == ``field``, errorCode first, fields ascending."""
    tag, i = _read_varint(reply, 0)
    assert tag == field << 3 | 2
    size, i = _read_varint(reply, i)
    assert i + size == len(reply), "exactly one top-level field"
    inner, j = reply[i:], 0
    out: list[tuple[int, int | bytes]] = []
    while j < len(inner):
        t, j = _read_varint(inner, j)
        if t & 7 == 0:
            v, j = _read_varint(inner, j)
            out.append((t >> 3, v))
        else:
            assert t & 7 == 2
            n, j = _read_varint(inner, j)
            out.append((t >> 3, inner[j : j + n]))
            j += n
    nums = [f for f, _ in out]
    assert nums and nums[0] == 1, "errorCode present and first"
    assert nums == sorted(set(nums)), "fields in number order, once each"
    return out


def code_of(reply: bytes | None, field: int) -> int:
    assert reply is not None
    first = oe_parse(reply, field)[0][1]
    assert isinstance(first, int)
    return first


def t9(timeout: int | None, num: int = 9) -> bytes:
    return b"" if timeout is None else vfield(num, timeout)


# ------------------------------------------------------------------ §2 framing example, §5 key ids


def test_intel_example_frame_answers_num_one() -> None:
    dec = FrameDecoder(1 << 20)
    (body,) = dec.feed(bytes.fromhex("06000000aa0103489875"))
    assert answer(body) == bfield(21, vfield(1, 0) + vfield(2, 1))


@pytest.mark.parametrize("timeout", TIMEOUTS)
def test_supported_ids_exact_buffer_enarx_oasis(timeout: int | None) -> None:
    reply = answer(bfield(22, vfield(1, 256) + t9(timeout)))
    assert reply == bfield(22, vfield(1, 0) + bfield(2, KEY))
    ids = dict(oe_parse(reply, 22))[2]
    assert isinstance(ids, bytes) and len(ids) == 1 * 256  # oasis-core: len == num*256
    assert int.from_bytes(ids[154:158], "little") == 2  # Enarx picks algorithm_id == ECDSA-P256


@pytest.mark.parametrize("size", [0, 3, 255, 257, 512, 2**32 - 1])
def test_supported_ids_wrong_buf_size_is_3(size: int) -> None:
    assert answer(bfield(22, vfield(1, size) + vfield(9, 15000))) == bfield(22, vfield(1, 3))


def test_supported_ids_missing_required_buf_size_is_3() -> None:
    assert answer(bfield(22, vfield(9, 15000))) == bfield(22, vfield(1, 3))


# ------------------------------------------------------------------ SelectAttKeyID


def _list(entries: list[bytes], id_: int = 0, version: int = 0, num: int | None = None) -> bytes:
    n = len(entries) if num is None else num
    return (
        id_.to_bytes(2, "little")
        + version.to_bytes(2, "little")
        + n.to_bytes(4, "little")
        + b"".join(entries)
    )


@pytest.mark.parametrize("timeout", TIMEOUTS)
def test_select_without_list(timeout: int | None) -> None:
    assert answer(bfield(19, t9(timeout, 2))) == bfield(19, vfield(1, 0) + bfield(2, KEY))


def test_select_matches_base_and_returns_the_entry_as_sent() -> None:
    other = bytearray(KEY)
    other[6] ^= 1  # another mrsigner: no match
    mine = KEY[:158] + b"\x55" * 98  # same base, different tail
    reply = answer(bfield(19, bfield(1, _list([bytes(other), mine])) + vfield(2, 15000)))
    assert reply == bfield(19, vfield(1, 0) + bfield(2, mine))


@pytest.mark.parametrize(
    "raw",
    [
        _list([KEY], id_=1),
        _list([KEY], version=1),
        _list([KEY] * 11),
        _list([KEY], num=2),
        _list([KEY])[:-1],
        _list([KEY]) + b"\0",
        _list([KEY])[:7],
        b"",
    ],
    ids=["id", "version", "11-entries", "num-mismatch", "short", "long", "no-header", "empty"],
)
def test_select_bad_list_is_3(raw: bytes) -> None:
    assert answer(bfield(19, bfield(1, raw))) == bfield(19, vfield(1, 3))


def test_select_ten_entries_is_fine_and_no_match_is_38() -> None:
    assert code_of(answer(bfield(19, bfield(1, _list([KEY] * 10)))), 19) == 0
    epid = bytearray(KEY)
    epid[154] = 0
    assert answer(bfield(19, bfield(1, _list([bytes(epid)])))) == bfield(19, vfield(1, 38))


# ------------------------------------------------------------------ InitQuoteEx


@pytest.mark.parametrize("buf_size", [None, 0, 32, 140393291379042, 2**64 - 1])
@pytest.mark.parametrize("timeout", [None, 15000, 1_000_000])
def test_init_size_query_ignores_buf_size(buf_size: int | None, timeout: int | None) -> None:
    body = bfield(15, bfield(1, KEY) + vfield(3, 0) + t9(buf_size, 4) + t9(timeout))
    # §6: size 32, target_info not filled -> 512 zero bytes; no pub_key_id
    assert answer(body, FakeEngine()) == bfield(15, vfield(1, 0) + bfield(2, bytes(512)) + vfield(3, 32))


def test_init_with_buffer_exact_reply() -> None:
    eng = FakeEngine()
    reply = answer(bfield(15, bfield(1, KEY) + vfield(3, 1) + vfield(4, 32) + vfield(9, 15000)), eng)
    assert reply == bfield(
        15, vfield(1, 0) + bfield(2, eng.target_info.to_bytes()) + vfield(3, 32) + bfield(4, eng.pub_key_id)
    )


@pytest.mark.parametrize("buf_size", [None, 0, 31, 33, 64, 2**40])
def test_init_with_buffer_not_32_is_3_with_pub_key_id_size(buf_size: int | None) -> None:
    reply = answer(bfield(15, bfield(1, KEY) + vfield(3, 1) + t9(buf_size, 4)), FakeEngine())
    assert code_of(reply, 15) == 3
    assert reply is not None
    fields = dict(oe_parse(reply, 15))
    assert 3 in fields and 2 not in fields and 4 not in fields  # always pub_key_id_size, no target_info


@pytest.mark.parametrize(("key", "code"), [(None, 3), (KEY[:255], 3), (b"\1" + KEY[1:], 38)])
def test_init_key_checks(key: bytes | None, code: int) -> None:
    body = bfield(15, (b"" if key is None else bfield(1, key)) + vfield(3, 1) + vfield(4, 32))
    assert code_of(answer(body, FakeEngine()), 15) == code


# ------------------------------------------------------------------ GetQuoteSizeEx / GetQuoteEx


def test_quote_size_before_init_is_42() -> None:
    assert answer(bfield(16, bfield(1, KEY) + vfield(9, 15000)), FakeEngine()) == bfield(16, vfield(1, 42))


def _get(
    rep: bytes,
    key: bytes | None = KEY,
    info: bytes | None = None,
    buf: int = 8192,
    timeout: int | None = 15000,
) -> bytes:
    return bfield(
        17,
        bfield(1, rep)
        + (b"" if key is None else bfield(2, key))
        + (b"" if info is None else bfield(3, info))
        + vfield(4, buf)
        + t9(timeout),
    )


INFO = bytes(range(16)) + b"\x42" * 512 + bytes(432)


@pytest.mark.parametrize(
    ("rep_len", "key", "info"),
    [(431, KEY, None), (433, KEY, None), (0, KEY, None), (432, KEY[:255], None), (432, None, None)],
)
def test_get_quote_size_checks_are_3(rep_len: int, key: bytes | None, info: bytes | None) -> None:
    rep = (report(1).to_bytes() * 2)[:rep_len]
    assert answer(_get(rep, key, info)) == bfield(17, vfield(1, 3))


@pytest.mark.parametrize("info_len", [0, 959, 961])
def test_get_quote_bad_info_is_3_and_echoed(info_len: int) -> None:
    info = (INFO * 2)[:info_len]
    assert answer(_get(report(1).to_bytes(), info=info)) == bfield(17, vfield(1, 3) + bfield(3, info))


def test_get_quote_buffer_too_small_is_3_and_info_echoed_unchanged() -> None:
    rep = report(2)
    real = len(fake_quote(rep))
    assert answer(_get(rep.to_bytes(), buf=real - 1)) == bfield(17, vfield(1, 3))
    assert answer(_get(rep.to_bytes(), info=INFO, buf=real - 1)) == bfield(17, vfield(1, 3) + bfield(3, INFO))


def test_get_quote_before_init_is_42_with_info_echoed() -> None:
    reply = answer(_get(report(3).to_bytes(), info=INFO), FakeEngine())
    assert reply == bfield(17, vfield(1, 42) + bfield(3, INFO))


@pytest.mark.parametrize("timeout", TIMEOUTS)
@pytest.mark.parametrize("extra", [0, 1, 4096])
def test_get_quote_padded_to_exactly_buf_size_enarx(timeout: int | None, extra: int) -> None:
    rep = report(4)
    q = fake_quote(rep)
    reply = answer(_get(rep.to_bytes(), buf=len(q) + extra, timeout=timeout))
    assert reply == bfield(17, vfield(1, 0) + bfield(2, q + bytes(extra)))


def test_get_quote_with_info_fortanix_reads_qe_report_at_528() -> None:
    rep = report(5)
    q = fake_quote(rep)
    reply = answer(_get(rep.to_bytes(), info=INFO, buf=len(q) + 100))
    assert reply is not None
    fields = dict(oe_parse(reply, 17))
    assert fields[1] == 0 and fields[2] == q + bytes(100)
    echoed = fields[3]
    assert isinstance(echoed, bytes) and len(echoed) == 960
    assert echoed[:528] == INFO[:528]  # nonce and app target info as sent
    assert echoed[528:] != bytes(432)  # qe_report filled


# ------------------------------------------------------------------ legacy, unknown, empty


@pytest.mark.parametrize("field", [1, 2, 3, 4, 10, 11, 12, 13, 14, 18])
def test_legacy_requests_get_their_own_field_errorcode_only(field: int) -> None:
    reply = answer(bfield(field, vfield(9, 15000)))
    assert reply is not None
    parsed = oe_parse(reply, field)
    assert len(parsed) == 1 and parsed[0][1] != 0


@pytest.mark.parametrize("body", [b"", bfield(20, b""), bfield(99, b""), vfield(5, 1), b"\xff\xff\xff"])
def test_unknown_or_empty_envelope_closes_without_reply(body: bytes) -> None:
    assert answer(body) is None
    with short_dir() as d:
        from sgx_quote_helper.server.config import ServerConfig
        from sgx_quote_helper.testing.daemon import ServerThread

        path: Path = d / "aesm.socket"
        cfg = ServerConfig(socket_path=path, idle_timeout=2.0, read_timeout=2.0)
        with ServerThread(AesmService(FakeEngine(initialised=True)), cfg).start(), raw_connect(path) as s:
            s.sendall(encode_frame(body))
            assert read_frame(s) is None  # EOF, no bytes


def test_unknown_inner_fields_are_ignored() -> None:
    body = bfield(21, vfield(9, 15000) + vfield(77, 1) + bfield(78, b"x"))
    assert answer(body) == bfield(21, vfield(1, 0) + vfield(2, 1))


@pytest.mark.parametrize("timeout", [bfield(9, b"ms?"), vfield(9, 2**32), vfield(9, 2**64 - 1)])
def test_timeout_of_any_value_or_wire_type_is_ignored(timeout: bytes) -> None:
    assert answer(bfield(21, timeout)) == bfield(21, vfield(1, 0) + vfield(2, 1))
    assert answer(bfield(19, timeout)) == bfield(19, vfield(1, 0) + bfield(2, KEY))
    size_q = bfield(15, bfield(1, KEY) + vfield(3, 0) + timeout)
    assert answer(size_q, FakeEngine()) == bfield(15, vfield(1, 0) + bfield(2, bytes(512)) + vfield(3, 32))


# prefix and body in one write (Open Enclave's single read()): tests/test_server.py
# ::test_reply_written_in_one_piece reads each whole frame with one recv after select().


def test_varint_helper_roundtrip() -> None:
    assert _read_varint(varint(140393291379042), 0)[0] == 140393291379042
