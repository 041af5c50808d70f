"""Typed AESM requests and responses, and their protobuf encoding (``aesm.message``).

Sans-I/O and crypto-free. The server side uses :func:`decode_request` / :func:`encode_response`,
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

from dataclasses import dataclass
from typing import Any, ClassVar

from google.protobuf.message import DecodeError, EncodeError

from ..errors import LocalProtocolError, RemoteProtocolError
from . import aesm_pb2 as _pb2

#: the generated module, untyped (protoc emits no stubs we check in)
pb: Any = _pb2

# Envelope field numbers (Intel's messages.proto; ours: 1000).
F_INIT_QUOTE = 1
F_GET_QUOTE = 2
F_GET_LAUNCH_TOKEN = 3
F_REPORT_ATTESTATION_ERROR = 4
F_GET_WHITE_LIST_SIZE = 10
F_GET_WHITE_LIST = 11
F_GET_EXTENDED_EPID_GROUP_ID = 12
F_SWITCH_EXTENDED_EPID_GROUP = 13
F_SGX_REGISTER = 14
F_INIT_QUOTE_EX = 15
F_GET_QUOTE_SIZE_EX = 16
F_GET_QUOTE_EX = 17
F_CHECK_UPDATE_STATUS = 18
F_SELECT_ATT_KEY_ID = 19
F_UNSUPPORTED = 20
F_GET_SUPPORTED_ATT_KEY_ID_NUM = 21
F_GET_SUPPORTED_ATT_KEY_IDS = 22
F_HELPER_PROBE = 1000

#: legacy (EPID, launch, platform-services update) request field numbers
LEGACY_FIELDS = frozenset(
    {
        F_INIT_QUOTE,
        F_GET_QUOTE,
        F_GET_LAUNCH_TOKEN,
        F_REPORT_ATTESTATION_ERROR,
        F_GET_WHITE_LIST_SIZE,
        F_GET_WHITE_LIST,
        F_GET_EXTENDED_EPID_GROUP_ID,
        F_SWITCH_EXTENDED_EPID_GROUP,
        F_SGX_REGISTER,
        F_CHECK_UPDATE_STATUS,
    }
)

_REQ_NAMES: dict[int, str] = {f.number: f.name for f in pb.Request.DESCRIPTOR.fields}
_RES_NAMES: dict[int, str] = {f.number: f.name for f in pb.Response.DESCRIPTOR.fields}
_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF


def request_name(field: int) -> str:
    """The envelope field name of a request number (``"getQuoteExReq"``), or ``"field<N>"``."""
    return _REQ_NAMES.get(field, f"field{field}")


# ---------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class GetSupportedAttKeyIDNumRequest:
    """``sgx_get_supported_att_key_id_num`` (field 21)."""

    FIELD: ClassVar[int] = F_GET_SUPPORTED_ATT_KEY_ID_NUM
    timeout: int | None = None


@dataclass(frozen=True, slots=True)
class GetSupportedAttKeyIDsRequest:
    """``sgx_get_supported_att_key_ids`` (field 22): ``buf_size`` must be num x 256."""

    FIELD: ClassVar[int] = F_GET_SUPPORTED_ATT_KEY_IDS
    buf_size: int = 0
    timeout: int | None = None


@dataclass(frozen=True, slots=True)
class SelectAttKeyIDRequest:
    """``sgx_select_att_key_id`` (field 19): optional key-id list (header + n x 256)."""

    FIELD: ClassVar[int] = F_SELECT_ATT_KEY_ID
    att_key_id_list: bytes | None = None
    timeout: int | None = None  # field 2 in this message only


@dataclass(frozen=True, slots=True)
class InitQuoteExRequest:
    """``sgx_init_quote_ex`` (field 15). ``buf_size`` is meaningless when ``b_pub_key_id`` is false."""

    FIELD: ClassVar[int] = F_INIT_QUOTE_EX
    att_key_id: bytes | None = None
    b_pub_key_id: bool = False
    buf_size: int | None = None
    timeout: int | None = None


@dataclass(frozen=True, slots=True)
class GetQuoteSizeExRequest:
    """``sgx_get_quote_size_ex`` (field 16)."""

    FIELD: ClassVar[int] = F_GET_QUOTE_SIZE_EX
    att_key_id: bytes | None = None
    timeout: int | None = None


@dataclass(frozen=True, slots=True)
class GetQuoteExRequest:
    """``sgx_get_quote_ex`` (field 17): the app's REPORT, key id, optional qe_report_info."""

    FIELD: ClassVar[int] = F_GET_QUOTE_EX
    report: bytes = b""
    att_key_id: bytes | None = None
    qe_report_info: bytes | None = None
    buf_size: int = 0
    timeout: int | None = None


@dataclass(frozen=True, slots=True)
class LegacyRequest:
    """An EPID / launch / update request (fields 1-4, 10-14, 18), kept as its raw sub-message."""

    field: int
    payload: bytes = b""

    @property
    def name(self) -> str:
        return request_name(self.field)


@dataclass(frozen=True, slots=True)
class HelperProbeRequest:
    """Ours (field 1000): "who serves this socket?" Intel's daemon closes without replying."""

    FIELD: ClassVar[int] = F_HELPER_PROBE
    timeout: int | None = None


@dataclass(frozen=True, slots=True)
class EmptyRequest:
    """An envelope with no field at all (including a zero-length frame)."""


@dataclass(frozen=True, slots=True)
class UnknownRequest:
    """An envelope without exactly one known sub-message; ``fields`` lists the numbers seen."""

    fields: tuple[int, ...]


QuoteExRequest = (
    GetSupportedAttKeyIDNumRequest
    | GetSupportedAttKeyIDsRequest
    | SelectAttKeyIDRequest
    | InitQuoteExRequest
    | GetQuoteSizeExRequest
    | GetQuoteExRequest
)
Request = QuoteExRequest | LegacyRequest | HelperProbeRequest | EmptyRequest | UnknownRequest


# ---------------------------------------------------------------- responses


@dataclass(frozen=True, slots=True)
class GetSupportedAttKeyIDNumResponse:
    FIELD: ClassVar[int] = F_GET_SUPPORTED_ATT_KEY_ID_NUM
    error_code: int
    att_key_id_num: int | None = None


@dataclass(frozen=True, slots=True)
class GetSupportedAttKeyIDsResponse:
    FIELD: ClassVar[int] = F_GET_SUPPORTED_ATT_KEY_IDS
    error_code: int
    att_key_ids: bytes | None = None


@dataclass(frozen=True, slots=True)
class SelectAttKeyIDResponse:
    FIELD: ClassVar[int] = F_SELECT_ATT_KEY_ID
    error_code: int
    selected_att_key_id: bytes | None = None


@dataclass(frozen=True, slots=True)
class InitQuoteExResponse:
    FIELD: ClassVar[int] = F_INIT_QUOTE_EX
    error_code: int
    target_info: bytes | None = None
    pub_key_id_size: int | None = None
    pub_key_id: bytes | None = None


@dataclass(frozen=True, slots=True)
class GetQuoteSizeExResponse:
    FIELD: ClassVar[int] = F_GET_QUOTE_SIZE_EX
    error_code: int
    quote_size: int | None = None


@dataclass(frozen=True, slots=True)
class GetQuoteExResponse:
    FIELD: ClassVar[int] = F_GET_QUOTE_EX
    error_code: int
    quote: bytes | None = None
    qe_report_info: bytes | None = None


@dataclass(frozen=True, slots=True)
class LegacyResponse:
    """The answer to a :class:`LegacyRequest`: same field number, errorCode only."""

    field: int
    error_code: int


@dataclass(frozen=True, slots=True)
class HelperProbeResponse:
    FIELD: ClassVar[int] = F_HELPER_PROBE
    error_code: int
    implementation: str = ""
    version: str = ""
    pid: int = 0
    instance_id: str = ""


@dataclass(frozen=True, slots=True)
class UnknownResponse:
    """A response envelope without exactly one known sub-message (client side only)."""

    fields: tuple[int, ...]


QuoteExResponse = (
    GetSupportedAttKeyIDNumResponse
    | GetSupportedAttKeyIDsResponse
    | SelectAttKeyIDResponse
    | InitQuoteExResponse
    | GetQuoteSizeExResponse
    | GetQuoteExResponse
)
Response = QuoteExResponse | LegacyResponse | HelperProbeResponse | UnknownResponse


# ---------------------------------------------------------------- decoding helpers


def _opt(msg: object, name: str) -> object | None:
    return getattr(msg, name) if msg.HasField(name) else None  # type: ignore[attr-defined]


def _parse(cls: type, body: bytes, what: str) -> object:
    try:
        return cls.FromString(body)  # type: ignore[attr-defined]
    except DecodeError as exc:
        raise RemoteProtocolError(f"{what} is not a valid protobuf envelope: {exc}") from None
    except (ValueError, TypeError, RecursionError) as exc:  # defensive: pure-Python backend corner cases
        raise RemoteProtocolError(f"{what} is not a valid protobuf envelope: {exc}") from None


def _unknown_numbers(msg: object) -> tuple[int, ...]:
    from google.protobuf.unknown_fields import UnknownFieldSet

    fields: Any = UnknownFieldSet(msg)  # type: ignore[arg-type]
    return tuple(sorted({f.field_number for f in fields}))


# ---------------------------------------------------------------- server side


def decode_request(body: bytes) -> Request:
    """Decode one request frame body.

    Raises:
        RemoteProtocolError: the bytes are not a protobuf ``Request``.
    """
    env = _parse(pb.Request, body, "request")
    fields = env.ListFields()  # type: ignore[attr-defined]
    if len(fields) != 1:
        if not fields:
            unknown = _unknown_numbers(env)
            return UnknownRequest(unknown) if unknown else EmptyRequest()
        return UnknownRequest(tuple(f.number for f, _ in fields))
    fd, m = fields[0]
    n = fd.number
    if n == F_GET_QUOTE_EX:
        return GetQuoteExRequest(
            report=m.report,
            att_key_id=_opt(m, "att_key_id"),  # type: ignore[arg-type]
            qe_report_info=_opt(m, "qe_report_info"),  # type: ignore[arg-type]
            buf_size=m.buf_size,
            timeout=_opt(m, "timeout"),  # type: ignore[arg-type]
        )
    if n == F_GET_SUPPORTED_ATT_KEY_ID_NUM:
        return GetSupportedAttKeyIDNumRequest(_opt(m, "timeout"))  # type: ignore[arg-type]
    if n == F_GET_SUPPORTED_ATT_KEY_IDS:
        return GetSupportedAttKeyIDsRequest(m.buf_size, _opt(m, "timeout"))  # type: ignore[arg-type]
    if n == F_SELECT_ATT_KEY_ID:
        return SelectAttKeyIDRequest(_opt(m, "att_key_id_list"), _opt(m, "timeout"))  # type: ignore[arg-type]
    if n == F_INIT_QUOTE_EX:
        return InitQuoteExRequest(
            att_key_id=_opt(m, "att_key_id"),  # type: ignore[arg-type]
            b_pub_key_id=m.b_pub_key_id,
            buf_size=_opt(m, "buf_size"),  # type: ignore[arg-type]
            timeout=_opt(m, "timeout"),  # type: ignore[arg-type]
        )
    if n == F_GET_QUOTE_SIZE_EX:
        return GetQuoteSizeExRequest(_opt(m, "att_key_id"), _opt(m, "timeout"))  # type: ignore[arg-type]
    if n == F_HELPER_PROBE:
        return HelperProbeRequest(_opt(m, "timeout"))  # type: ignore[arg-type]
    return LegacyRequest(n, m.SerializePartialToString())


def encode_response(response: Response) -> bytes:
    """Serialize a response envelope (one top-level field, errorCode set, number order).

    Raises:
        LocalProtocolError: a value does not fit its protobuf field.
    """
    env = pb.Response()
    try:
        if isinstance(response, GetQuoteExResponse):
            m = env.getQuoteExRes
            m.errorCode = response.error_code
            if response.quote is not None:
                m.quote = response.quote
            if response.qe_report_info is not None:
                m.qe_report_info = response.qe_report_info
        elif isinstance(response, GetSupportedAttKeyIDNumResponse):
            m = env.getSupportedAttKeyIDNumRes
            m.errorCode = response.error_code
            if response.att_key_id_num is not None:
                m.att_key_id_num = response.att_key_id_num
        elif isinstance(response, GetSupportedAttKeyIDsResponse):
            m = env.getSupportedAttKeyIDsRes
            m.errorCode = response.error_code
            if response.att_key_ids is not None:
                m.att_key_ids = response.att_key_ids
        elif isinstance(response, SelectAttKeyIDResponse):
            m = env.selectAttKeyIDRes
            m.errorCode = response.error_code
            if response.selected_att_key_id is not None:
                m.selected_att_key_id = response.selected_att_key_id
        elif isinstance(response, InitQuoteExResponse):
            m = env.initQuoteExRes
            m.errorCode = response.error_code
            if response.target_info is not None:
                m.target_info = response.target_info
            if response.pub_key_id_size is not None:
                m.pub_key_id_size = response.pub_key_id_size
            if response.pub_key_id is not None:
                m.pub_key_id = response.pub_key_id
        elif isinstance(response, GetQuoteSizeExResponse):
            m = env.getQuoteSizeExRes
            m.errorCode = response.error_code
            if response.quote_size is not None:
                m.quote_size = response.quote_size
        elif isinstance(response, LegacyResponse):
            name = _RES_NAMES.get(response.field)
            if name is None:
                raise LocalProtocolError(f"no response type has field number {response.field}")
            getattr(env, name).errorCode = response.error_code
        elif isinstance(response, HelperProbeResponse):
            m = env.helperProbeRes
            m.errorCode = response.error_code
            m.implementation = response.implementation
            m.version = response.version
            m.pid = response.pid
            m.instance_id = response.instance_id
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
    env = pb.Request()
    try:
        if isinstance(request, GetQuoteExRequest):
            m = env.getQuoteExReq
            m.report = request.report
            if request.att_key_id is not None:
                m.att_key_id = request.att_key_id
            if request.qe_report_info is not None:
                m.qe_report_info = request.qe_report_info
            m.buf_size = request.buf_size
        elif isinstance(request, GetSupportedAttKeyIDNumRequest):
            m = env.getSupportedAttKeyIDNumReq
            m.SetInParent()
        elif isinstance(request, GetSupportedAttKeyIDsRequest):
            m = env.getSupportedAttKeyIDsReq
            m.buf_size = request.buf_size
        elif isinstance(request, SelectAttKeyIDRequest):
            m = env.selectAttKeyIDReq
            m.SetInParent()
            if request.att_key_id_list is not None:
                m.att_key_id_list = request.att_key_id_list
        elif isinstance(request, InitQuoteExRequest):
            m = env.initQuoteExReq
            if request.att_key_id is not None:
                m.att_key_id = request.att_key_id
            m.b_pub_key_id = request.b_pub_key_id
            if request.buf_size is not None:
                m.buf_size = request.buf_size
        elif isinstance(request, GetQuoteSizeExRequest):
            m = env.getQuoteSizeExReq
            m.SetInParent()
            if request.att_key_id is not None:
                m.att_key_id = request.att_key_id
        elif isinstance(request, HelperProbeRequest):
            m = env.helperProbeReq
            m.SetInParent()
        elif isinstance(request, LegacyRequest):
            name = _REQ_NAMES.get(request.field)
            if name is None or request.field not in LEGACY_FIELDS:
                raise LocalProtocolError(f"field {request.field} is not a legacy request")
            m = getattr(env, name)
            m.SetInParent()
            m.MergeFromString(request.payload)
            return env.SerializePartialToString()  # type: ignore[no-any-return]
        else:
            raise LocalProtocolError(f"cannot encode {type(request).__name__} as a request")
        timeout = getattr(request, "timeout", None)
        if timeout is not None:
            m.timeout = timeout
        return env.SerializeToString()  # type: ignore[no-any-return]
    except (ValueError, TypeError, EncodeError, DecodeError) as exc:
        raise LocalProtocolError(f"invalid {type(request).__name__}: {exc}") from None


def decode_response(body: bytes) -> Response:
    """Decode one response frame body (client side).

    Raises:
        RemoteProtocolError: the bytes are not a protobuf ``Response``.
    """
    env = _parse(pb.Response, body, "response")
    fields = env.ListFields()  # type: ignore[attr-defined]
    if len(fields) != 1:
        return UnknownResponse(tuple(f.number for f, _ in fields) or _unknown_numbers(env))
    fd, m = fields[0]
    n = fd.number
    if not m.HasField("errorCode"):
        raise RemoteProtocolError(f"{fd.name} has no errorCode")
    code = m.errorCode
    if n == F_GET_QUOTE_EX:
        return GetQuoteExResponse(code, _opt(m, "quote"), _opt(m, "qe_report_info"))  # type: ignore[arg-type]
    if n == F_GET_SUPPORTED_ATT_KEY_ID_NUM:
        return GetSupportedAttKeyIDNumResponse(code, _opt(m, "att_key_id_num"))  # type: ignore[arg-type]
    if n == F_GET_SUPPORTED_ATT_KEY_IDS:
        return GetSupportedAttKeyIDsResponse(code, _opt(m, "att_key_ids"))  # type: ignore[arg-type]
    if n == F_SELECT_ATT_KEY_ID:
        return SelectAttKeyIDResponse(code, _opt(m, "selected_att_key_id"))  # type: ignore[arg-type]
    if n == F_INIT_QUOTE_EX:
        return InitQuoteExResponse(
            code,
            _opt(m, "target_info"),  # type: ignore[arg-type]
            _opt(m, "pub_key_id_size"),  # type: ignore[arg-type]
            _opt(m, "pub_key_id"),  # type: ignore[arg-type]
        )
    if n == F_GET_QUOTE_SIZE_EX:
        return GetQuoteSizeExResponse(code, _opt(m, "quote_size"))  # type: ignore[arg-type]
    if n == F_HELPER_PROBE:
        return HelperProbeResponse(code, m.implementation, m.version, m.pid, m.instance_id)
    return LegacyResponse(n, code)


def response_field(response: Response) -> int | None:
    """The envelope field number a response value is sent under (None for UnknownResponse)."""
    if isinstance(response, LegacyResponse):
        return response.field
    return getattr(response, "FIELD", None)


def request_field(request: Request) -> int | None:
    """The envelope field number of a request value (None for Empty/Unknown)."""
    if isinstance(request, LegacyRequest):
        return request.field
    return getattr(request, "FIELD", None)


__all__ = [
    "LEGACY_FIELDS",
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
    "UnknownRequest",
    "UnknownResponse",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "request_field",
    "request_name",
    "response_field",
]
