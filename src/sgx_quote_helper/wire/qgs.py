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

Our probe (not Intel's protocol; the AESM side's HelperProbe in QGS framing): a frame whose
header has our private type :data:`PROBE_REQ` (1000) and whose body is :data:`PROBE_MAGIC`, exactly
:func:`probe_request`. It gives :class:`ProbeReceived` on every listener whatever its allow-list
(the probe asks which instance serves a socket: the takeover and the readiness probe need it), and
is answered with :meth:`QgsServerConnection.send_probe_answer`: a :data:`PROBE_RESP` (1001) frame
whose body is the :class:`ProbeAnswer` as JSON. Intel's server reads type 1000 as the start of a raw
TDREPORT (``qgs_msg_get_type`` refuses types >= 6) and closes without a word when the prober
half-closes: "another program". No TDREPORT starts with the probe's bytes (its first byte is the
report type, 0x81), so raw mode loses nothing. :class:`QgsProbeClient` is the asking side.

A listener's allow-list (``allowed``) restricts the request types and raw mode: a socket handed to
a VMM may be limited to GET_QUOTE (raw mode lets a guest push any bytes through an unwrapping VMM,
§1.4). :class:`QgsClientConnection` is the other side (a request knows its response type).
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass
from typing import Final

from ..abi.qgs import (
    HEADER,
    HEADER_SIZE,
    MAJOR_VERSION,
    MINOR_VERSION,
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
#: our probe's private message types (not Intel's: see the module doc)
PROBE_REQ: Final = 1000
PROBE_RESP: Final = 1001
#: the probe request's body
PROBE_MAGIC: Final = b"sgx-quote-helper probe\0"
#: the largest probe answer accepted
MAX_PROBE_ANSWER: Final = 4096


def encode_frame(message: bytes) -> bytes:
    """``message`` behind its 4-byte big-endian length."""
    if len(message) > 0xFFFFFFFF:
        raise LocalProtocolError(f"a {len(message)}-byte message does not fit a u32 length")
    return PREFIX.pack(len(message)) + message


def probe_request() -> bytes:
    """The probe's bytes (framed: prefix, header of type :data:`PROBE_REQ`, :data:`PROBE_MAGIC`)."""
    size = HEADER_SIZE + len(PROBE_MAGIC)
    return encode_frame(HEADER.pack(MAJOR_VERSION, MINOR_VERSION, PROBE_REQ, size, 0) + PROBE_MAGIC)


_PROBE_FRAME: Final = probe_request()
_PROBE_START: Final = _PROBE_FRAME[: PREFIX.size + HEADER_SIZE]


@dataclass(frozen=True, slots=True)
class ProbeAnswer:
    """Who serves a QGS socket (the fields of the AESM side's HelperProbe answer)."""

    implementation: str
    version: str
    pid: int
    instance_id: str
    started_ns: int
    #: the server's own word: ``serving``, ``handed-over``, ``terminating``, ``standby``
    state: str

    def to_bytes(self) -> bytes:
        """The answer's frame: prefix, header of type :data:`PROBE_RESP`, the JSON body."""
        body = json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()
        size = HEADER_SIZE + len(body)
        return encode_frame(HEADER.pack(MAJOR_VERSION, MINOR_VERSION, PROBE_RESP, size, 0) + body)

    @classmethod
    def from_message(cls, message: bytes) -> ProbeAnswer:
        """Parse a probe answer message (header and body, no prefix).

        Raises:
            RemoteProtocolError: not a probe answer, or its body is not the JSON object it must be.
        """
        if len(message) < HEADER_SIZE:
            raise RemoteProtocolError(f"a {len(message)}-byte probe answer is shorter than a header")
        major, _minor, mtype, size, code = HEADER.unpack_from(message, 0)
        if major != MAJOR_VERSION or mtype != PROBE_RESP or size != len(message) or code != 0:
            raise RemoteProtocolError(
                f"not a probe answer (major {major}, type {mtype}, size {size} of {len(message)}, code {code})"
            )
        try:
            data = json.loads(message[HEADER_SIZE:])
            answer = cls(
                implementation=data["implementation"],
                version=data["version"],
                pid=data["pid"],
                instance_id=data["instance_id"],
                started_ns=data["started_ns"],
                state=data["state"],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise RemoteProtocolError(f"the probe answer's body is not a probe answer: {exc}") from None
        for name, want in (("implementation", str), ("version", str), ("instance_id", str), ("state", str)):
            if type(getattr(answer, name)) is not want:
                raise RemoteProtocolError(f"the probe answer's {name} is not a string")
        for name in ("pid", "started_ns"):
            value = getattr(answer, name)
            if type(value) is not int or value < 0:
                raise RemoteProtocolError(f"the probe answer's {name} is not a non-negative integer")
        return answer


@dataclass(frozen=True, slots=True)
class ProbeReceived:
    """Our probe (see the module doc): answer it with :meth:`QgsServerConnection.send_probe_answer`."""


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

ServerEvent = (
    RequestReceived | MalformedRequest | RawReportReceived | ProbeReceived | CloseConnection | _NeedData
)


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
            if buf[: len(_PROBE_START)] == _PROBE_START:  # maybe our probe (else raw mode, as Intel)
                if len(buf) < len(_PROBE_FRAME):
                    return self._short("the end of a probe")
                if buf[: len(_PROBE_FRAME)] == _PROBE_FRAME:
                    self._mode = "probe"
                    return ProbeReceived()
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

    def send_probe_answer(self, answer: ProbeAnswer) -> bytes:
        """The answer to our probe (see the module doc); the connection is then done."""
        if self.state != "ANSWERING" or not isinstance(self._event, ProbeReceived):
            raise LocalProtocolError("no probe is waiting for an answer")
        self.state = "DONE"
        return answer.to_bytes()

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


class QgsProbeClient:
    """The asking side of our probe: :meth:`send` the probe, feed what comes back, :meth:`next_event`."""

    __slots__ = ("_buf", "_eof", "state")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._eof = False
        self.state = "IDLE"

    def send(self) -> bytes:
        if self.state != "IDLE":
            raise LocalProtocolError("one probe per QGS connection")
        self.state = "WAITING"
        return _PROBE_FRAME

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        elif len(self._buf) <= MAX_PROBE_ANSWER + PREFIX_SIZE:
            self._buf += data

    def next_event(self) -> ProbeAnswer | _NeedData | CloseConnection:
        """The answer, :data:`NEED_DATA`, or :class:`CloseConnection` (closed with no data: Intel's
        server, or any program that does not know our probe).

        Raises:
            RemoteProtocolError: an answer that is not a probe answer, too long, or cut short.
        """
        if self.state != "WAITING":
            raise LocalProtocolError("no probe is waiting for an answer")
        buf = self._buf
        if len(buf) >= PREFIX_SIZE:
            (length,) = PREFIX.unpack_from(buf, 0)
            if length > MAX_PROBE_ANSWER:
                self.state = "DONE"
                raise RemoteProtocolError(f"a {length}-byte probe answer is longer than {MAX_PROBE_ANSWER}")
            if len(buf) >= PREFIX_SIZE + length:
                self.state = "DONE"
                return ProbeAnswer.from_message(bytes(buf[PREFIX_SIZE : PREFIX_SIZE + length]))
        if self._eof:
            self.state = "DONE"
            if not buf:
                return CloseConnection("closed on our probe with no data")
            raise RemoteProtocolError(f"closed after {len(buf)} bytes of a probe answer")
        return NEED_DATA


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
    "PROBE_MAGIC",
    "PROBE_REQ",
    "PROBE_RESP",
    "RAW_REPORT_SIZE",
    "ClientEvent",
    "CloseConnection",
    "MalformedRequest",
    "ProbeAnswer",
    "ProbeReceived",
    "QgsClientConnection",
    "QgsProbeClient",
    "QgsServerConnection",
    "RawReportReceived",
    "RequestReceived",
    "ResponseReceived",
    "ServerEvent",
    "encode_frame",
    "probe_request",
]
