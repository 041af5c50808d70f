"""server/listener.py: the loop's server, its backlog drained each turn it accepts, every
connection a normal transport + protocol.

Driven on both event loops the daemon runs on (asyncio's and uvloop's), over real Unix sockets in
a temp dir. The drain is called directly where a test needs to know exactly what one turn takes;
everything else is awaited with a deadline, never slept for.
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

from sgx_quote_helper.server.listener import MAX_SKIP, Listener, _step

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
    s.setblocking(False)
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


def echoes(want: int) -> tuple[Callable[[], Echo], asyncio.Event]:
    """A protocol factory of fresh :class:`Echo` records, and the event set once ``want`` are made."""
    Echo.made = []
    made = asyncio.Event()
    return (lambda: Echo(made, want)), made


def queued(path: Path, n: int) -> list[socket.socket]:
    """``n`` clients connected (non-blocking from then on), waiting in the listener's backlog."""
    clients = []
    for _ in range(n):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(str(path))
        c.setblocking(False)
        clients.append(c)
    return clients


async def connected(path: Path) -> socket.socket:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.setblocking(False)
    await asyncio.get_running_loop().sock_connect(c, str(path))
    return c


@pytest.mark.parametrize("kind", LOOPS)
def test_connections_queued_at_once_are_all_served_and_uvloops_are_drained(
    kind: str, sock_path: Path
) -> None:
    async def body() -> None:
        factory, made = echoes(7)
        loop = asyncio.get_running_loop()
        lsock = listening(sock_path)
        clients = queued(sock_path, 7)  # in the kernel's backlog before the server exists
        listener = await Listener.start(loop, factory, lsock)
        await made.wait()
        if kind == "uvloop":  # its server took one on the first turn; the drain took the other six
            assert listener.drained == 6
        for i, c in enumerate(clients):  # each is a normal connection: answered, and its close seen
            await loop.sock_sendall(c, b"%d" % i)
            assert await loop.sock_recv(c, 100) == b"re:%d" % i
        for c in clients:
            c.close()
        assert await asyncio.gather(*(p.lost for p in Echo.made)) == [None] * 7
        listener.close()
        await listener.wait_closed()

    run(kind, body)


@pytest.mark.parametrize("kind", LOOPS)
def test_one_drain_takes_at_most_batch(kind: str, sock_path: Path) -> None:
    async def body() -> None:
        factory, made = echoes(7)
        lsock = listening(sock_path)
        listener = Listener(asyncio.get_running_loop(), factory, lsock, batch=3)
        clients = queued(sock_path, 7)
        listener._drain()
        assert listener.drained == 3
        listener._drain()
        assert listener.drained == 6
        listener._drain()  # one left, then EAGAIN ends the turn
        assert listener.drained == 7
        listener._drain()
        assert listener.drained == 7
        await made.wait()
        for c in clients:
            c.close()
        listener.close()
        assert lsock.fileno() == -1 and listener._backlog.fileno() == -1  # no server: both closed here

    run(kind, body)


@pytest.mark.parametrize("kind", LOOPS)
def test_a_lone_connection_costs_one_empty_accept_and_close_stops_accepting(
    kind: str, sock_path: Path
) -> None:
    async def body() -> None:
        factory, made = echoes(1)
        loop = asyncio.get_running_loop()
        lsock = listening(sock_path)
        listener = await Listener.start(loop, factory, lsock)
        a = await connected(sock_path)
        await made.wait()  # the loop's server took it
        assert listener.drained == 0 and listener.is_serving()
        listener.close()
        listener.close()  # idempotent
        await listener.wait_closed()
        assert not listener.is_serving()
        listener._drain()  # a drain scheduled before the close finds nothing to do
        assert listener.drained == 0
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with pytest.raises(OSError):  # nothing listens any more
            c.connect(str(sock_path))
        c.close()
        await loop.sock_sendall(a, b"x")  # accepted connections outlive the listener
        assert await loop.sock_recv(a, 10) == b"re:x"
        a.close()

    run(kind, body)


@pytest.mark.parametrize("kind", LOOPS)
def test_a_stop_answers_what_queued_before_it(kind: str, sock_path: Path) -> None:
    async def body() -> None:
        factory, made = echoes(3)
        loop = asyncio.get_running_loop()
        lsock = listening(sock_path)
        listener = await Listener.start(loop, factory, lsock)
        listener._skip = 1 << 30  # no drain while serving: all three wait in the backlog
        listener.close(keep_backlog=True)  # stop accepting, as a stop or a handover does
        clients = queued(sock_path, 3)
        await listener.drain_rest()
        assert listener._backlog.fileno() == -1  # the listening socket is gone now
        await made.wait()
        for i, c in enumerate(clients):
            await loop.sock_sendall(c, b"%d" % i)
            assert await loop.sock_recv(c, 100) == b"re:%d" % i
            c.close()
        await listener.drain_rest()  # a second time: nothing left, no error
        with pytest.raises(OSError):
            queued(sock_path, 1)

    run(kind, body)


class FailingSocket:
    """The backlog's socket, whose accept() fails as told, then behaves as the real one."""

    def __init__(self, real: socket.socket, failures: list[OSError]) -> None:
        self.real, self.failures = real, failures

    def accept(self) -> tuple[socket.socket, Any]:
        if self.failures:
            raise self.failures.pop(0)
        return self.real.accept()

    def close(self) -> None:
        self.real.close()

    def fileno(self) -> int:
        return self.real.fileno()


@pytest.mark.parametrize("kind", LOOPS)
def test_accept_failures_end_the_drain_with_one_warning(
    kind: str, sock_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        factory, made = echoes(1)
        listener = Listener(asyncio.get_running_loop(), factory, listening(sock_path))
        listener._backlog = FailingSocket(  # type: ignore[assignment]
            listener._backlog,
            [
                ConnectionAbortedError(errno.ECONNABORTED, "aborted"),
                OSError(errno.EMFILE, "Too many open files"),
                OSError(errno.EMFILE, "Too many open files"),
            ],
        )
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(str(sock_path))
        with caplog.at_level(logging.WARNING, logger="sgx_quote_helper.server.listener"):
            listener._drain()  # aborted: skipped; EMFILE: warned, the drain ends
            listener._drain()  # EMFILE again: no second warning
        assert listener.drained == 0
        assert caplog.text.count("accept out of descriptors") == 1
        listener._drain()  # the descriptors are back: the waiting client is taken
        assert listener.drained == 1 and not listener._warned
        await made.wait()
        c.close()
        listener.close()

    run(kind, body)


@pytest.mark.parametrize("kind", LOOPS)
def test_empty_drains_back_off_and_a_found_connection_resets_them(kind: str, sock_path: Path) -> None:
    async def body() -> None:
        factory, made = echoes(1)
        listener = Listener(asyncio.get_running_loop(), factory, listening(sock_path))
        drains = []
        real = listener._drain

        def counted() -> None:
            drains.append(listener._skip)
            real()

        listener._drain = counted  # type: ignore[method-assign]
        pattern = []
        for _ in range(60):  # the server accepting a lone connection per turn, nothing else waiting
            listener._accepted()
            before = len(drains)
            await asyncio.sleep(0)  # one turn: a scheduled drain runs
            pattern.append(len(drains) - before)
        # drains after 0, 1, 2, 4, 8, 16, 16 ... accepts let pass
        assert pattern[:20] == [1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1] + [0] * 8 + [1]
        assert sum(pattern[20:]) == 2  # then one drain in MAX_SKIP + 1 accepts
        assert listener._backoff == MAX_SKIP
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(str(sock_path))
        listener._skip = 0
        listener._drain()  # finds one: back to a drain every turn
        assert listener.drained == 1 and listener._backoff == 0 and listener._skip == 0
        await made.wait()
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
