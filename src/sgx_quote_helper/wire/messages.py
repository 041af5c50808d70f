"""Typed AESM requests and responses, and their protobuf encoding (``aesm.message``).

The value classes live in :mod:`.values` and are re-exported here, so ``messages`` is the one
import for users. Sans-I/O and crypto-free. The server side uses :func:`decode_request` / :func:`encode_response`,
the client side :func:`encode_request` / :func:`decode_response`. Values are frozen dataclasses
carrying the wire fields as plain ``bytes``/``int`` (``None`` = field absent); size checks of the
SGX structures inside the ``bytes`` belong to the service, which answers them with AESM codes.

Wire rules kept here (``shared/specs/aesm-protocol.md`` §3, §8 items 3-4):

- a request envelope carries one known sub-message; none (empty or unknown-only envelope) decodes to
  :class:`EmptyRequest` / :class:`UnknownRequest`, which the server answers by closing;
- ``timeout`` and unknown fields are ignored; proto2 ``required`` fields are not enforced on the
  way in (a missing one reads as its default and the service's checks answer it);
- a response has exactly one top-level field, the request's field number, with ``errorCode``
  always set and fields serialized in field-number order.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError, EncodeError

from ..abi._bytes import decoded_builder
from ..errors import Fault, LocalProtocolError, RemoteProtocolError
from .framing import HEADER as _HEADER
from .framing import encode_frame
from .values import (
    _REQ_NAMES,
    _RES_NAMES,
    F_CHECK_UPDATE_STATUS,
    F_GET_EXTENDED_EPID_GROUP_ID,
    F_GET_LAUNCH_TOKEN,
    F_GET_QUOTE,
    F_GET_QUOTE_EX,
    F_GET_QUOTE_SIZE_EX,
    F_GET_SUPPORTED_ATT_KEY_ID_NUM,
    F_GET_SUPPORTED_ATT_KEY_IDS,
    F_GET_WHITE_LIST,
    F_GET_WHITE_LIST_SIZE,
    F_HELPER_PROBE,
    F_INIT_QUOTE,
    F_INIT_QUOTE_EX,
    F_REPORT_ATTESTATION_ERROR,
    F_SELECT_ATT_KEY_ID,
    F_SGX_REGISTER,
    F_SWITCH_EXTENDED_EPID_GROUP,
    F_UNSUPPORTED,
    LEGACY_FIELDS,
    PUB_KEY_ID_SIZE,
    EmptyRequest,
    GetQuoteExRequest,
    GetQuoteExResponse,
    GetQuoteSizeExRequest,
    GetQuoteSizeExResponse,
    GetSupportedAttKeyIDNumRequest,
    GetSupportedAttKeyIDNumResponse,
    GetSupportedAttKeyIDsRequest,
    GetSupportedAttKeyIDsResponse,
    HelperProbeRequest,
    HelperProbeResponse,
    InitQuoteExRequest,
    InitQuoteExResponse,
    LegacyRequest,
    LegacyResponse,
    QuoteExRequest,
    QuoteExResponse,
    Request,
    Response,
    SelectAttKeyIDRequest,
    SelectAttKeyIDResponse,
    TypedRequest,
    UnknownFieldResponse,
    UnknownRequest,
    UnknownResponse,
    pb,
    request_field,
    request_name,
    response_field,
)

# ---------------------------------------------------------------- field tables

# Each typed value's fields are its protobuf sub-message's fields, by the same name (``error_code``
# is ``errorCode``). A dataclass field whose default is ``None`` is optional on the wire (absent ->
# ``None``); one with another default is proto2 ``required`` (absent -> its default, as the C++ and
# Python runtimes read it). The tables are built once from the dataclasses, so encoding and decoding
# are one loop for every type instead of a ladder per type.

_Spec = tuple[str, str, tuple[tuple[str, str, bool], ...]]  # (envelope name, sub-name, fields)


def _spec(cls: type, names: dict[int, str]) -> _Spec:
    fields = tuple(
        (f.name, "errorCode" if f.name == "error_code" else f.name, f.default is None)
        for f in dataclasses.fields(cls)
    )
    return names[cls.FIELD], names[cls.FIELD], fields  # type: ignore[attr-defined]


_TYPED_REQUESTS = (
    GetQuoteExRequest,
    GetSupportedAttKeyIDNumRequest,
    GetSupportedAttKeyIDsRequest,
    SelectAttKeyIDRequest,
    InitQuoteExRequest,
    GetQuoteSizeExRequest,
    HelperProbeRequest,
)
_TYPED_RESPONSES = tuple(cls.Response for cls in _TYPED_REQUESTS)
_REQUEST_SPECS: dict[type, _Spec] = {cls: _spec(cls, _REQ_NAMES) for cls in _TYPED_REQUESTS}
_RESPONSE_SPECS: dict[type, _Spec] = {cls: _spec(cls, _RES_NAMES) for cls in _TYPED_RESPONSES}
_REQUEST_BY_FIELD: dict[int, tuple[type, tuple[tuple[str, str, bool], ...]]] = {
    cls.FIELD: (cls, spec[2])  # type: ignore[attr-defined]
    for cls, spec in _REQUEST_SPECS.items()
}
_RESPONSE_BY_FIELD: dict[int, tuple[type, tuple[tuple[str, str, bool], ...]]] = {
    cls.FIELD: (cls, spec[2])  # type: ignore[attr-defined]
    for cls, spec in _RESPONSE_SPECS.items()
}


def _decoder(cls: type, fields: tuple[tuple[str, str, bool], ...]) -> Callable[[Any], object]:
    """``sub-message -> value`` for one typed class, built once: every field read by one
    ``attrgetter``, the optional ones (``None`` when absent) asked ``HasField``."""
    names = tuple(pbname for _, pbname, _ in fields)
    optional = tuple((i, pbname) for i, (_, pbname, opt) in enumerate(fields) if opt)
    if not names:
        return lambda sub: cls()
    getter = operator.attrgetter(*names)
    if len(names) == 1:
        if optional:
            return lambda sub: cls(getter(sub) if sub.HasField(names[0]) else None)
        return lambda sub: cls(getter(sub))

    def decode(sub: Any) -> object:
        values = list(getter(sub))
        for i, pbname in optional:
            if not sub.HasField(pbname):
                values[i] = None
        return cls(*values)

    return decode


_REQUEST_DECODERS: dict[int, tuple[type, Callable[[Any], object]]] = {
    number: (cls, _decoder(cls, spec)) for number, (cls, spec) in _REQUEST_BY_FIELD.items()
}
_RESPONSE_DECODERS: dict[int, tuple[type, Callable[[Any], object]]] = {
    number: (cls, _decoder(cls, spec)) for number, (cls, spec) in _RESPONSE_BY_FIELD.items()
}

# ---------------------------------------------------------------- decoding helpers


def _parse(cls: type, body: bytes, what: str) -> object:
    try:
        return cls.FromString(body)  # type: ignore[attr-defined]
    except DecodeError as exc:
        raise RemoteProtocolError(
            f"{what} is not a valid protobuf envelope: {exc}", Fault.MALFORMED
        ) from None
    except (ValueError, TypeError, RecursionError) as exc:  # defensive: pure-Python backend corner cases
        raise RemoteProtocolError(
            f"{what} is not a valid protobuf envelope: {exc}", Fault.MALFORMED
        ) from None


def _unknown_numbers(msg: object) -> tuple[int, ...]:
    from google.protobuf.unknown_fields import UnknownFieldSet

    fields: Any = UnknownFieldSet(msg)  # type: ignore[arg-type]
    return tuple(sorted({f.field_number for f in fields}))


def _filler(fields: tuple[tuple[str, str, bool], ...]) -> Callable[[Any, object], None]:
    """``(sub-message, value) -> None`` for one typed class, built once: set the sub-message present
    and every field that is not ``None``."""
    pbnames = tuple(pbname for _, pbname, _ in fields)
    getter = operator.attrgetter(*(name for name, _, _ in fields)) if fields else None

    def fill(msg: Any, value: object) -> None:
        msg.SetInParent()
        if getter is None:
            return
        values = getter(value)
        if len(pbnames) == 1:
            values = (values,)
        for pbname, v in zip(pbnames, values, strict=True):
            if v is not None:
                setattr(msg, pbname, v)

    return fill


_REQUEST_FILLERS: dict[type, tuple[str, Callable[[Any, object], None]]] = {
    cls: (spec[0], _filler(spec[2])) for cls, spec in _REQUEST_SPECS.items()
}
_RESPONSE_FILLERS: dict[type, tuple[str, Callable[[Any, object], None]]] = {
    cls: (spec[0], _filler(spec[2])) for cls, spec in _RESPONSE_SPECS.items()
}


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL_VARINTS[n]
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL_VARINTS = tuple(bytes((i,)) for i in range(0x80))

#: the tag bytes of GetQuoteExResponse: envelope field 17 and its fields 1-3 (varint, bytes, bytes)
_QUOTE_EX_TAG = _varint(F_GET_QUOTE_EX << 3 | 2)


def _quote_ex_response(response: GetQuoteExResponse, framed: bool = False) -> bytes | None:
    """The envelope of the reply sent once per quote, written directly: the bytes protobuf would
    write (errorCode, then each field present, in number order), without building a message and
    copying the quote into it; ``framed``: with the frame's length prefix before it, in the same
    join (the quote is copied once). ``None`` for a value it does not take (the general path
    decides)."""
    code, quote, info = response.error_code, response.quote, response.qe_report_info
    if info is None and type(quote) is bytes and isinstance(code, int) and 0 <= code < 0x80:
        # the reply of (almost) every call: errorCode and quote; straight-line
        nq = _varint(len(quote))
        size = 3 + len(nq) + len(quote)
        ns = _varint(size)
        head = _HEADER.pack(2 + len(ns) + size) if framed else b""
        return b"".join((head, _QUOTE_EX_TAG, ns, b"\x08", _SMALL_VARINTS[code], b"\x12", nq, quote))
    if not (isinstance(code, int) and 0 <= code <= 0xFFFFFFFF):
        return None
    parts = [b"", _QUOTE_EX_TAG, b"", b"\x08", _varint(code)]
    size = 1 + len(parts[4])
    for tag, value in ((b"\x12", quote), (b"\x1a", info)):
        if value is not None:
            if type(value) is not bytes:
                return None
            n = _varint(len(value))
            parts += (tag, n, value)
            size += 1 + len(n) + len(value)
    n = _varint(size)
    parts[2] = n
    if framed:
        parts[0] = _HEADER.pack(len(_QUOTE_EX_TAG) + len(n) + size)
    return b"".join(parts)


def encode_response_frame(response: Response) -> bytes:
    """:func:`encode_response` with its frame's length prefix: the bytes of one reply frame.

    Raises:
        LocalProtocolError: a value does not fit its protobuf field.
    """
    if type(response) is GetQuoteExResponse:
        direct = _quote_ex_response(response, True)
        if direct is not None:
            return direct
    return encode_frame(encode_response(response))


def raw_envelope(field: int, payload: bytes) -> bytes:
    """An envelope whose one field ``field`` (length-delimited) carries ``payload``: how an answer
    to a request number the schema does not know is built (and how tests build unknown requests)."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


# ---------------------------------------------------------------- server side

#: the frozen dataclass's fields set as its ``__init__`` would, from values read at their shape
_build_quote_ex_request = decoded_builder(GetQuoteExRequest)


def _uvarint(b: bytes, i: int) -> tuple[int, int]:
    """The varint at ``b[i]`` and the index after it; (-1, i) for one longer than 5 bytes or
    above 2**32 - 1 (what only the general parser may judge). IndexError past the end."""
    x = b[i]
    if x < 0x80:
        return x, i + 1
    y = b[i + 1]
    if y < 0x80:
        return x & 0x7F | y << 7, i + 2
    value, shift, j = x & 0x7F | (y & 0x7F) << 7, 14, i + 2
    while j < i + 5:
        z = b[j]
        value |= (z & 0x7F) << shift
        j += 1
        if z < 0x80:
            return (value, j) if value <= 0xFFFFFFFF else (-1, i)
        shift += 7
    return -1, i


def _quote_ex_request(body: bytes) -> GetQuoteExRequest | None:
    """The request sent once per quote, read directly when it has the shape every client writes:
    the envelope's one field 17 holding report (1), then att_key_id (2), qe_report_info (3) if
    present, buf_size (4) and timeout (9) if present, each once, in number order, nothing else.
    The same value the general path decodes; ``None`` for anything else (the general path,
    with protobuf's own parser, decides). Varints of one or two bytes (every length and value a
    quote needs but large buffers) are read inline, longer ones by :func:`_uvarint`."""
    end = len(body)
    try:
        x, y = body[2], body[3]  # the envelope's length
        if x < 0x80:
            n, i = x, 3
        elif y < 0x80:
            n, i = x & 0x7F | y << 7, 4
        else:
            n, i = _uvarint(body, 2)
        if i + n != end or body[i] != 0x0A:
            return None
        x, y = body[i + 1], body[i + 2]  # report
        if x < 0x80:
            size, i = x, i + 2
        elif y < 0x80:
            size, i = x & 0x7F | y << 7, i + 3
        else:
            size, i = _uvarint(body, i + 1)
        j = i + size
        if size < 0 or j > end:
            return None
        report, i = body[i:j], j
        key = info = timeout = None
        tag = body[i]
        if tag == 0x12:
            x, y = body[i + 1], body[i + 2]
            if x < 0x80:
                size, i = x, i + 2
            elif y < 0x80:
                size, i = x & 0x7F | y << 7, i + 3
            else:
                size, i = _uvarint(body, i + 1)
            j = i + size
            if size < 0 or j > end:
                return None
            key, i = body[i:j], j
            tag = body[i]
        if tag == 0x1A:
            size, i = _uvarint(body, i + 1)
            j = i + size
            if size < 0 or j > end:
                return None
            info, i = body[i:j], j
            tag = body[i]
        if tag != 0x20:
            return None
        x = body[i + 1]
        if x < 0x80:
            buf_size, i = x, i + 2
        else:
            buf_size, i = _uvarint(body, i + 1)
            if buf_size < 0:
                return None
        if i < end:
            if body[i] != 0x48:
                return None
            timeout, i = _uvarint(body, i + 1)
            if timeout < 0 or i != end:
                return None
    except IndexError:
        return None
    return _build_quote_ex_request(report, key, info, buf_size, timeout)


def decode_request(body: bytes) -> Request:
    """Decode one request frame body.

    Raises:
        RemoteProtocolError: the bytes are not a protobuf ``Request``.
    """
    if body[:2] == _QUOTE_EX_TAG:  # (field 17, length-delimited: the same tag both ways)
        direct = _quote_ex_request(body)
        if direct is not None:
            return direct
    return _decode_request(body)


def _decode_request(body: bytes) -> Request:
    """:func:`decode_request` by protobuf's parser (every request; the reference of the direct path)."""
    env: Any = _parse(pb.Request, body, "request")
    fields = env.ListFields()
    if len(fields) != 1:
        if not fields:
            unknown = _unknown_numbers(env)
            return UnknownRequest(unknown) if unknown else EmptyRequest()
        return UnknownRequest(tuple(f.number for f, _ in fields))
    fd, sub = fields[0]
    typed = _REQUEST_DECODERS.get(fd.number)
    if typed is None:
        return LegacyRequest(fd.number, sub.SerializePartialToString())
    return typed[1](sub)  # type: ignore[return-value]


def encode_response(response: Response) -> bytes:
    """Serialize a response envelope (one top-level field, errorCode set, number order).

    Raises:
        LocalProtocolError: a value does not fit its protobuf field.
    """
    if type(response) is GetQuoteExResponse:
        direct = _quote_ex_response(response)
        if direct is not None:
            return direct
    env: Any = pb.Response()
    try:
        filler = _RESPONSE_FILLERS.get(type(response))
        if filler is not None:
            filler[1](getattr(env, filler[0]), response)
        elif type(response) is LegacyResponse:
            assert isinstance(response, LegacyResponse)
            name = _RES_NAMES.get(response.field)
            if name is None:
                raise LocalProtocolError(f"no response type has field number {response.field}")
            getattr(env, name).errorCode = response.error_code
        elif type(response) is UnknownFieldResponse:  # {field: {errorCode}}, any field number
            assert isinstance(response, UnknownFieldResponse)
            if not 0 < response.field < 1 << 29:
                raise LocalProtocolError(f"no response can have field number {response.field}")
            inner = pb.Response.InitQuoteResponse(errorCode=response.error_code).SerializeToString()
            return raw_envelope(response.field, inner)
        else:
            raise LocalProtocolError(f"cannot encode {type(response).__name__} as a response")
        return env.SerializeToString()  # type: ignore[no-any-return]
    except (ValueError, TypeError, EncodeError) as exc:
        raise LocalProtocolError(f"invalid {type(response).__name__}: {exc}") from None


# ---------------------------------------------------------------- client side


def encode_request(request: Request) -> bytes:
    """Serialize a request envelope as Intel's client does (timeout only when given).

    Raises:
        LocalProtocolError: unknown/empty request values, or a number out of its field's range.
    """
    env: Any = pb.Request()
    try:
        filler = _REQUEST_FILLERS.get(type(request))
        if filler is not None:
            filler[1](getattr(env, filler[0]), request)
            return env.SerializeToString()  # type: ignore[no-any-return]
        if type(request) is LegacyRequest:
            assert isinstance(request, LegacyRequest)
            name = _REQ_NAMES.get(request.field)
            if name is None or request.field not in LEGACY_FIELDS:
                raise LocalProtocolError(f"field {request.field} is not a legacy request")
            sub = getattr(env, name)
            sub.SetInParent()
            sub.MergeFromString(request.payload)
            return env.SerializePartialToString()  # type: ignore[no-any-return]
        raise LocalProtocolError(f"cannot encode {type(request).__name__} as a request")
    except (ValueError, TypeError, EncodeError, DecodeError) as exc:
        raise LocalProtocolError(f"invalid {type(request).__name__}: {exc}") from None


def decode_response(body: bytes) -> Response:
    """Decode one response frame body (client side).

    Raises:
        RemoteProtocolError: the bytes are not a protobuf ``Response``.
    """
    env: Any = _parse(pb.Response, body, "response")
    fields = env.ListFields()
    if len(fields) != 1:
        return UnknownResponse(tuple(f.number for f, _ in fields) or _unknown_numbers(env))
    fd, sub = fields[0]
    if not sub.HasField("errorCode"):
        raise RemoteProtocolError(f"{fd.name} has no errorCode", Fault.MALFORMED)
    typed = _RESPONSE_DECODERS.get(fd.number)
    if typed is None:
        return LegacyResponse(fd.number, sub.errorCode)
    return typed[1](sub)  # type: ignore[return-value]


__all__ = [
    "F_CHECK_UPDATE_STATUS",
    "F_GET_EXTENDED_EPID_GROUP_ID",
    "F_GET_LAUNCH_TOKEN",
    "F_GET_QUOTE",
    "F_GET_QUOTE_EX",
    "F_GET_QUOTE_SIZE_EX",
    "F_GET_SUPPORTED_ATT_KEY_IDS",
    "F_GET_SUPPORTED_ATT_KEY_ID_NUM",
    "F_GET_WHITE_LIST",
    "F_GET_WHITE_LIST_SIZE",
    "F_HELPER_PROBE",
    "F_INIT_QUOTE",
    "F_INIT_QUOTE_EX",
    "F_REPORT_ATTESTATION_ERROR",
    "F_SELECT_ATT_KEY_ID",
    "F_SGX_REGISTER",
    "F_SWITCH_EXTENDED_EPID_GROUP",
    "F_UNSUPPORTED",
    "LEGACY_FIELDS",
    "PUB_KEY_ID_SIZE",
    "EmptyRequest",
    "GetQuoteExRequest",
    "GetQuoteExResponse",
    "GetQuoteSizeExRequest",
    "GetQuoteSizeExResponse",
    "GetSupportedAttKeyIDNumRequest",
    "GetSupportedAttKeyIDNumResponse",
    "GetSupportedAttKeyIDsRequest",
    "GetSupportedAttKeyIDsResponse",
    "HelperProbeRequest",
    "HelperProbeResponse",
    "InitQuoteExRequest",
    "InitQuoteExResponse",
    "LegacyRequest",
    "LegacyResponse",
    "QuoteExRequest",
    "QuoteExResponse",
    "Request",
    "Response",
    "SelectAttKeyIDRequest",
    "SelectAttKeyIDResponse",
    "TypedRequest",
    "UnknownFieldResponse",
    "UnknownRequest",
    "UnknownResponse",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "encode_response_frame",
    "raw_envelope",
    "request_field",
    "request_name",
    "response_field",
]
