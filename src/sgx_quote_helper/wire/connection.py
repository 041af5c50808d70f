"""One AESM connection as a sans-I/O state machine, in the style of h11: bytes in, events out.

No I/O and no clock: the caller feeds what its socket delivered (``receive_data(data, now)``,
``b""`` for end of file), pulls events (``next_event()``), turns values into bytes to write
(``send(value, now)``) and asks what the connection owes (``owed``, ``queued``, ``buffered``,
``next_deadline()``, ``handle_timeout(now)``). Every socket user (the daemon, the upstream proxy,
both clients, the socket-path probe, the test harnesses) is a thin adapter over this module.

The same core serves both sides (:class:`ServerConnection` reads requests and sends responses,
:class:`ClientConnection` sends requests and reads responses). Events:

- a decoded :class:`~.values.Request` (server) or :class:`~.values.Response` (client);
- :data:`NEED_DATA`: nothing complete yet, feed more bytes;
- :data:`PEER_CLOSED`: the peer closed cleanly between messages;
- :class:`ProtocolViolation`: the peer broke the protocol; ``violation.error`` is the
  :class:`~sgx_quote_helper.errors.RemoteProtocolError` whose ``fault`` names how (the same name on
  both sides): an oversized length prefix, a frame cut short by EOF, garbage protobuf, an envelope
  with no known message (server) or not the awaited reply type (client), a frame begun and not
  finished within ``frame_timeout``, a connection that sent nothing within ``idle_timeout``, a peer
  that read none of its reply for ``idle_timeout`` while we wait to write (write-blocked).
  The connection is dead after a violation: every later ``next_event`` returns it again.

Rules of operation:

1. A violation found while receiving (an oversized prefix, EOF inside a frame) pre-empts the frames
   received before it: the peer is broken, nothing more of its stream is answered. A violation in
   a frame's body (garbage, unknown envelope) is found when that frame's turn comes, so the
   requests before it are answered first.
2. Timeouts apply only while nothing is owed: a connection with a request being served or queued
   is never idle. The one exception is the write-blocked peer (rule 3).
3. Time is a parameter. ``last_activity`` moves on every received chunk and every sent message;
   ``writing_paused(now, pending)`` / ``write_progress(now, pending)`` / ``writing_resumed(now)``
   tell the core whether the peer reads what we write.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..errors import Fault, LocalProtocolError, RemoteProtocolError
from .framing import DEFAULT_MAX_FRAME_SIZE, HEADER, HEADER_SIZE, FrameDecoder, encode_frame
from .messages import (
    EmptyRequest,
    Request,
    Response,
    UnknownRequest,
    decode_request,
    decode_response,
    encode_request,
    encode_response_frame,
)


class NeedData:
    """Event: nothing complete yet; feed more bytes."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


class PeerClosed:
    """Event: the peer closed its side cleanly, between messages."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PEER_CLOSED"


class Expired:
    """Timeout outcome: the connection served and has been idle too long (or we drain); close it
    quietly. Not a violation."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "EXPIRED"


_unpack_prefix = HEADER.unpack_from

NEED_DATA = NeedData()
PEER_CLOSED = PeerClosed()
EXPIRED = Expired()


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """Event: the peer broke the protocol (see the module doc)."""

    error: RemoteProtocolError

    @property
    def fault(self) -> str:
        """The :class:`~sgx_quote_helper.errors.Fault` name."""
        return self.error.fault

    @property
    def reason(self) -> str:
        return str(self.error)


class _Connection:
    """What both sides share: framing, the queue of received frames, EOF, violations, timers."""

    __slots__ = (
        "_blocked_pending",
        "_blocked_since",
        "_decoder",
        "_eof",
        "_frames",
        "_violation",
        "frame_started",
        "frame_timeout",
        "idle_timeout",
        "last_activity",
        "owed",
        "served",
    )

    def __init__(
        self,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        frame_timeout: float | None = None,
        idle_timeout: float | None = None,
        now: float = 0.0,
    ) -> None:
        self._decoder = FrameDecoder(max_frame_size)
        self._frames: deque[bytes] = deque()
        self._violation: ProtocolViolation | None = None
        self._eof = False
        self._blocked_since: float | None = None
        self._blocked_pending = 0
        self.frame_timeout = frame_timeout
        self.idle_timeout = idle_timeout
        #: the moment of the last received chunk or sent message
        self.last_activity = now
        #: when the frame being received began
        self.frame_started = now
        #: messages sent so far
        self.served = 0
        #: server: requests handed out by next_event and not yet answered; client: replies awaited
        self.owed = 0

    # -------------------------------------------------------------- receiving

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes the peer sent (``b""``: the peer closed its side)."""
        if self._violation is not None or self._eof:
            return
        self.last_activity = now
        decoder = self._decoder
        if not data:
            self._eof = True
            try:
                decoder.eof()
            except RemoteProtocolError as exc:
                self._fail(exc)
            return
        was_in_frame = decoder.in_frame
        try:
            frames = decoder.feed(data)
        except RemoteProtocolError as exc:
            self._fail(exc)
            return
        if decoder.in_frame and (frames or not was_in_frame):
            self.frame_started = now
        if frames:
            self._frames.extend(frames)

    def next_frame(self) -> bytes | ProtocolViolation | NeedData | PeerClosed:
        """The next complete frame body, undecoded (the proxy forwards these as they are)."""
        if self._violation is not None:
            return self._violation
        if self._frames:
            return self._frames.popleft()
        return PEER_CLOSED if self._eof else NEED_DATA

    def _fail(self, error: RemoteProtocolError) -> ProtocolViolation:
        self._violation = ProtocolViolation(error)
        self._frames.clear()
        return self._violation

    @property
    def violation(self) -> ProtocolViolation | None:
        """The violation that ended the connection, if any."""
        return self._violation

    @property
    def queued(self) -> int:
        """Complete frames received and not yet taken."""
        return len(self._frames)

    @property
    def in_frame(self) -> bool:
        """Part of a frame has arrived."""
        return self._decoder.in_frame

    @property
    def buffered(self) -> int:
        """Bytes held for received frames (queued ones and the one in progress)."""
        return self._decoder.buffered + sum(map(len, self._frames))

    @property
    def eof(self) -> bool:
        """The peer closed its side."""
        return self._eof

    # -------------------------------------------------------------- sending

    def _sent(self, now: float) -> None:
        self.served += 1
        self.last_activity = now

    def writing_paused(self, now: float, pending: int) -> None:
        """The transport holds more than it wants of our writes (``pending`` bytes): the peer is
        not reading."""
        if self._blocked_since is None:
            self._blocked_since = now
            self._blocked_pending = pending

    def write_progress(self, now: float, pending: int) -> None:
        """The transport now holds ``pending`` bytes; less than before means the peer read some."""
        if self._blocked_since is not None and pending < self._blocked_pending:
            self._blocked_since = now
            self._blocked_pending = pending

    def writing_resumed(self, now: float) -> None:
        """The peer read enough of our writes."""
        self._blocked_since = None
        self._blocked_pending = 0
        self.last_activity = now

    @property
    def write_blocked(self) -> bool:
        return self._blocked_since is not None

    # -------------------------------------------------------------- deadlines

    def next_deadline(self, draining: bool = False) -> float | None:
        """When :meth:`handle_timeout` will next have something to say (None: no timer runs)."""
        times = []
        if self._violation is not None:
            return None
        if self._blocked_since is not None and self.idle_timeout is not None:
            times.append(self._blocked_since + self.idle_timeout)
        if not (self.owed or self._frames or self._eof):
            if self._decoder.in_frame:
                if self.frame_timeout is not None:
                    times.append(self.frame_started + self.frame_timeout)
            else:
                limit = self._idle_limit(draining)
                if limit is not None:
                    times.append(self.last_activity + limit)
        return min(times) if times else None

    def _idle_limit(self, draining: bool) -> float | None:
        if not draining:
            return self.idle_timeout
        if self.served:
            return 0.0
        return min(t for t in (self.frame_timeout, self.idle_timeout, float("inf")) if t is not None)

    def handle_timeout(self, now: float, draining: bool = False) -> ProtocolViolation | Expired | None:
        """Check the deadlines at ``now``.

        Returns a violation (frame, idle-before-any-request or reply timeout: the connection is
        dead), :data:`EXPIRED` (served and idle past the limit, or idle while ``draining``: close it
        quietly), or None. ``draining``: the server stops; a connection that served closes at once,
        one that has not gets ``min(frame_timeout, idle_timeout)``.
        """
        if self._violation is not None:
            return None
        idle = self.idle_timeout
        if self._blocked_since is not None and idle is not None and now - self._blocked_since > idle:
            return self._fail(
                RemoteProtocolError(
                    f"reply not read for {idle:g}s (the client stopped reading)", Fault.REPLY_TIMEOUT
                )
            )
        if self.owed or self._frames or self._eof:
            return None
        if self._decoder.in_frame:
            ft = self.frame_timeout
            if ft is not None and now - self.frame_started > ft:
                return self._fail(
                    RemoteProtocolError(
                        f"request not complete after {ft:g}s (slow client)", Fault.FRAME_TIMEOUT
                    )
                )
            return None
        limit = self._idle_limit(draining)
        if limit is None or now - self.last_activity <= limit:
            return None
        if not self.served and not draining:
            return self._fail(
                RemoteProtocolError(f"no request within {limit:g}s of connecting (idle)", Fault.IDLE_TIMEOUT)
            )
        return EXPIRED


class ServerConnection(_Connection):
    """The daemon's side of one connection: requests in, responses out (see the module doc)."""

    __slots__ = ()

    def next_event(self) -> Request | ProtocolViolation | NeedData | PeerClosed:
        """The next request, or what stands in for it.

        An envelope with no known message (empty or unknown fields) is a violation of fault
        ``unexpected``: aesmd closes such a connection without replying.
        """
        if self._violation is not None:
            return self._violation
        frames = self._frames
        if not frames:
            return PEER_CLOSED if self._eof else NEED_DATA
        return self._request(frames.popleft())

    def receive_request(self, data: bytes, now: float) -> Request | ProtocolViolation | None:
        """:meth:`receive_data` then :meth:`next_event` in one step, for the usual chunk: exactly
        one whole frame (prefix within ``max_frame_size``) while nothing is pending (no violation,
        no EOF, nothing queued, no frame begun, not write-blocked). Returns what ``next_event`` would then return (a
        request or a violation); ``None`` when ``data`` is not that case: nothing was consumed,
        feed it with :meth:`receive_data`."""
        if self._violation is not None or self._eof or self._frames or self._blocked_since is not None:
            return None
        decoder = self._decoder  # its state read here (same package): no call per request
        if decoder._buf or decoder._need >= 0 or len(data) < HEADER_SIZE or type(data) is not bytes:
            return None
        (n,) = _unpack_prefix(data, 0)
        if n > decoder.max_frame_size or len(data) != HEADER_SIZE + n:
            return None
        self.last_activity = now
        return self._request(data[HEADER_SIZE:])

    def _request(self, body: bytes) -> Request | ProtocolViolation:
        """Decode one received frame body: a request now owed, or the violation that ends the
        connection."""
        try:
            request = decode_request(body)
        except RemoteProtocolError as exc:
            return self._fail(exc)
        if type(request) is EmptyRequest or type(request) is UnknownRequest:
            what = (
                "empty envelope" if type(request) is EmptyRequest else f"unknown fields {request.fields}"  # type: ignore[union-attr]
            )
            return self._fail(
                RemoteProtocolError(
                    f"request with {what}; closing without a reply, as aesmd does", Fault.UNEXPECTED
                )
            )
        self.owed += 1
        return request

    def take_frame(self) -> bytes | ProtocolViolation | NeedData | PeerClosed:
        """The next request frame undecoded (a proxy forwards it as it is); counts as owed."""
        ev = self.next_frame()
        if type(ev) is bytes:
            self.owed += 1
        return ev

    def send(self, response: Response, now: float) -> bytes:
        """The bytes of one reply frame (prefix and body: write them in one write).

        Raises:
            LocalProtocolError: the value cannot be encoded.
        """
        frame = encode_response_frame(response)
        if self.owed:
            self.owed -= 1
        self.served += 1
        self.last_activity = now
        return frame

    def send_body(self, body: bytes, now: float) -> bytes:
        """The frame of an already encoded reply body (a proxy passes the upstream's on)."""
        frame = encode_frame(body)
        if self.owed:
            self.owed -= 1
        self.served += 1
        self.last_activity = now
        return frame

    def unanswered(self) -> None:
        """A request handed out will get no reply (the connection is being closed)."""
        self.owed = max(0, self.owed - 1)


class ClientConnection(_Connection):
    """A client's side of one connection: requests out, responses in (see the module doc).

    The reply to a typed request must be of that request's response type (``Request.Response``);
    anything else is a violation of fault ``unexpected``.
    """

    __slots__ = ("_expect",)

    def __init__(
        self,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        frame_timeout: float | None = None,
        idle_timeout: float | None = None,
        now: float = 0.0,
    ) -> None:
        super().__init__(
            max_frame_size=max_frame_size, frame_timeout=frame_timeout, idle_timeout=idle_timeout, now=now
        )
        self._expect: type | None = None

    def send(self, request: Request, now: float = 0.0) -> bytes:
        """The bytes of one request frame; the next event will be its reply.

        Raises:
            LocalProtocolError: the value cannot be encoded, or a reply is still awaited.
        """
        return self.send_body(encode_request(request), now, getattr(type(request), "Response", None))

    def send_body(self, body: bytes, now: float = 0.0, expect: type | None = None) -> bytes:
        """The frame of an already encoded request body (a proxy passes its client's on);
        ``expect``: the response type the reply must have (None: any)."""
        if self.owed:
            raise LocalProtocolError("a reply is still awaited on this connection")
        frame = encode_frame(body)
        self._expect = expect
        self.owed = 1
        self._sent(now)
        return frame

    def take_frame(self) -> bytes | ProtocolViolation | NeedData | PeerClosed:
        """The reply frame undecoded (a proxy passes it on as it is)."""
        ev = self.next_frame()
        if type(ev) is bytes:
            self.owed = 0
        return ev

    def next_event(self) -> Response | ProtocolViolation | NeedData | PeerClosed:
        """The awaited reply, or what stands in for it."""
        ev = self.take_frame()
        if type(ev) is not bytes:
            return ev  # type: ignore[return-value]
        try:
            response = decode_response(ev)
        except RemoteProtocolError as exc:
            return self._fail(exc)
        expect, self._expect = self._expect, None
        if expect is not None and type(response) is not expect:
            return self._fail(
                RemoteProtocolError(
                    f"the daemon answered {type(response).__name__}, not {expect.__name__}", Fault.UNEXPECTED
                )
            )
        return response


__all__ = [
    "EXPIRED",
    "NEED_DATA",
    "PEER_CLOSED",
    "ClientConnection",
    "Expired",
    "NeedData",
    "PeerClosed",
    "ProtocolViolation",
    "ServerConnection",
]
