"""Typed AESM request and response values (``aesm.message`` envelopes as frozen dataclasses).

Plain data, no encoding: ``bytes``/``int`` wire fields, ``None`` = field absent. Each class names its
envelope field number (``FIELD``, Intel's messages.proto); :mod:`.messages` turns them into bytes
and back. Sizes of the SGX structures inside the ``bytes`` are checked by the service, not here.

Requests and responses come in typed pairs, as in fortanix's aesm-client (``transact<T>``): every
request knows its response type (``Request.Response``), how to build the answer that carries only
an error code (:meth:`TypedRequest.failure`: BUSY, SERVICE_UNAVAILABLE... with the fields such an
answer always carries), and whether the quoting engine does its work (``ENGINE``). Code above
``wire`` never pairs them by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar, cast

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


def request_name(field: int) -> str:
    """The envelope field name of a request number (``"getQuoteExReq"``), or ``"field<N>"``."""
    return _REQ_NAMES.get(field, f"field{field}")


#: ECDSA_ID size (``sizeof(sgx_sha256_hash_t)``): InitQuoteEx error answers always carry it
PUB_KEY_ID_SIZE = 32

R = TypeVar("R")


class TypedRequest(Generic[R]):
    """Base of the request types that have their own response type ``R`` (see the module doc)."""

    __slots__ = ()
    FIELD: ClassVar[int]
    #: the response type of this request (set below, once the response classes exist)
    Response: ClassVar[type[Any]]
    #: the quoting engine does the work (the server runs it off its event loop unless it is fast)
    ENGINE: ClassVar[bool] = False

    def failure(self, code: int) -> R:
        """The answer of this request's type carrying only the error ``code``."""
        return cast(R, self.Response(code))


# ---------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class GetSupportedAttKeyIDNumRequest(TypedRequest["GetSupportedAttKeyIDNumResponse"]):
    """``sgx_get_supported_att_key_id_num`` (field 21)."""

    FIELD: ClassVar[int] = F_GET_SUPPORTED_ATT_KEY_ID_NUM
    timeout: int | None = None

    def failure(self, code: int) -> GetSupportedAttKeyIDNumResponse:
        return GetSupportedAttKeyIDNumResponse(code, 0)  # aesmd writes the number on error too


@dataclass(frozen=True, slots=True)
class GetSupportedAttKeyIDsRequest(TypedRequest["GetSupportedAttKeyIDsResponse"]):
    """``sgx_get_supported_att_key_ids`` (field 22): ``buf_size`` must be num x 256."""

    FIELD: ClassVar[int] = F_GET_SUPPORTED_ATT_KEY_IDS
    buf_size: int = 0
    timeout: int | None = None


@dataclass(frozen=True, slots=True)
class SelectAttKeyIDRequest(TypedRequest["SelectAttKeyIDResponse"]):
    """``sgx_select_att_key_id`` (field 19): optional key-id list (header + n x 256)."""

    FIELD: ClassVar[int] = F_SELECT_ATT_KEY_ID
    att_key_id_list: bytes | None = None
    timeout: int | None = None  # field 2 in this message only


@dataclass(frozen=True, slots=True)
class InitQuoteExRequest(TypedRequest["InitQuoteExResponse"]):
    """``sgx_init_quote_ex`` (field 15). ``buf_size`` is meaningless when ``b_pub_key_id`` is false."""

    FIELD: ClassVar[int] = F_INIT_QUOTE_EX
    ENGINE: ClassVar[bool] = True
    att_key_id: bytes | None = None
    b_pub_key_id: bool = False
    buf_size: int | None = None
    timeout: int | None = None

    def failure(self, code: int) -> InitQuoteExResponse:
        """Always with ``pub_key_id_size``: the caller's buffer size, or 32 on a size query."""
        asked = self.buf_size if self.b_pub_key_id and self.buf_size is not None else PUB_KEY_ID_SIZE
        return InitQuoteExResponse(code, pub_key_id_size=asked)


@dataclass(frozen=True, slots=True)
class GetQuoteSizeExRequest(TypedRequest["GetQuoteSizeExResponse"]):
    """``sgx_get_quote_size_ex`` (field 16)."""

    FIELD: ClassVar[int] = F_GET_QUOTE_SIZE_EX
    ENGINE: ClassVar[bool] = True
    att_key_id: bytes | None = None
    timeout: int | None = None


@dataclass(frozen=True, slots=True)
class GetQuoteExRequest(TypedRequest["GetQuoteExResponse"]):
    """``sgx_get_quote_ex`` (field 17): the app's REPORT, key id, optional qe_report_info."""

    FIELD: ClassVar[int] = F_GET_QUOTE_EX
    ENGINE: ClassVar[bool] = True
    report: bytes = b""
    att_key_id: bytes | None = None
    qe_report_info: bytes | None = None
    buf_size: int = 0
    timeout: int | None = None

    def failure(self, code: int) -> GetQuoteExResponse:
        """No quote; ``qe_report_info`` echoed as sent (aesmd does on error)."""
        return GetQuoteExResponse(code, None, self.qe_report_info)


@dataclass(frozen=True, slots=True)
class LegacyRequest(TypedRequest["LegacyResponse"]):
    """An EPID / launch / update request (fields 1-4, 10-14, 18), kept as its raw sub-message."""

    field: int
    payload: bytes = b""

    @property
    def name(self) -> str:
        return request_name(self.field)

    def failure(self, code: int) -> LegacyResponse:
        return LegacyResponse(self.field, code)


@dataclass(frozen=True, slots=True)
class HelperProbeRequest(TypedRequest["HelperProbeResponse"]):
    """Ours (field 1000): "who serves this socket?" Intel's daemon closes without replying."""

    FIELD: ClassVar[int] = F_HELPER_PROBE
    timeout: int | None = None


@dataclass(frozen=True, slots=True)
class EmptyRequest:
    """An envelope with no field at all (including a zero-length frame)."""

    ENGINE: ClassVar[bool] = False

    def failure(self, code: int) -> None:
        """Nothing: no response type fits (the server closes, as aesmd does)."""
        return None


@dataclass(frozen=True, slots=True)
class UnknownRequest:
    """An envelope without exactly one known sub-message; ``fields`` lists the numbers seen."""

    fields: tuple[int, ...]
    ENGINE: ClassVar[bool] = False

    def failure(self, code: int) -> UnknownFieldResponse | None:
        """``{field: {errorCode: code}}`` when exactly one field was seen (every AESM response has
        errorCode as its field 1); else nothing (no field number to answer under)."""
        return UnknownFieldResponse(self.fields[0], code) if len(self.fields) == 1 else None


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
class UnknownFieldResponse:
    """``{field: {errorCode}}`` under a number the schema may not know: the error answer to an
    :class:`UnknownRequest` of one field (the upstream proxy sends it when the upstream is down)."""

    field: int
    error_code: int


@dataclass(frozen=True, slots=True)
class HelperProbeResponse:
    """Who serves this socket. ``started_ns`` and ``state`` came later: older helpers send neither
    (decoded as ``None``: older than anyone, and serving); older clients skip them (unknown proto2
    fields); left ``None`` they are not sent, so the bytes are an older helper's."""

    FIELD: ClassVar[int] = F_HELPER_PROBE
    error_code: int
    implementation: str = ""
    version: str = ""
    pid: int = 0
    instance_id: str = ""
    #: when the instance (the pod's first daemon) began, Unix nanoseconds: the larger is newer
    started_ns: int | None = None
    #: ``serving``, ``handed-over`` (drained, a successor serves the path), ``terminating``
    #: (SIGTERM, in its handover window) or ``standby`` (a newer instance serves the path)
    state: str | None = None


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
Response = QuoteExResponse | LegacyResponse | HelperProbeResponse | UnknownFieldResponse | UnknownResponse


for _req, _res in (
    (GetSupportedAttKeyIDNumRequest, GetSupportedAttKeyIDNumResponse),
    (GetSupportedAttKeyIDsRequest, GetSupportedAttKeyIDsResponse),
    (SelectAttKeyIDRequest, SelectAttKeyIDResponse),
    (InitQuoteExRequest, InitQuoteExResponse),
    (GetQuoteSizeExRequest, GetQuoteSizeExResponse),
    (GetQuoteExRequest, GetQuoteExResponse),
    (LegacyRequest, LegacyResponse),
    (HelperProbeRequest, HelperProbeResponse),
):
    _req.Response = _res


def response_field(response: Response) -> int | None:
    """The envelope field number a response value is sent under (None for UnknownResponse)."""
    if isinstance(response, LegacyResponse | UnknownFieldResponse):
        return response.field
    return getattr(response, "FIELD", None)


def request_field(request: Request) -> int | None:
    """The envelope field number of a request value (None for Empty/Unknown)."""
    if isinstance(request, LegacyRequest):
        return request.field
    return getattr(request, "FIELD", None)


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
    "request_field",
    "request_name",
    "response_field",
]
