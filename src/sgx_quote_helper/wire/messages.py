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

from typing import Any

from google.protobuf.message import DecodeError, EncodeError

from ..errors import LocalProtocolError, RemoteProtocolError
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
    UnknownRequest,
    UnknownResponse,
    pb,
    request_field,
    request_name,
    response_field,
)

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
