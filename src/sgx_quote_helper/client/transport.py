"""How every socket user of this package exchanges frames: one attempt/retry rule and one way to
read one frame, over the sans-I/O :mod:`~sgx_quote_helper.wire.connection` core.

- :func:`receive` / :func:`receive_async` feed a connection from a ``recv`` callable until it has
  an event (a reply, a violation, a clean close): the one "read one frame" of the package (the
  clients, the socket-path probe, the upstream proxy, the doctor and the harnesses all use it).
- :class:`Attempts` is the retry rule both clients share: a request whose connection was lost
  before a single reply byte is sent again on a new connection, at most :data:`MAX_ATTEMPTS`
  times, within the retry deadline (or once more on a kept connection the daemon had closed),
  after a short backoff (:meth:`Attempts.pause`: a daemon killed with our request in flight takes
  a moment to die, and a retry at once may land in its dying listener's backlog again).
  :meth:`Attempts.settle` turns the event into the reply or the client error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..errors import BadResponseError, TransportError
from ..wire.connection import (
    NEED_DATA,
    ClientConnection,
    NeedData,
    PeerClosed,
    ProtocolViolation,
)
from ..wire.messages import Response

#: bytes asked of the socket per read (a quote reply fits)
RECV_SIZE = 65536
#: tries of one request whose connection is lost before any reply byte
MAX_ATTEMPTS = 3

Event = Response | ProtocolViolation | NeedData | PeerClosed
FrameEvent = bytes | ProtocolViolation | NeedData | PeerClosed


def receive(conn: ClientConnection, recv: Callable[[int], bytes], *, raw: bool = False) -> Event | FrameEvent:
    """Read until ``conn`` has its reply (``raw``: the reply's body undecoded) or another event."""
    while True:
        ev = conn.take_frame() if raw else conn.next_event()
        if ev is not NEED_DATA:
            return ev
        conn.receive_data(recv(RECV_SIZE), 0.0)


async def receive_async(
    conn: ClientConnection, recv: Callable[[int], Awaitable[bytes]], *, raw: bool = False
) -> Event | FrameEvent:
    """:func:`receive` for an awaitable ``recv``."""
    while True:
        ev = conn.take_frame() if raw else conn.next_event()
        if ev is not NEED_DATA:
            return ev
        conn.receive_data(await recv(RECV_SIZE), 0.0)


class Attempts:
    """The attempt/retry rule of one call (see the module doc). Time is passed in.

    Args:
        where: the socket path, for messages.
        retry_deadline: seconds from ``now`` within which a lost request is resent.
        deadline: the call's own deadline (absolute, same clock as ``now``).
        reused: the first attempt uses a kept connection (which the daemon may have closed).
        backoff: seconds before the second attempt, doubling after.
    """

    __slots__ = (
        "_again",
        "_attempt",
        "_backoff",
        "_deadline",
        "_retry_until",
        "_reused",
        "_reused_first",
        "where",
    )

    def __init__(
        self,
        where: str,
        retry_deadline: float,
        deadline: float,
        reused: bool,
        now: float,
        backoff: float = 0.05,
    ) -> None:
        self.where = where
        self._retry_until = min(now + retry_deadline, deadline)
        self._deadline = deadline
        self._backoff = backoff
        self._reused = reused
        self._reused_first = reused
        self._attempt = 0
        self._again = False

    def begin(self, now: float) -> None:
        """An attempt starts: decide now whether its loss may be retried."""
        self._again = self._attempt + 1 < MAX_ATTEMPTS and (self._reused or now < self._retry_until)
        self._attempt += 1
        self._reused = False

    def pause(self, now: float) -> float:
        """Seconds to wait before the next attempt: none after a kept connection was found closed
        (no sign of a daemon in trouble), else ``backoff``, doubling, within the retry deadline."""
        if self._attempt <= 1 and self._reused_first:
            return 0.0
        return max(0.0, min(self._backoff * (1 << max(self._attempt - 1, 0)), self._retry_until - now))

    def lost(self, exc: OSError) -> None:
        """The connection broke (reset, broken pipe) before a reply: return to retry, else raise."""
        if not self._again:
            raise TransportError(f"connection to {self.where} lost: {exc}") from exc

    def settle(self, ev: Event | FrameEvent) -> Response | bytes | None:
        """The reply, or None to retry (closed before any reply byte); raises the client's error.

        Raises:
            BadResponseError: the reply breaks the protocol (its ``fault`` says how).
            TransportError: closed without answering, and no retry left.
        """
        if type(ev) is ProtocolViolation:
            raise BadResponseError(ev.reason, ev.fault)
        if ev is NEED_DATA or type(ev) is PeerClosed:
            if self._again:
                return None
            raise TransportError(f"{self.where} closed the connection without answering")
        return ev  # type: ignore[return-value]


__all__ = ["MAX_ATTEMPTS", "RECV_SIZE", "Attempts", "receive", "receive_async"]
