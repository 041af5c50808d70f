"""The listening side of a published socket: the event loop's own server, with its backlog drained.

uvloop's Unix server accepts one connection per turn of the event loop. Under apps that connect
once per call (Intel's client does), that puts the loop in lock step with them: each turn accepts
one connection, reads one request, answers one, sees one close, and every reply wakes a client that
has just gone idle. :class:`Listener` keeps the loop's server (its accept path is the cheapest one
for a lone connection) and, on a turn where it accepted one, takes the others waiting in the
kernel's backlog too, up to ``batch``, through a duplicate of the listening socket; each becomes the
loop's own transport and protocol (``loop.connect_accepted_socket``), exactly as the server would
have made it, so nothing about a connection changes: only when it is accepted. A drain that finds
nothing waiting makes the next ones rarer (after 1, 2, 4 ... up to ``MAX_SKIP`` of the server's
accepts; one that finds any goes back to every turn), so a lone client pays for an empty accept()
on one connection in ``MAX_SKIP``, and a burst is drained from its second turn on.

The coroutine that makes such a transport is stepped here (:func:`_step`) rather than wrapped in a
Task: it waits only for the protocol's ``connection_made``, and a Task per connection costs a
noticeable part of a quote.

An accept() that fails for want of descriptors (EMFILE, ENFILE, ENOBUFS, ENOMEM) ends the drain
with one warning until an accept succeeds again; the loop's server keeps its own handling of that.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

#: after drains that found nothing, the server's accepts let pass before the next drain, at most
MAX_SKIP = 16

#: accept() failures that mean "out of a resource": warn once, let the backlog wait
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

    Make one with :meth:`start`. It has what the lifecycle uses of ``asyncio.Server``:
    :meth:`close` (stop accepting, close the socket) and :meth:`wait_closed`; and for a stop or a
    handover, :meth:`drain_rest` (answer what queued before the close).

    Args:
        loop: the running event loop.
        factory: makes the protocol of one connection.
        sock: the listening socket (this object owns it from now on).
        batch: connections taken from the backlog per turn at most (the rest at the next turn).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        factory: Callable[[], asyncio.Protocol],
        sock: socket.socket,
        *,
        batch: int = 64,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._loop = loop
        self._factory = factory
        self._sock = sock
        # the same listening socket, for taking what waits in its backlog (also after the server closed)
        self._backlog = sock.dup()
        self._backlog.setblocking(False)
        self.batch = batch
        self.drained = 0  # connections taken from the backlog here (not by the loop's server)
        self._server: asyncio.AbstractServer | None = None
        self._draining = False  # a drain is scheduled for this turn
        self._skip = 0  # the server's accepts to let pass before the next drain
        self._backoff = 0  # what _skip is set to after the next empty drain (0, 1, 2, 4 ... MAX_SKIP)
        self._closed = False
        self._warned = False

    @classmethod
    async def start(
        cls,
        loop: asyncio.AbstractEventLoop,
        factory: Callable[[], asyncio.Protocol],
        sock: socket.socket,
        *,
        backlog: int = 100,
        batch: int = 64,
    ) -> Listener:
        """Start serving ``sock`` (the loop's server listens with ``backlog``)."""
        self = cls(loop, factory, sock, batch=batch)
        try:
            self._server = await loop.create_unix_server(self._accepted, sock=sock, backlog=backlog)
        except BaseException:
            self._backlog.close()
            raise
        return self

    def is_serving(self) -> bool:
        return not self._closed

    def _accepted(self) -> asyncio.Protocol:
        """The loop's server accepted a connection: its protocol; drain the backlog this turn
        (unless recent drains found nothing: see the module doc)."""
        if self._skip:
            self._skip -= 1
        elif not self._draining and not self._closed:
            self._draining = True
            self._loop.call_soon(self._drain)
        return self._factory()

    def _drain(self) -> None:
        """Take up to ``batch`` waiting connections (each a transport and protocol of the loop)."""
        self._draining = False
        if self._closed:
            return
        loop, factory, accept = self._loop, self._factory, self._backlog.accept
        for i in range(self.batch):
            try:
                conn, _ = accept()
            except (BlockingIOError, InterruptedError):
                if i == 0:  # nothing was waiting: drain less often until something is
                    self._backoff = min(MAX_SKIP, self._backoff * 2 or 1)
                    self._skip = self._backoff
                return
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except OSError as exc:
                if not self._warned:
                    self._warned = True
                    kind = "out of descriptors" if exc.errno in _EXHAUSTED else "failed"
                    log.warning("accept %s (%s); the backlog waits for the next turn", kind, exc)
                return
            self._warned, self._backoff = False, 0
            self.drained += 1
            _step(loop.connect_accepted_socket(factory, conn))

    def close(self, *, keep_backlog: bool = False) -> None:
        """Stop accepting (idempotent). Accepted connections stay.

        ``keep_backlog``: keep the connections that wait in the kernel's backlog for
        :meth:`drain_rest` (a stop answers what it was sent); otherwise the listening socket goes now.
        """
        if not self._closed:
            self._closed = True
            if self._server is not None:
                self._server.close()
            else:
                self._sock.close()
        if not keep_backlog:
            self._backlog.close()

    async def drain_rest(self) -> None:
        """After ``close(keep_backlog=True)``: accept every connection that queued before it, each the
        loop's transport and protocol, then let the listening socket go."""
        if self._backlog.fileno() < 0:
            return
        try:
            while True:
                try:
                    conn, _ = self._backlog.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except ConnectionAbortedError:
                    continue
                except OSError as exc:
                    log.warning("draining the backlog: %s", exc)
                    break
                await self._loop.connect_accepted_socket(self._factory, conn)
        finally:
            self._backlog.close()

    async def wait_closed(self) -> None:
        """Until the loop's server has closed (connections are the lifecycle's to wait for)."""
        if self._server is not None:
            await self._server.wait_closed()


__all__ = ["MAX_SKIP", "Listener"]
