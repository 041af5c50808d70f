"""Intel's client, syscall for syscall: one AESM call the way libsgx_quote_ex makes it.

Every quote-ex call in Intel's client library (``sgx_get_quote_ex`` and friends) goes through
``SocketTransporter::transact`` with a fresh ``NonBlockingUnixCommunicationSocket``
(``intel/linux-sgx: psw/ae/aesm_service/source/core/ipc/``: ``SocketTransporter.cpp``,
``NonBlockingUnixSocketFactory.cpp``, ``NonBlockingUnixCommunicationSocket.cpp``,
``UnixCommunicationSocket.cpp``; ``shared/specs/aesm-protocol.md`` §2). Read there, one call is:

1. ``init``: ``epoll_create``, ``pipe`` (the cancel pipe), ``epoll_ctl(ADD, pipe[0], IN|ET)``,
   ``socket(AF_UNIX, SOCK_STREAM)``, a *blocking* ``connect``, ``epoll_ctl(ADD, sock, ET)``, then
   ``fcntl(F_GETFL)`` / ``fcntl(F_SETFL, |O_NONBLOCK)``;
2. ``sendMessage``: ``writeRaw`` of the 4-byte length, then ``writeRaw`` of the body: two
   ``write`` calls. Each successful ``writeRaw`` re-arms the socket with ``epoll_ctl(MOD, ET)``
   twice (once after the first successful write, once on the way out); on EAGAIN it arms
   ``EPOLLOUT`` and waits in ``epoll_wait``;
3. ``receiveMessage``: ``readRaw(4)`` then ``readRaw(length)``. Each arms ``epoll_ctl(MOD, IN|ET)``,
   tries a direct ``read(sock, length)``; if not all is there, ``epoll_wait`` and ``partialRead``
   (reads of at most 512 bytes until EAGAIN); finally ``epoll_ctl(MOD, ET)``;
4. the socket object is deleted: ``close`` of the epoll fd, both pipe ends, then the socket.

Each ``readRaw``/``writeRaw`` restarts a 15 s clock (``IPC_LATENCY``); past it the call fails with
SGX_ERROR_SERVICE_TIMEOUT. EOF before the whole message is SGX_ERROR_UNEXPECTED.

:func:`transact` is that sequence as a generator over a :class:`Syscalls` object (one method per
system call, so a test can record the sequence). Where Intel blocks in ``epoll_wait`` the generator
yields a :class:`Wait`; :func:`call_blocking` answers it with a blocking ``epoll_wait`` (exactly
Intel's call), and the load generator's asyncio driver waits for the call's own epoll fd to become
readable in the event loop and then calls ``epoll_wait`` on it with timeout 0, so many Intel-style
calls share one process while each call's own descriptors see Intel's sequence.

Known differences, none visible to the daemon: Python opens descriptors with ``*_CLOEXEC`` flags
(``epoll_create1``, ``pipe2``, ``SOCK_CLOEXEC``), and the asyncio driver's ``epoll_wait`` has
timeout 0 (the blocking driver's has Intel's 15 000 ms). Intel's direct ``read`` asks for the whole
``length`` again on every pass (it would write over data already read on a second pass, a bug
that needs the reply to arrive in pieces); here the direct read asks for the same count but keeps
the bytes already read.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass

from ..wire.connection import ClientConnection, ProtocolViolation
from ..wire.framing import HEADER, HEADER_SIZE

#: ``IPC_LATENCY``: the per-call timeout of every Intel quote-ex call (``psw/uae_service/config.h``)
IPC_LATENCY_MS = 15_000
#: ``MAX_EVENTS`` in ``NonBlockingUnixCommunicationSocket.h``
MAX_EVENTS = 12
#: ``partialRead`` reads at most this many bytes per ``read``
PARTIAL_READ_CHUNK = 512
#: replies longer than this are refused by the protocol core (Intel allocates whatever the prefix
#: says; a benchmark does not)
MAX_REPLY = 4 << 20

Socket = socket.socket
EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLLET = select.EPOLLET
EPOLLERR = select.EPOLLERR
EPOLLHUP = select.EPOLLHUP


class IntelCallError(Exception):
    """The call failed the way Intel's transport fails: ``status`` is what libsgx_quote_ex returns."""

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status


class ServiceUnavailable(IntelCallError):
    """``connect`` failed: SGX_ERROR_SERVICE_UNAVAILABLE (0x4001)."""

    def __init__(self, detail: str) -> None:
        super().__init__("SGX_ERROR_SERVICE_UNAVAILABLE", detail)


class ServiceTimeout(IntelCallError):
    """A read or write took longer than the call's timeout: SGX_ERROR_SERVICE_TIMEOUT (0x4002)."""

    def __init__(self, detail: str) -> None:
        super().__init__("SGX_ERROR_SERVICE_TIMEOUT", detail)


class Unexpected(IntelCallError):
    """EOF, a short read or a socket error: SGX_ERROR_UNEXPECTED (0x0001)."""

    def __init__(self, detail: str) -> None:
        super().__init__("SGX_ERROR_UNEXPECTED", detail)


class Syscalls:
    """The system calls Intel's client makes, one method each (names are the syscalls')."""

    def epoll_create(self) -> select.epoll:
        return select.epoll(1)

    def pipe(self) -> tuple[int, int]:
        return os.pipe()

    def epoll_ctl_add(self, ep: select.epoll, fd: int, events: int) -> None:
        ep.register(fd, events)

    def epoll_ctl_mod(self, ep: select.epoll, fd: int, events: int) -> None:
        ep.modify(fd, events)

    def epoll_wait(self, ep: select.epoll, timeout_ms: int) -> list[tuple[int, int]]:
        return ep.poll(timeout_ms / 1000 if timeout_ms >= 0 else -1, MAX_EVENTS)

    def socket(self) -> Socket:
        return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    def connect(self, sock: Socket, path: str) -> None:
        sock.connect(path)

    def fcntl_getfl(self, fd: int) -> int:
        return fcntl.fcntl(fd, fcntl.F_GETFL)

    def fcntl_setfl(self, fd: int, flags: int) -> None:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        return os.write(fd, data)

    def read(self, fd: int, n: int) -> bytes:
        return os.read(fd, n)

    def close(self, fd: int) -> None:
        os.close(fd)

    def close_epoll(self, ep: select.epoll) -> None:
        ep.close()

    def close_socket(self, sock: Socket) -> None:
        sock.close()


#: the real system calls
SYSCALLS = Syscalls()


@dataclass(frozen=True, slots=True)
class Wait:
    """Intel's client would block in ``epoll_wait(ep, MAX_EVENTS, timeout_ms)`` now; the driver
    sends back the events (an empty list when ``timeout_ms`` passed)."""

    ep: select.epoll
    timeout_ms: int


Call = Generator[Wait, list[tuple[int, int]], bytes]


class _Socket:
    """One ``NonBlockingUnixCommunicationSocket``: its descriptors and its clock."""

    def __init__(self, sys: Syscalls, path: str, timeout_ms: int, clock: Callable[[], float]) -> None:
        self.sys = sys
        self.path = path
        self.timeout_ms = timeout_ms
        self.clock = clock
        self.start = 0.0
        self.ep: select.epoll | None = None
        self.pipe: tuple[int, int] | None = None
        self.sock: Socket | None = None
        self.fd = -1

    # -- init (NonBlockingUnixCommunicationSocket::init) ------------------------------------------
    def init(self) -> None:
        sys = self.sys
        self.ep = sys.epoll_create()
        self.pipe = sys.pipe()
        sys.epoll_ctl_add(self.ep, self.pipe[0], EPOLLIN | EPOLLET)
        self.sock = sys.socket()
        self.fd = self.sock.fileno()
        try:
            sys.connect(self.sock, self.path)
        except OSError as exc:
            raise ServiceUnavailable(f"connect: {exc.strerror or exc}") from None
        sys.epoll_ctl_add(self.ep, self.fd, EPOLLET)
        flags = sys.fcntl_getfl(self.fd)
        sys.fcntl_setfl(self.fd, flags | os.O_NONBLOCK)

    # -- the clock (MarkStartTime / CheckForTimeout) -----------------------------------------------
    def _mark(self) -> None:
        self.start = self.clock()

    def _elapsed_ms(self) -> float:
        return (self.clock() - self.start) * 1000

    def _timed_out(self) -> bool:
        return self.timeout_ms > 0 and self._elapsed_ms() >= self.timeout_ms

    def _wait_ms(self) -> int:
        # Intel waits the whole timeout every time (``epollTimeout``) and checks the clock after
        return self.timeout_ms if self.timeout_ms > 0 else -1

    def disconnect(self) -> None:
        if self.sock is not None:
            self.sys.close_socket(self.sock)
            self.sock = None
            self.fd = -1

    # -- writeRaw ---------------------------------------------------------------------------------
    def write_raw(self, data: bytes) -> Call:
        sys, ep = self.sys, self.ep
        assert ep is not None
        if self.sock is None:
            raise Unexpected("write on a closed socket")
        view = memoryview(data)
        total = 0
        last_ok = False
        self._mark()
        while True:
            error = False
            try:
                step = sys.write(self.fd, view[total:])
            except BlockingIOError:
                last_ok = False
                sys.epoll_ctl_mod(ep, self.fd, EPOLLET | EPOLLOUT)
            except InterruptedError:
                if not self._timed_out():
                    continue
                error = True
            except OSError:
                error = True
            else:
                if not last_ok:
                    last_ok = True
                    sys.epoll_ctl_mod(ep, self.fd, EPOLLET)
                total += step
                if total == len(data):
                    break
                continue
            events = yield Wait(ep, self._wait_ms())
            closed = cancelled = False
            for fd, mask in events:
                if self._timed_out() or error or cancelled or closed:
                    break
                if mask & EPOLLHUP:
                    closed = True
                    continue
                if mask & EPOLLERR or not mask & EPOLLOUT:
                    error = True
                elif self.pipe is not None and fd == self.pipe[0]:
                    cancelled = True
            timed_out = self._timed_out()
            if error or cancelled or timed_out or closed:
                self.disconnect()
                if timed_out:
                    raise ServiceTimeout(f"write of {len(data)} bytes")
                raise Unexpected(f"write of {len(data)} bytes failed")
        sys.epoll_ctl_mod(ep, self.fd, EPOLLET)
        return b""

    # -- readRaw / partialRead --------------------------------------------------------------------
    def _partial_read(self, buf: bytearray, max_length: int) -> int:
        chunk = min(max_length, PARTIAL_READ_CHUNK)
        got = 0
        while got < max_length:
            try:
                data = self.sys.read(self.fd, min(max_length - got, chunk))
            except BlockingIOError:
                break
            except InterruptedError:
                if not self._timed_out():
                    continue
                return -1
            except OSError:
                return -1
            buf += data
            got += len(data)
            if not data:
                break
        return got

    def read_raw(self, length: int) -> Call:
        sys, ep = self.sys, self.ep
        assert ep is not None
        if self.sock is None:
            raise Unexpected("read on a closed socket")
        sys.epoll_ctl_mod(ep, self.fd, EPOLLIN | EPOLLET)
        buf = bytearray()
        self._mark()
        error = cancelled = closed = False
        while True:  # Intel's do { } while: one direct read even for a length of 0
            try:
                buf += sys.read(self.fd, length)  # Intel asks for the whole length on every pass
            except BlockingIOError:
                pass
            except InterruptedError:
                if not self._timed_out():
                    continue
                error = True
            except OSError:
                error = True
            if len(buf) >= length:
                break
            events = yield Wait(ep, self._wait_ms())
            for fd, mask in events:
                if self._timed_out() or error or cancelled or closed:
                    break
                if mask & EPOLLHUP:
                    closed = True
                if mask & EPOLLERR or not mask & EPOLLIN:
                    error = True
                elif self.pipe is not None and fd == self.pipe[0]:
                    cancelled = True
                else:
                    step = self._partial_read(buf, length - len(buf))
                    if step == -1 or (step == 0 and len(buf) != length):
                        error = True
            if len(buf) != length:
                timed_out = self._timed_out()
                if error or cancelled or timed_out:
                    self.disconnect()
                    if timed_out:
                        raise ServiceTimeout(f"read of {length} bytes: {len(buf)} arrived")
                    raise Unexpected(f"read of {length} bytes: {len(buf)} arrived before EOF or error")
            if len(buf) >= length:  # } while (total_read < length);
                break
        if self.sock is not None:
            sys.epoll_ctl_mod(ep, self.fd, EPOLLET)
        return bytes(buf[:length])

    # -- ~NonBlockingUnixCommunicationSocket, ~UnixCommunicationSocket ----------------------------
    def delete(self) -> None:
        if self.ep is not None:
            self.sys.close_epoll(self.ep)
            self.ep = None
        if self.pipe is not None:
            self.sys.close(self.pipe[0])
            self.sys.close(self.pipe[1])
            self.pipe = None
        self.disconnect()


def transact(
    path: str,
    body: bytes,
    *,
    timeout_ms: int = IPC_LATENCY_MS,
    sys: Syscalls = SYSCALLS,
    clock: Callable[[], float] = time.monotonic,
) -> Call:
    """One call as ``SocketTransporter::transact`` makes it; returns the reply body.

    Raises (from the generator): :class:`ServiceUnavailable`, :class:`ServiceTimeout`,
    :class:`Unexpected`.
    """
    core = ClientConnection(max_frame_size=MAX_REPLY)  # the protocol core frames and checks
    frame = core.send_body(body)
    s = _Socket(sys, path, timeout_ms, clock)
    try:
        s.init()
        yield from s.write_raw(frame[:HEADER_SIZE])
        yield from s.write_raw(frame[HEADER_SIZE:])
        head = yield from s.read_raw(HEADER_SIZE)
        core.receive_data(head, 0.0)
        ev = core.take_frame()
        if isinstance(ev, ProtocolViolation):
            raise Unexpected(ev.reason)
        (size,) = HEADER.unpack(head)  # Intel reads exactly this many bytes next
        data = yield from s.read_raw(size)
        if data:
            core.receive_data(data, 0.0)
            ev = core.take_frame()
        if type(ev) is not bytes:
            raise Unexpected(f"no whole reply frame: {ev!r}")
        return ev
    finally:
        s.delete()


def call_blocking(
    path: str, body: bytes, *, timeout_ms: int = IPC_LATENCY_MS, sys: Syscalls = SYSCALLS
) -> bytes:
    """One Intel-style call, blocking (the calling thread waits in ``epoll_wait`` as Intel's does)."""
    call = transact(path, body, timeout_ms=timeout_ms, sys=sys)
    try:
        wait = next(call)
        while True:
            wait = call.send(sys.epoll_wait(wait.ep, wait.timeout_ms))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


__all__ = [
    "EPOLLET",
    "EPOLLIN",
    "EPOLLOUT",
    "IPC_LATENCY_MS",
    "MAX_EVENTS",
    "SYSCALLS",
    "Call",
    "IntelCallError",
    "ServiceTimeout",
    "ServiceUnavailable",
    "Syscalls",
    "Unexpected",
    "Wait",
    "call_blocking",
    "transact",
]
