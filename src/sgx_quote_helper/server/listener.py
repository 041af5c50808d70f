"""The listening side of a published socket: accepts every waiting connection at once.

uvloop's own Unix server accepts one connection per turn of the event loop. Under apps that
connect once per call (Intel's client does), that puts the loop in lock step: each turn accepts
one connection, reads one request, answers one, sees one close, and every reply wakes a client
that has just gone idle. :class:`Listener` watches the listening socket itself and takes up to
``batch`` waiting connections each time it is readable, so a turn serves the requests of many;
each accepted socket becomes the event loop's own transport and protocol
(``loop.connect_accepted_socket``), exactly as the loop's server would have made it, so nothing
about a connection changes: only when it is accepted.

The coroutine that makes the transport is stepped here (:func:`_step`) rather than wrapped in a
Task: it waits only for the protocol's ``connection_made``, and a Task per connection costs as
much as a tenth of a quote.

Running out of descriptors (EMFILE, ENFILE, ENOBUFS, ENOMEM) pauses accepting for
``retry_delay`` seconds with one warning, as asyncio's own server does; connections keep their
place in the kernel's backlog meanwhile.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

#: accept() failures that mean "out of a resource": pause and retry, do not spin
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def _step(coro: Coroutine[Any, Any, Any]) -> None:
    """Run ``coro`` to its next wait; resume it when the future it waits for is done (a Task's
    ``__step`` without the Task). An exception it raises is logged: the loop has already closed the
    transport it was making."""
    try:
        fut = coro.send(None)
    except StopIteration:
        return
    except Exception as exc:  # what the Task would have reported as never retrieved
        log.warning("accepting a connection: %s: %s", type(exc).__name__, exc)
        return
    if getattr(fut, "_asyncio_future_blocking", None) is None:  # not an asyncio future: cannot wait
        coro.close()
        log.error("accepting a connection: the event loop yielded %r, not a future", fut)
        return
    fut._asyncio_future_blocking = False
    fut.add_done_callback(lambda _fut: _step(coro))


class Listener:
    """Serve ``sock`` (bound and listening) on ``loop``: ``factory()`` is each connection's protocol.

    The part of ``asyncio.Server`` the lifecycle uses: :meth:`close` (stop accepting, close the
    socket) and :meth:`wait_closed`.

    Args:
        loop: the running event loop.
        factory: makes the protocol of one connection.
        sock: the listening socket (this object owns it from now on).
        batch: connections taken per readiness at most (the rest at the next turn).
        retry_delay: seconds without accepting after the process ran out of descriptors.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        factory: Callable[[], asyncio.Protocol],
        sock: socket.socket,
        *,
        batch: int = 64,
        retry_delay: float = 0.5,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        sock.setblocking(False)
        self._loop = loop
        self._factory = factory
        self._sock = sock
        self._fd = sock.fileno()
        self.batch = batch
        self.retry_delay = retry_delay
        self.accepted = 0  # connections handed to the loop, for tests and diagnostics
        self._closed = False
        self._paused: asyncio.TimerHandle | None = None
        loop.add_reader(self._fd, self._on_readable)

    def is_serving(self) -> bool:
        return not self._closed

    def _on_readable(self) -> None:
        loop, factory, accept = self._loop, self._factory, self._sock.accept
        for _ in range(self.batch):
            try:
                conn, _ = accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except OSError as exc:
                if exc.errno in _EXHAUSTED:
                    self._pause(exc)
                else:
                    log.warning("accept on %s: %s", self._sock.getsockname() or "socket", exc)
                return
            self.accepted += 1
            _step(loop.connect_accepted_socket(factory, conn))

    def _pause(self, exc: OSError) -> None:
        log.warning(
            "accept: %s; not accepting for %gs (connections wait in the backlog)",
            exc.strerror,
            self.retry_delay,
        )
        self._loop.remove_reader(self._fd)
        self._paused = self._loop.call_later(self.retry_delay, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if not self._closed:
            self._loop.add_reader(self._fd, self._on_readable)

    def close(self) -> None:
        """Stop accepting and close the listening socket (idempotent). Accepted connections stay."""
        if self._closed:
            return
        self._closed = True
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        else:
            self._loop.remove_reader(self._fd)
        self._sock.close()

    async def wait_closed(self) -> None:
        """Closing is immediate (connections are the lifecycle's to wait for)."""


__all__ = ["Listener"]
