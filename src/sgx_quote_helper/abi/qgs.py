"""Intel's QGS messages (``qgs_msg_lib`` v1.1), byte for byte, with its size rules and quirks.

Layouts (DCAP ``quote_wrapper/qgs_msg_lib/inc/qgs_msg_lib.h``, ``qgs_msg_lib.cpp``;
``shared/specs/tdx-qgs.md`` §1.3, §2): packed little-endian C structs, each starting with the
16-byte header ``u16 major | u16 minor | u32 type | u32 size (whole message) | u32 error_code``.
The 4-byte big-endian length prefix in front of each message is framing (:mod:`..wire.qgs`).

======================  ====  ===============================================================
GET_QUOTE_REQ            0    hdr, u32 report_size (!= 0), u32 id_list_size, report, id_list
GET_QUOTE_RESP           1    hdr, u32 selected_id_size, u32 quote_size, selected_id, quote
GET_COLLATERAL_REQ       2    hdr, u32 fmspc_size, u32 pck_ca_size, fmspc, pck_ca (NUL-ended)
GET_COLLATERAL_RESP      3    hdr, u16 major, u16 minor, 7 x u32 sizes, the 7 blobs in order
GET_PLATFORM_INFO_REQ    4    hdr
GET_PLATFORM_INFO_RESP   5    hdr, u16 tdqe_isvsvn, u16 pce_isvsvn, u32 platform_id_size,
                              u32 cpusvn_size, platform_id, cpusvn, 4 zero bytes (Intel's size)
======================  ====  ===============================================================

Rules kept exactly as Intel's inflaters (each refusal raises :class:`QgsMessageError` carrying the
code Intel returns): only the major version is checked (a minor change is compatible); the header
size must equal the message length; requests carry error_code 0; a success response must carry its
payload and an error response none. Quirks a byte-compatible peer must copy:

- GET_PLATFORM_INFO_RESP counts 4 bytes more than its fields (``sizeof`` of both u16s added twice):
  4 trailing zero bytes, which Intel's inflater requires. Its *error* form (28 bytes, from
  ``qgs_msg_gen_error_resp``) is therefore rejected by that same inflater with INVALID_SIZE; we
  encode and decode both exactly as Intel does.
- GET_COLLATERAL_RESP gets 4 trailing zero bytes when the *request's* minor version is 0, while its
  own header still says minor 1, so Intel's client rejects Intel's reply to a minor-0 request
  (it allows the 4 bytes only when the *reply's* minor is 0). We encode what Intel encodes
  (``pad=True``) and decode what Intel's inflater accepts.
- Error responses have the success struct's fixed size (quote 24, collateral 48, platform info 28),
  every size field 0 and ``header.error_code`` set; the server itself only sends UNEXPECTED.

No crypto, no I/O.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar

from ..errors import QgsMessageError

MAJOR_VERSION = 1
MINOR_VERSION = 1
HEADER = struct.Struct("<HHIII")
HEADER_SIZE = HEADER.size  # 16
#: size sums at or above this are Intel's UNEXPECTED (``temp >= UINT32_MAX``)
_U32_LIMIT = 0xFFFFFFFF
#: Intel's only attestation key id (``tdx_attest.h`` TDX_SGX_ECDSA_ATTESTATION_ID)
TDX_SGX_ECDSA_ATTESTATION_ID = bytes.fromhex("e86c046e8cc44d958173fc43c1fa4f3f")


class MsgType(enum.IntEnum):
    GET_QUOTE_REQ = 0
    GET_QUOTE_RESP = 1
    GET_COLLATERAL_REQ = 2
    GET_COLLATERAL_RESP = 3
    GET_PLATFORM_INFO_REQ = 4
    GET_PLATFORM_INFO_RESP = 5


#: ``QGS_MSG_TYPE_MAX``
TYPE_MAX = 6
REQUEST_TYPES = frozenset({MsgType.GET_QUOTE_REQ, MsgType.GET_COLLATERAL_REQ, MsgType.GET_PLATFORM_INFO_REQ})


class MsgError(enum.IntEnum):
    """``qgs_msg_error_t`` (``QGS_MSG_MK_ERROR(x) = 0x00012000 | x``)."""

    SUCCESS = 0
    UNEXPECTED = 0x12001
    OUT_OF_MEMORY = 0x12002
    INVALID_PARAMETER = 0x12003
    INVALID_VERSION = 0x12004
    INVALID_TYPE = 0x12005
    INVALID_SIZE = 0x12006
    INVALID_CODE = 0x12007


#: ``QGS_MSG_ERROR_MAX``: error responses must carry a code below it
ERROR_MAX = 0x12008


def _fail(structure: str, offset: int, reason: str, code: MsgError) -> QgsMessageError:
    return QgsMessageError(structure, offset, reason, int(code))


@dataclass(frozen=True, slots=True)
class Header:
    """``qgs_msg_header_t`` (16 bytes)."""

    type: int
    size: int
    error_code: int = 0
    major_version: int = MAJOR_VERSION
    minor_version: int = MINOR_VERSION

    def to_bytes(self) -> bytes:
        return HEADER.pack(self.major_version, self.minor_version, self.type, self.size, self.error_code)

    @classmethod
    def from_bytes(cls, data: bytes) -> Header:
        """The header at the start of ``data`` (at least 16 bytes; INVALID_PARAMETER otherwise)."""
        if len(data) < HEADER_SIZE:
            raise _fail(
                "QgsHeader",
                len(data),
                f"needs {HEADER_SIZE} bytes, got {len(data)}",
                MsgError.INVALID_PARAMETER,
            )
        major, minor, mtype, size, code = HEADER.unpack_from(data, 0)
        return cls(mtype, size, code, major, minor)


def message_type(data: bytes) -> int:
    """``qgs_msg_get_type``: the type of a serialized message, checking major version and range.

    Raises:
        QgsMessageError: shorter than a header (INVALID_PARAMETER), major version not 1 or type
            >= 6 (both INVALID_VERSION, as Intel's).
    """
    h = Header.from_bytes(data)
    if h.major_version != MAJOR_VERSION:
        raise _fail(
            "QgsHeader",
            0,
            f"major version {h.major_version} (expected {MAJOR_VERSION})",
            MsgError.INVALID_VERSION,
        )
    if h.type >= TYPE_MAX:
        raise _fail(
            "QgsHeader", 4, f"message type {h.type} is not below {TYPE_MAX}", MsgError.INVALID_VERSION
        )
    return h.type


def _inflate_header(structure: str, data: bytes, fixed: int, want_type: MsgType) -> Header:
    """The checks every Intel inflater starts with, in Intel's order."""
    data = bytes(data)
    if not data or len(data) < fixed:
        raise _fail(
            structure, len(data), f"needs at least {fixed} bytes, got {len(data)}", MsgError.INVALID_PARAMETER
        )
    h = Header.from_bytes(data)
    if h.major_version != MAJOR_VERSION:
        raise _fail(
            structure,
            0,
            f"major version {h.major_version} (expected {MAJOR_VERSION})",
            MsgError.INVALID_VERSION,
        )
    if h.type != want_type:
        raise _fail(
            structure, 4, f"type {h.type} is not {want_type.name} ({int(want_type)})", MsgError.INVALID_TYPE
        )
    if h.size != len(data):
        raise _fail(
            structure, 8, f"header size {h.size} but the message is {len(data)} bytes", MsgError.INVALID_SIZE
        )
    return h


def _check_total(structure: str, h: Header, total: int) -> None:
    if total >= _U32_LIMIT:
        raise _fail(structure, 16, f"field sizes add up to {total}, past a u32", MsgError.UNEXPECTED)
    if h.size != total:
        raise _fail(structure, 8, f"header size {h.size} but the fields say {total}", MsgError.INVALID_SIZE)


def _check_request_code(structure: str, h: Header) -> None:
    if h.error_code != 0:
        raise _fail(structure, 12, f"a request carries error_code {h.error_code:#x}", MsgError.INVALID_CODE)


def _response_code(structure: str, h: Header) -> bool:
    """True for a success response; False for a valid error response; INVALID_CODE otherwise."""
    if h.error_code == MsgError.SUCCESS:
        return True
    if h.error_code < ERROR_MAX:
        return False
    raise _fail(structure, 12, f"error_code {h.error_code:#x} is not a QGS error code", MsgError.INVALID_CODE)


# -- GET_QUOTE ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GetQuoteRequest:
    """GET_QUOTE_REQ: a TDREPORT (any non-zero length) and an optional list of 16-byte key ids."""

    FIXED: ClassVar[int] = 24
    TYPE: ClassVar[MsgType] = MsgType.GET_QUOTE_REQ

    report: bytes
    id_list: bytes = b""
    minor_version: int = MINOR_VERSION

    def to_bytes(self) -> bytes:
        if not self.report:
            raise _fail("GetQuoteRequest", 16, "report_size cannot be 0", MsgError.INVALID_PARAMETER)
        size = self.FIXED + len(self.report) + len(self.id_list)
        head = Header(self.TYPE, size, 0, MAJOR_VERSION, self.minor_version).to_bytes()
        return head + struct.pack("<II", len(self.report), len(self.id_list)) + self.report + self.id_list

    @classmethod
    def from_bytes(cls, data: bytes) -> GetQuoteRequest:
        """``qgs_msg_inflate_get_quote_req``."""
        name = "GetQuoteRequest"
        h = _inflate_header(name, data, cls.FIXED, cls.TYPE)
        _check_request_code(name, h)
        report_size, id_size = struct.unpack_from("<II", data, 16)
        if not report_size:
            raise _fail(name, 16, "report_size is 0", MsgError.INVALID_CODE)
        _check_total(name, h, cls.FIXED + report_size + id_size)
        report = bytes(data[24 : 24 + report_size])
        return cls(report, bytes(data[24 + report_size :]), h.minor_version)


@dataclass(frozen=True, slots=True)
class GetQuoteResponse:
    """GET_QUOTE_RESP: the quote (success) or an ``error_code`` with no payload (24 bytes)."""

    FIXED: ClassVar[int] = 24
    TYPE: ClassVar[MsgType] = MsgType.GET_QUOTE_RESP

    quote: bytes = b""
    selected_id: bytes = b""
    error_code: int = 0
    minor_version: int = MINOR_VERSION

    def to_bytes(self) -> bytes:
        if self.error_code:
            return Header(
                self.TYPE, self.FIXED, self.error_code, MAJOR_VERSION, self.minor_version
            ).to_bytes() + bytes(8)
        if not self.quote:
            raise _fail(
                "GetQuoteResponse", 20, "a success response needs a quote", MsgError.INVALID_PARAMETER
            )
        size = self.FIXED + len(self.selected_id) + len(self.quote)
        head = Header(self.TYPE, size, 0, MAJOR_VERSION, self.minor_version).to_bytes()
        return (
            head + struct.pack("<II", len(self.selected_id), len(self.quote)) + self.selected_id + self.quote
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> GetQuoteResponse:
        """``qgs_msg_inflate_get_quote_resp``."""
        name = "GetQuoteResponse"
        h = _inflate_header(name, data, cls.FIXED, cls.TYPE)
        sel, qsize = struct.unpack_from("<II", data, 16)
        _check_total(name, h, cls.FIXED + sel + qsize)
        if _response_code(name, h):
            if not qsize:
                raise _fail(name, 20, "success without a quote", MsgError.INVALID_SIZE)
            return cls(bytes(data[24 + sel :]), bytes(data[24 : 24 + sel]), 0, h.minor_version)
        if sel or qsize:
            raise _fail(name, 16, "an error response carries a payload", MsgError.INVALID_SIZE)
        return cls(b"", b"", h.error_code, h.minor_version)


# -- GET_COLLATERAL --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GetCollateralRequest:
    """GET_COLLATERAL_REQ: FMSPC and the PCK CA name ("processor"/"platform", NUL-terminated)."""

    FIXED: ClassVar[int] = 24
    TYPE: ClassVar[MsgType] = MsgType.GET_COLLATERAL_REQ

    fmspc: bytes
    pck_ca: bytes
    minor_version: int = MINOR_VERSION

    def to_bytes(self) -> bytes:
        if not self.fmspc or not self.pck_ca:
            raise _fail(
                "GetCollateralRequest", 16, "fmspc and pck_ca cannot be empty", MsgError.INVALID_PARAMETER
            )
        size = self.FIXED + len(self.fmspc) + len(self.pck_ca)
        head = Header(self.TYPE, size, 0, MAJOR_VERSION, self.minor_version).to_bytes()
        return head + struct.pack("<II", len(self.fmspc), len(self.pck_ca)) + self.fmspc + self.pck_ca

    @classmethod
    def from_bytes(cls, data: bytes) -> GetCollateralRequest:
        """``qgs_msg_inflate_get_collateral_req``."""
        name = "GetCollateralRequest"
        h = _inflate_header(name, data, cls.FIXED, cls.TYPE)
        _check_request_code(name, h)
        fsize, csize = struct.unpack_from("<II", data, 16)
        if not fsize or not csize:
            raise _fail(name, 16, "fmspc_size and pckca_size must be non-zero", MsgError.INVALID_SIZE)
        _check_total(name, h, cls.FIXED + fsize + csize)
        return cls(bytes(data[24 : 24 + fsize]), bytes(data[24 + fsize :]), h.minor_version)

    @property
    def ca_name(self) -> str:
        """``pck_ca`` read as Intel's quote provider reads it: up to the first NUL."""
        return self.pck_ca.split(b"\0", 1)[0].decode("latin-1")


#: GET_COLLATERAL_RESP blob names, in wire order
COLLATERAL_FIELDS = (
    "pck_crl_issuer_chain",
    "root_ca_crl",
    "pck_crl",
    "tcb_info_issuer_chain",
    "tcb_info",
    "qe_identity_issuer_chain",
    "qe_identity",
)


@dataclass(frozen=True, slots=True)
class GetCollateralResponse:
    """GET_COLLATERAL_RESP: collateral version and seven blobs, or an ``error_code`` (48 bytes).

    ``major``/``minor`` is the collateral version: 1.0 = PEM CRLs, 3.0 = hex DER, 3.1 = raw DER
    (Intel ``qpl_api.txt``). ``pad`` adds the 4 zero bytes Intel appends for minor-0 requests.
    """

    FIXED: ClassVar[int] = 48
    TYPE: ClassVar[MsgType] = MsgType.GET_COLLATERAL_RESP

    blobs: tuple[bytes, ...] = ()
    major: int = 3
    minor: int = 1
    error_code: int = 0
    pad: bool = False
    minor_version: int = MINOR_VERSION

    def to_bytes(self) -> bytes:
        if self.error_code:
            err = Header(self.TYPE, self.FIXED, self.error_code, MAJOR_VERSION, self.minor_version)
            return err.to_bytes() + bytes(self.FIXED - HEADER_SIZE)
        if len(self.blobs) != 7 or not all(self.blobs):
            raise _fail(
                "GetCollateralResponse",
                20,
                "a success response needs seven non-empty blobs",
                MsgError.INVALID_PARAMETER,
            )
        extra = 4 if self.pad else 0
        size = self.FIXED + extra + sum(len(b) for b in self.blobs)
        head = Header(self.TYPE, size, 0, MAJOR_VERSION, self.minor_version).to_bytes()
        sizes = struct.pack("<HH7I", self.major, self.minor, *(len(b) for b in self.blobs))
        return head + sizes + b"".join(self.blobs) + bytes(extra)

    @classmethod
    def from_bytes(cls, data: bytes) -> GetCollateralResponse:
        """``qgs_msg_inflate_get_collateral_resp`` (4 extra bytes allowed only when the reply's
        minor version is 0)."""
        name = "GetCollateralResponse"
        h = _inflate_header(name, data, cls.FIXED, cls.TYPE)
        major, minor, *sizes = struct.unpack_from("<HH7I", data, 16)
        extra = 4 if h.minor_version == 0 else 0
        _check_total(name, h, cls.FIXED + extra + sum(sizes))
        if _response_code(name, h):
            if not all(sizes):
                raise _fail(name, 20, "success with an empty collateral blob", MsgError.INVALID_SIZE)
            blobs, pos = [], cls.FIXED
            for n in sizes:
                blobs.append(bytes(data[pos : pos + n]))
                pos += n
            return cls(tuple(blobs), major, minor, 0, bool(extra), h.minor_version)
        if any(sizes):
            raise _fail(name, 20, "an error response carries a payload", MsgError.INVALID_SIZE)
        return cls((), 0, 0, h.error_code, False, h.minor_version)

    def blob(self, field: str) -> bytes:
        return self.blobs[COLLATERAL_FIELDS.index(field)]


# -- GET_PLATFORM_INFO -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GetPlatformInfoRequest:
    """GET_PLATFORM_INFO_REQ: the header alone (Intel accepts a longer message if sizes agree)."""

    FIXED: ClassVar[int] = 16
    TYPE: ClassVar[MsgType] = MsgType.GET_PLATFORM_INFO_REQ

    minor_version: int = MINOR_VERSION

    def to_bytes(self) -> bytes:
        return Header(self.TYPE, self.FIXED, 0, MAJOR_VERSION, self.minor_version).to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> GetPlatformInfoRequest:
        """``qgs_msg_inflate_get_platform_info_req``."""
        name = "GetPlatformInfoRequest"
        h = _inflate_header(name, data, cls.FIXED, cls.TYPE)
        _check_request_code(name, h)
        return cls(h.minor_version)


@dataclass(frozen=True, slots=True)
class GetPlatformInfoResponse:
    """GET_PLATFORM_INFO_RESP: TDQE and PCE ISVSVN, platform id (the QE ID) and CPUSVN."""

    FIXED: ClassVar[int] = 28
    #: Intel's success size counts both u16s twice: 4 trailing zero bytes
    QUIRK: ClassVar[int] = 4
    TYPE: ClassVar[MsgType] = MsgType.GET_PLATFORM_INFO_RESP

    tdqe_isvsvn: int = 0
    pce_isvsvn: int = 0
    platform_id: bytes = b""
    cpusvn: bytes = b""
    error_code: int = 0
    minor_version: int = MINOR_VERSION

    def to_bytes(self) -> bytes:
        if self.error_code:
            err = Header(self.TYPE, self.FIXED, self.error_code, MAJOR_VERSION, self.minor_version)
            return err.to_bytes() + bytes(self.FIXED - HEADER_SIZE)
        if not self.platform_id or not self.cpusvn:
            raise _fail(
                "GetPlatformInfoResponse",
                20,
                "platform_id and cpusvn cannot be empty",
                MsgError.INVALID_PARAMETER,
            )
        size = self.QUIRK + self.FIXED + len(self.platform_id) + len(self.cpusvn)
        head = Header(self.TYPE, size, 0, MAJOR_VERSION, self.minor_version).to_bytes()
        fields = struct.pack(
            "<HHII", self.tdqe_isvsvn, self.pce_isvsvn, len(self.platform_id), len(self.cpusvn)
        )
        return head + fields + self.platform_id + self.cpusvn + bytes(self.QUIRK)

    @classmethod
    def from_bytes(cls, data: bytes) -> GetPlatformInfoResponse:
        """``qgs_msg_inflate_get_platform_info_resp``: requires the 4 extra bytes, so it refuses
        Intel's own 28-byte error form (INVALID_SIZE)."""
        name = "GetPlatformInfoResponse"
        h = _inflate_header(name, data, cls.FIXED, cls.TYPE)
        tdqe, pce, id_size, svn_size = struct.unpack_from("<HHII", data, 16)
        _check_total(name, h, cls.QUIRK + cls.FIXED + id_size + svn_size)
        if _response_code(name, h):
            if not id_size or not svn_size:
                raise _fail(name, 20, "success without platform id or CPUSVN", MsgError.INVALID_SIZE)
            pid = bytes(data[28 : 28 + id_size])
            return cls(
                tdqe, pce, pid, bytes(data[28 + id_size : 28 + id_size + svn_size]), 0, h.minor_version
            )
        if id_size or svn_size:
            raise _fail(name, 20, "an error response carries a payload", MsgError.INVALID_SIZE)
        return cls(0, 0, b"", b"", h.error_code, h.minor_version)


Request = GetQuoteRequest | GetCollateralRequest | GetPlatformInfoRequest
Response = GetQuoteResponse | GetCollateralResponse | GetPlatformInfoResponse

#: request type -> (request class, the response class that answers it)
REQUESTS: dict[int, tuple[type[Request], type[Response]]] = {
    MsgType.GET_QUOTE_REQ: (GetQuoteRequest, GetQuoteResponse),
    MsgType.GET_COLLATERAL_REQ: (GetCollateralRequest, GetCollateralResponse),
    MsgType.GET_PLATFORM_INFO_REQ: (GetPlatformInfoRequest, GetPlatformInfoResponse),
}
RESPONSES: dict[int, type[Response]] = {
    MsgType.GET_QUOTE_RESP: GetQuoteResponse,
    MsgType.GET_COLLATERAL_RESP: GetCollateralResponse,
    MsgType.GET_PLATFORM_INFO_RESP: GetPlatformInfoResponse,
}


def error_response(request_type: int, code: int = MsgError.UNEXPECTED) -> Response:
    """``qgs_msg_gen_error_resp`` for the response type that answers ``request_type``."""
    _, resp = REQUESTS[request_type]
    return resp(error_code=code)


def decode_request(data: bytes) -> Request:
    """A request of any type (``qgs_msg_get_type`` then its inflater).

    Raises:
        QgsMessageError: as Intel's (a response type gives INVALID_TYPE).
    """
    mtype = message_type(data)
    if mtype not in REQUESTS:
        raise _fail(
            "QgsRequest", 4, f"type {mtype} ({MsgType(mtype).name}) is not a request", MsgError.INVALID_TYPE
        )
    return REQUESTS[mtype][0].from_bytes(data)


def decode_response(data: bytes) -> Response:
    """A response of any type (``qgs_msg_get_type`` then its inflater)."""
    mtype = message_type(data)
    if mtype not in RESPONSES:
        raise _fail(
            "QgsResponse", 4, f"type {mtype} ({MsgType(mtype).name}) is not a response", MsgError.INVALID_TYPE
        )
    return RESPONSES[mtype].from_bytes(data)


__all__ = [
    "COLLATERAL_FIELDS",
    "ERROR_MAX",
    "HEADER_SIZE",
    "MAJOR_VERSION",
    "MINOR_VERSION",
    "REQUESTS",
    "REQUEST_TYPES",
    "RESPONSES",
    "TDX_SGX_ECDSA_ATTESTATION_ID",
    "TYPE_MAX",
    "GetCollateralRequest",
    "GetCollateralResponse",
    "GetPlatformInfoRequest",
    "GetPlatformInfoResponse",
    "GetQuoteRequest",
    "GetQuoteResponse",
    "Header",
    "MsgError",
    "MsgType",
    "Request",
    "Response",
    "decode_request",
    "decode_response",
    "error_response",
    "message_type",
]
