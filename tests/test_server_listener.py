"""server/listener.py: every waiting connection taken at once, each a normal transport + protocol.

Driven on both event loops the daemon runs on (asyncio's and uvloop's), over real Unix sockets in
a temp dir. A readiness callback is called directly where a test needs to know exactly what one
turn of the loop accepts; everything else is awaited with a deadline, never slept for.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from sgx_quote_helper.server.listener import Listener, _step

WAIT = 10.0

LOOPS = ["asyncio", "uvloop"]


def run(kind: str, body: Callable[[], Awaitable[None]]) -> None:
    if kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(body(), WAIT))
    finally:
        loop.close()


@pytest.fixture
def sock_path() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="lst", dir="/tmp") as d:
        yield Path(d) / "l.sock"


def listening(path: Path, backlog: int = 64) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(backlog)
    return s


class Echo(asyncio.Protocol):
    """Answers each chunk with b"re:" + chunk; records its life."""

    made: ClassVar[list[Echo]] = []

    def __init__(self, made: asyncio.Event, want: int) -> None:
        self.transport: Any = None
        self.lost = asyncio.get_running_loop().create_future()
        self._made, self._want = made, want

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        Echo.made.append(self)
        if len(Echo.made) >= self._want:
            self._made.set()

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"re:" + data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


@pytest.mark.parametrize("kind", LOOPS)
def test_one_readiness_takes_up_to_batch_waiting_connections(kind: str, sock_path: Path) -> None:
    async def body() -> None:
        Echo.made = []
        made = asyncio.Event()
        lsock = listening(sock_path)
        listener = Listener(asyncio.get_running_loop(), lambda: Echo(made, 7), lsock, batch=3)
        clients = []
        for _ in range(7):  # queued in the kernel's backlog before the loop runs again
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(str(sock_path))
            clients.append(c)
        listener._on_readable()  # one turn of the loop: the batch, no more
        assert listener.accepted == 3
        listener._on_readable()
        assert listener.accepted == 6
        listener._on_readable()  # one left, then EAGAIN ends the turn
        assert listener.accepted == 7
        listener._on_readable()
        assert listener.accepted == 7
        await made.wait()
        # each is a normal connection: a request answered, and its close seen
        loop = asyncio.get_running_loop()
        for i, c in enumerate(clients):
            c.setblocking(False)
            await loop.sock_sendall(c, b"%d" % i)
            assert await loop.sock_recv(c, 100) == b"re:%d" % i
        for c in clients:
            c.close()
        assert await asyncio.gather(*(p.lost for p in Echo.made)) == [None] * 7
        listener.close()

    run(kind, body)


@pytest.mark.parametrize("kind", LOOPS)
def test_accepts_on_its_own_and_close_stops_accepting(kind: str, sock_path: Path) -> None:
    async def body() -> None:
        Echo.made = []
        made = asyncio.Event()
        lsock = listening(sock_path)
        listener = Listener(asyncio.get_running_loop(), lambda: Echo(made, 2), lsock)
        loop = asyncio.get_running_loop()
        a = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        a.setblocking(False)
        await loop.sock_connect(a, str(sock_path))
        b = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        b.setblocking(False)
        await loop.sock_connect(b, str(sock_path))
        await made.wait()  # the loop called the listener by itself
        assert listener.is_serving()
        listener.close()
        listener.close()  # idempotent
        assert not listener.is_serving() and lsock.fileno() == -1
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with pytest.raises(OSError):  # nothing listens any more
            c.connect(str(sock_path))
        c.close()
        # accepted connections outlive the listener
        await loop.sock_sendall(a, b"x")
        assert await loop.sock_recv(a, 10) == b"re:x"
        for s in (a, b):
            s.close()
        await listener.wait_closed()

    run(kind, body)


class FailingSocket:
    """A listening socket whose accept() fails as told, then behaves as the real one."""

    def __init__(self, real: socket.socket, failures: list[OSError]) -> None:
        self.real, self.failures = real, failures

    def accept(self) -> tuple[socket.socket, Any]:
        if self.failures:
            raise self.failures.pop(0)
        return self.real.accept()

    def fileno(self) -> int:
        return self.real.fileno()

    def setblocking(self, flag: bool) -> None:
        self.real.setblocking(flag)

    def getsockname(self) -> str:
        return str(self.real.getsockname())

    def close(self) -> None:
        self.real.close()


@pytest.mark.parametrize("kind", LOOPS)
def test_out_of_descriptors_pauses_then_resumes(
    kind: str, sock_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        Echo.made = []
        made = asyncio.Event()
        fake = FailingSocket(listening(sock_path), [OSError(errno.EMFILE, "Too many open files")])
        listener = Listener(asyncio.get_running_loop(), lambda: Echo(made, 1), fake, retry_delay=0.01)  # type: ignore[arg-type]
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(str(sock_path))
        with caplog.at_level(logging.WARNING, logger="sgx_quote_helper.server.listener"):
            listener._on_readable()
        assert listener.accepted == 0 and listener._paused is not None
        assert "Too many open files; not accepting for 0.01s" in caplog.text
        await made.wait()  # resumed after the delay: the waiting client is taken
        assert listener.accepted == 1 and listener._paused is None
        c.close()
        listener.close()

    run(kind, body)


@pytest.mark.parametrize("kind", LOOPS)
def test_close_while_paused_cancels_the_retry(kind: str, sock_path: Path) -> None:
    async def body() -> None:
        fake = FailingSocket(listening(sock_path), [OSError(errno.ENFILE, "Too many open files in system")])
        listener = Listener(asyncio.get_running_loop(), asyncio.Protocol, fake, retry_delay=60.0)  # type: ignore[arg-type]
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(str(sock_path))
        listener._on_readable()
        timer = listener._paused
        assert timer is not None
        listener.close()
        assert timer.cancelled() and listener._paused is None and not listener.is_serving()
        c.close()

    run(kind, body)


@pytest.mark.parametrize("kind", LOOPS)
def test_aborted_and_other_accept_errors(
    kind: str, sock_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        Echo.made = []
        made = asyncio.Event()
        fake = FailingSocket(
            listening(sock_path),
            [ConnectionAbortedError(errno.ECONNABORTED, "aborted"), OSError(errno.EPROTO, "proto")],
        )
        listener = Listener(asyncio.get_running_loop(), lambda: Echo(made, 1), fake)  # type: ignore[arg-type]
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(str(sock_path))
        with caplog.at_level(logging.WARNING, logger="sgx_quote_helper.server.listener"):
            listener._on_readable()  # aborted: skipped; EPROTO: logged, the turn ends, no pause
        assert listener.accepted == 0 and listener._paused is None
        assert "proto" in caplog.text
        await made.wait()  # the next readiness takes the client
        assert listener.accepted == 1
        c.close()
        listener.close()

    run(kind, body)


def test_batch_must_be_positive(sock_path: Path) -> None:
    async def body() -> None:
        with pytest.raises(ValueError):
            Listener(asyncio.get_running_loop(), asyncio.Protocol, listening(sock_path), batch=0)

    run("asyncio", body)


def test_step_reports_a_failing_coroutine_and_refuses_a_foreign_yield(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fails() -> None:
        raise OSError(errno.EBADF, "bad descriptor")

    class Foreign:
        def __await__(self) -> Iterator[str]:
            yield "not a future"

    async def waits_on_foreign() -> None:
        await Foreign()

    with caplog.at_level(logging.WARNING, logger="sgx_quote_helper.server.listener"):
        _step(fails())
        coro = waits_on_foreign()
        _step(coro)
    assert "accepting a connection: OSError: [Errno 9] bad descriptor" in caplog.text
    assert "not a future" in caplog.text
    assert coro.cr_frame is None  # closed, not left suspended


def test_step_resumes_when_the_awaited_future_is_done() -> None:
    loop = asyncio.new_event_loop()
    try:
        fut = loop.create_future()
        seen: list[object] = []

        async def waits() -> None:
            seen.append(await fut)

        _step(waits())
        assert seen == []
        fut.set_result("made")
        loop.run_until_complete(asyncio.sleep(0))  # one turn: the done callback runs
        assert seen == ["made"]
    finally:
        loop.close()
