"""The QGS wire protocol, sans-I/O: framing, raw mode, and the server and client connections.

Framing (``shared/specs/tdx-qgs.md`` §1.2): every message is ``u32 length, big-endian`` ||
message, the length counting the message only. Intel's server (``qgs_server.cpp handle_read``)
decides what it was sent once 20 bytes (prefix + message header) are in: a non-zero length equal
to the header's ``size`` field with a header ``qgs_msg_get_type`` accepts is a framed message;
anything else is **raw mode** (§1.4): 1024 bytes of TDREPORT with no prefix, answered with the
bare quote bytes, or with a close and no data when the report is refused (fewer bytes then EOF or
the deadline: a close). As Intel's server, we read one request per connection and never read what
follows it, framed or raw, so the event does not depend on how the stream was chunked. Intel handles one
request per connection and then closes; it gives each connection 30 s; its 2026 build refuses a
length prefix over 1 MiB. Unlike Intel's server (§2.3) we accept any chunking.

:class:`QgsServerConnection` follows h11: feed bytes with :meth:`~QgsServerConnection.receive_data`
(``b""`` = EOF), take events with :meth:`~QgsServerConnection.next_event`, turn the answer into
bytes with :meth:`~QgsServerConnection.send` / :meth:`~QgsServerConnection.send_raw_quote`; time
is passed in (``now``) and never read. Events:

- :class:`RequestReceived`: a valid request of an allowed type; answer it with its response type;
- :class:`MalformedRequest`: a request type Intel's server answers even when its body does not
  inflate (it replies ``error_response(type)``, code 0x12001 UNEXPECTED);
- :class:`RawReportReceived`: 1024 bytes in raw mode; answer with the quote or close;
- :class:`CloseConnection`: close without a reply (what Intel's server does for input it cannot
  use: a response type sent as a request, a bad version, a short raw report, EOF
  mid-message, an oversized prefix, the deadline, and, per listener, a type not on its allow-list);
- :data:`NEED_DATA`.

A listener's allow-list (``allowed``) restricts the request types and raw mode: a socket handed to
a VMM may be limited to GET_QUOTE (raw mode lets a guest push any bytes through an unwrapping VMM,
§1.4). :class:`QgsClientConnection` is the other side (a request knows its response type).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from ..abi.qgs import (
    HEADER_SIZE,
    REQUEST_TYPES,
    REQUESTS,
    MsgError,
    MsgType,
    Request,
    Response,
    error_response,
    message_type,
)
from ..errors import LocalProtocolError, QgsMessageError, RemoteProtocolError

PREFIX = struct.Struct(">I")
PREFIX_SIZE = PREFIX.size
#: the 2026 QGS's cap on a length prefix
DEFAULT_MAX_MESSAGE = 1 << 20
#: a raw-mode request is exactly one TDREPORT_STRUCT
RAW_REPORT_SIZE = 1024
#: Intel's per-connection timer (``QGS_TIMEOUT``), seconds
DEFAULT_TIMEOUT = 30.0
#: what a listener accepts by default: every request type and raw mode
ALL_REQUESTS: Final = frozenset(REQUEST_TYPES)


def encode_frame(message: bytes) -> bytes:
    """``message`` behind its 4-byte big-endian length."""
    if len(message) > 0xFFFFFFFF:
        raise LocalProtocolError(f"a {len(message)}-byte message does not fit a u32 length")
    return PREFIX.pack(len(message)) + message


@dataclass(frozen=True, slots=True)
class RequestReceived:
    request: Request

    @property
    def type(self) -> int:
        return self.request.TYPE


@dataclass(frozen=True, slots=True)
class MalformedRequest:
    """A message of request type ``type`` that its inflater refuses: Intel's ``code`` and why."""

    type: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class RawReportReceived:
    report: bytes


@dataclass(frozen=True, slots=True)
class CloseConnection:
    reason: str


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()

ServerEvent = RequestReceived | MalformedRequest | RawReportReceived | CloseConnection | _NeedData


class QgsServerConnection:
    """The server side of one QGS connection (one request, one answer, then close).

    Args:
        now: when the connection was accepted (the deadline counts from here).
        allowed: request types this listener serves; others are closed without a reply.
        allow_raw: whether raw mode (a bare TDREPORT) is served.
        max_message: the largest length prefix accepted.
        timeout: seconds from ``now`` until :meth:`next_event` says :class:`CloseConnection`.
    """

    __slots__ = (
        "_buf",
        "_eof",
        "_event",
        "_mode",
        "_now",
        "allow_raw",
        "allowed",
        "deadline",
        "max_message",
        "state",
    )

    def __init__(
        self,
        now: float,
        *,
        allowed: frozenset[int] = ALL_REQUESTS,
        allow_raw: bool = True,
        max_message: int = DEFAULT_MAX_MESSAGE,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        unknown = set(allowed) - REQUEST_TYPES
        if unknown:
            raise ValueError(f"not QGS request types: {sorted(unknown)}")
        self.allowed = frozenset(allowed)
        self.allow_raw = allow_raw
        self.max_message = max_message
        self.deadline = now + timeout
        self._now = now
        self._buf = bytearray()
        self._eof = False
        self._mode: str | None = None  # None until decided, "framed" or "raw"
        self._event: ServerEvent | None = None  # the final event once decided
        #: "READING" -> "ANSWERING" (an event that needs an answer was returned) -> "DONE"
        self.state = "READING"

    # -- input ----------------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float | None = None) -> None:
        """Feed received bytes (``b""`` = the peer closed its side); ``now`` advances the clock."""
        if now is not None:
            self._now = max(self._now, now)
        if self.state != "READING" or self._event is not None:
            return  # one request per connection: later bytes are never read (as Intel)
        if not data:
            self._eof = True
            return
        self._buf += data

    def next_event(self, now: float | None = None) -> ServerEvent:
        if now is not None:
            self._now = max(self._now, now)
        if self.state != "READING":
            return CloseConnection("the connection is finished") if self.state == "DONE" else NEED_DATA
        if self._event is None:
            self._event = self._decide()
        event = self._event
        if event is NEED_DATA:
            self._event = None
            if self._now >= self.deadline:
                return self._close("no complete request before the deadline")
            return NEED_DATA
        if isinstance(event, CloseConnection):
            self.state = "DONE"
        else:
            self.state = "ANSWERING"
        return event

    def _close(self, reason: str) -> CloseConnection:
        self.state = "DONE"
        self._event = CloseConnection(reason)
        return self._event

    def _decide(self) -> ServerEvent:
        buf = self._buf
        if self._mode is None:
            if len(buf) < PREFIX_SIZE + HEADER_SIZE:
                return self._short("the start of a request")
            (length,) = PREFIX.unpack_from(buf, 0)
            header = bytes(buf[PREFIX_SIZE : PREFIX_SIZE + HEADER_SIZE])
            size = int.from_bytes(header[8:12], "little")
            try:
                message_type(header)
                framed = length != 0 and size == length
            except QgsMessageError:
                framed = False
            self._mode = "framed" if framed else "raw"
        if self._mode == "raw":
            return self._raw()
        return self._framed()

    def _short(self, what: str) -> ServerEvent:
        if self._eof:
            return CloseConnection(f"connection closed before {what} ({len(self._buf)} bytes)")
        return NEED_DATA

    def _raw(self) -> ServerEvent:
        if not self.allow_raw:
            return CloseConnection("raw mode (a bare TDREPORT) is not allowed on this listener")
        if len(self._buf) < RAW_REPORT_SIZE:
            return self._short(f"a {RAW_REPORT_SIZE}-byte raw TDREPORT")
        # bytes after the report are never read, as after a framed message (the same event
        # however the stream is chunked)
        return RawReportReceived(bytes(self._buf[:RAW_REPORT_SIZE]))

    def _framed(self) -> ServerEvent:
        (length,) = PREFIX.unpack_from(self._buf, 0)
        if length > self.max_message:
            return CloseConnection(f"length prefix {length} exceeds the limit of {self.max_message}")
        if len(self._buf) < PREFIX_SIZE + length:
            return self._short(f"the end of a {length}-byte message")
        message = bytes(self._buf[PREFIX_SIZE : PREFIX_SIZE + length])
        mtype = message_type(message)  # checked in _decide
        if mtype not in REQUESTS:
            return CloseConnection(f"message type {mtype} ({MsgType(mtype).name}) is not a request")
        if mtype not in self.allowed:
            return CloseConnection(f"{MsgType(mtype).name} is not allowed on this listener")
        try:
            return RequestReceived(REQUESTS[mtype][0].from_bytes(message))
        except QgsMessageError as exc:
            return MalformedRequest(mtype, exc.code, str(exc))

    # -- output ---------------------------------------------------------------------------------

    def send(self, response: Response) -> bytes:
        """The framed bytes of the answer to the request just received; the connection is then done.

        Raises:
            LocalProtocolError: no request is waiting, or ``response`` is not its response type.
        """
        event = self._event
        if self.state != "ANSWERING" or not isinstance(event, (RequestReceived, MalformedRequest)):
            raise LocalProtocolError("no framed request is waiting for an answer")
        want = REQUESTS[event.type][1]
        if not isinstance(response, want):
            raise LocalProtocolError(f"a {MsgType(event.type).name} is answered with {want.__name__}")
        self.state = "DONE"
        return encode_frame(response.to_bytes())

    def send_error(self, code: int = MsgError.UNEXPECTED) -> bytes:
        """The error answer Intel's server gives (always UNEXPECTED there) to the waiting request."""
        event = self._event
        if not isinstance(event, (RequestReceived, MalformedRequest)):
            raise LocalProtocolError("no framed request is waiting for an answer")
        return self.send(error_response(event.type, code))

    def send_raw_quote(self, quote: bytes) -> bytes:
        """The bare quote bytes answering a raw-mode TDREPORT (no prefix, no header)."""
        if self.state != "ANSWERING" or not isinstance(self._event, RawReportReceived):
            raise LocalProtocolError("no raw-mode report is waiting for an answer")
        if not quote:
            raise LocalProtocolError("a raw-mode answer is a quote; refuse by closing instead")
        self.state = "DONE"
        return bytes(quote)

    def refuse(self) -> None:
        """Close without a reply (raw report refused, or the engine failed where Intel closes)."""
        self.state = "DONE"


# -- client ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    response: Response


ClientEvent = ResponseReceived | _NeedData


class QgsClientConnection:
    """The client side: send one request, read its framed response (a request knows its response)."""

    __slots__ = ("_buf", "_eof", "_want", "max_message", "state")

    def __init__(self, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self.max_message = max_message
        self._buf = bytearray()
        self._eof = False
        self._want: type[Response] | None = None
        self.state = "IDLE"

    def send(self, request: Request) -> bytes:
        if self.state != "IDLE":
            raise LocalProtocolError("one request per QGS connection")
        self._want = REQUESTS[request.TYPE][1]
        self.state = "WAITING"
        return encode_frame(request.to_bytes())

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        else:
            self._buf += data

    def next_event(self) -> ClientEvent:
        """The response, or :data:`NEED_DATA`.

        Raises:
            RemoteProtocolError: closed early, an oversized length, or not a valid response of the
                expected type (with Intel's inflater's reason).
        """
        if self.state != "WAITING" or self._want is None:
            raise LocalProtocolError("no request is waiting for a response")
        buf = self._buf
        if len(buf) >= PREFIX_SIZE:
            (length,) = PREFIX.unpack_from(buf, 0)
            if length > self.max_message:
                raise RemoteProtocolError(f"length prefix {length} exceeds the limit of {self.max_message}")
            if len(buf) >= PREFIX_SIZE + length:
                self.state = "DONE"
                try:
                    return ResponseReceived(
                        self._want.from_bytes(bytes(buf[PREFIX_SIZE : PREFIX_SIZE + length]))
                    )
                except QgsMessageError as exc:
                    raise RemoteProtocolError(f"not a valid {self._want.__name__}: {exc}") from None
        if self._eof:
            self.state = "DONE"
            raise RemoteProtocolError(f"the QGS closed the connection after {len(buf)} bytes of a response")
        return NEED_DATA


__all__ = [
    "ALL_REQUESTS",
    "DEFAULT_MAX_MESSAGE",
    "DEFAULT_TIMEOUT",
    "NEED_DATA",
    "PREFIX_SIZE",
    "RAW_REPORT_SIZE",
    "ClientEvent",
    "CloseConnection",
    "MalformedRequest",
    "QgsClientConnection",
    "QgsServerConnection",
    "RawReportReceived",
    "RequestReceived",
    "ResponseReceived",
    "ServerEvent",
    "encode_frame",
]
