"""The asyncio QGS server: Intel's Quote Generation Service protocol on a Unix socket and/or vsock.

Each connection is a thin adapter over :class:`~sgx_quote_helper.wire.qgs.QgsServerConnection`:
bytes in, events out, one answer written in one piece, then the connection is closed (one request
per connection, as Intel's ``qgsd``; libtdx_attest reads the reply with a single ``recv`` of the
prefix, so the reply must go out whole). Quotes run in a pool of ``workers`` threads (QGS runs one
TDQE context per worker thread); past ``max_in_flight`` requests a framed request is answered at
once with 0x12001 (the BUSY-equivalent: Intel's only error code) and a raw one is closed. The
deadline (30 s by default) comes from the wire state machine, with the loop's clock.

Sockets: the Unix socket (default ``/var/run/tdx-qgs/qgs.socket``, mode 0660, an optional group:
Intel's 1.26 default that QEMU joins) is published atomically (``socketpath.publish_socket``); a
live server already at the path is refused unless ``replace`` (Intel's rule: a path whose
``connect()`` succeeds is live; refused = stale, replaced). vsock (``VMADDR_CID_ANY:port``) is
bound only when asked and the kernel has AF_VSOCK. Per listener a request-type allow-list and a
raw-mode switch (a socket handed to a VMM may only ask GET_QUOTE). Peers outside ``allow_uids`` /
``allow_gids`` (SO_PEERCRED; Unix socket only) are closed without a reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..abi.qgs import MsgType
from ..errors import ConfigError
from ..qgs_service import QgsService
from ..wire.qgs import (
    ALL_REQUESTS,
    NEED_DATA,
    CloseConnection,
    MalformedRequest,
    QgsServerConnection,
    RawReportReceived,
    RequestReceived,
)
from .socketpath import SocketIdentity, publish_socket, unlink_if_ours

log = logging.getLogger(__name__)

DEFAULT_QGS_SOCKET = Path("/var/run/tdx-qgs/qgs.socket")
_PEERCRED = struct.Struct("3i")


@dataclass(frozen=True, slots=True)
class QgsListener:
    """One listening socket and what it serves."""

    path: Path | None = DEFAULT_QGS_SOCKET
    vsock_port: int | None = None
    mode: int = 0o660
    group: int | None = None
    allowed: frozenset[int] = ALL_REQUESTS
    allow_raw: bool = True


@dataclass(slots=True)
class QgsConfig:
    listeners: tuple[QgsListener, ...] = (QgsListener(),)
    workers: int = 4
    max_in_flight: int = 64
    timeout: float = 30.0
    allow_uids: frozenset[int] = frozenset()
    allow_gids: frozenset[int] = frozenset()
    replace: bool = False
    backlog: int = 128


@dataclass(slots=True)
class QgsStats:
    connections: int = 0
    quotes: int = 0
    errors: int = 0
    refused: int = 0
    busy: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


def vsock_available() -> bool:
    """Whether this kernel can make AF_VSOCK sockets."""
    if not hasattr(socket, "AF_VSOCK"):
        return False
    try:
        socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()
    except OSError:
        return False
    return True


def _live(path: Path) -> bool:
    """Intel's stale-socket rule: a server answers ``connect()`` (EACCES counts as live)."""
    if not path.exists() and not path.is_symlink():
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2.0)
    try:
        s.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError, NotADirectoryError):
        return False
    except PermissionError:
        return True
    except OSError as exc:
        if exc.errno == 88:  # ENOTSOCK: not a socket, replaceable
            return False
        raise ConfigError(f"cannot probe {path}: {exc}") from exc
    finally:
        s.close()
    return True


class _QgsProtocol(asyncio.Protocol):
    def __init__(self, server: QgsServer, listener: QgsListener) -> None:
        self.server = server
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.conn: QgsServerConnection | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        srv = self.server
        srv.stats.connections += 1
        if not self._peer_allowed():
            srv.stats.refused += 1
            transport.close()
            return
        loop = srv.loop
        self.conn = QgsServerConnection(
            loop.time(),
            allowed=self.listener.allowed,
            allow_raw=self.listener.allow_raw,
            timeout=srv.config.timeout,
        )
        self.timer = loop.call_at(self.conn.deadline, self._step)
        srv.open.add(self)

    def _peer_allowed(self) -> bool:
        cfg = self.server.config
        if not cfg.allow_uids and not cfg.allow_gids:
            return True
        sock = self.transport.get_extra_info("socket") if self.transport else None
        if sock is None:
            return False  # cannot be evaluated: refuse
        try:
            _pid, uid, gid = _PEERCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            )
        except (OSError, AttributeError):
            return False  # cannot be evaluated: refuse
        ok = uid in cfg.allow_uids or gid in cfg.allow_gids
        if not ok:
            log.warning("QGS peer uid %d gid %d refused (not in --allow-uid/--allow-gid)", uid, gid)
        return ok

    def data_received(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.receive_data(data, self.server.loop.time())
            self._step()

    def eof_received(self) -> bool:
        if self.conn is not None:
            self.conn.receive_data(b"", self.server.loop.time())
            self._step()
        return True  # keep the transport: the answer may still be written

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.server.open.discard(self)

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _step(self) -> None:
        conn = self.conn
        if conn is None or self.busy:
            return
        event = conn.next_event(self.server.loop.time())
        if event is NEED_DATA:
            return
        srv = self.server
        if isinstance(event, CloseConnection):
            log.info("QGS connection closed without a reply: %s", event.reason)
            srv.stats.errors += 1
            self._close()
            return
        if isinstance(event, MalformedRequest):
            log.info("QGS %s does not inflate: %s", MsgType(event.type).name, event.reason)
            srv.stats.errors += 1
            self._write(conn.send_error())
            return
        if srv.in_flight >= srv.config.max_in_flight:
            srv.stats.busy += 1
            if isinstance(event, RequestReceived):
                self._write(conn.send_error())
            else:
                conn.refuse()
                self._close()
            return
        assert isinstance(event, (RequestReceived, RawReportReceived))
        self.busy = True
        srv.in_flight += 1
        fut = srv.loop.run_in_executor(srv.executor, self._work, event)
        fut.add_done_callback(self._done)

    def _work(self, event: RequestReceived | RawReportReceived) -> bytes | None:
        assert self.conn is not None
        svc = self.server.service
        if isinstance(event, RawReportReceived):
            quote = svc.raw_quote(event.report)
            if quote is None:
                self.conn.refuse()
                return None
            return self.conn.send_raw_quote(quote)
        response = svc.answer(event.request)
        return self.conn.send(response)

    def _done(self, fut: asyncio.Future[bytes | None]) -> None:
        srv = self.server
        srv.in_flight -= 1
        self.busy = False
        try:
            out = fut.result()
        except Exception:  # a bug, not the client's: log it, close
            log.exception("QGS request failed")
            srv.stats.errors += 1
            self._close()
            return
        if out is None:
            srv.stats.errors += 1
            self._close()
            return
        srv.stats.quotes += 1
        self._write(out)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)  # one write: the whole reply
            self.transport.close()  # flushes, then closes


class QgsServer:
    """The QGS daemon's sockets (see the module doc)."""

    def __init__(self, service: QgsService, config: QgsConfig) -> None:
        self.service = service
        self.config = config
        self.stats = QgsStats()
        self.in_flight = 0
        self.open: set[_QgsProtocol] = set()
        self.executor = ThreadPoolExecutor(max(1, config.workers), thread_name_prefix="qgs-worker")
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set in start()
        self._servers: list[asyncio.AbstractServer] = []
        self._paths: list[tuple[Path, SocketIdentity]] = []
        self.vsock_ports: list[int] = []

    async def start(self) -> None:
        """Bind every listener.

        Raises:
            ConfigError: a live server holds the path (no ``replace``), vsock is unavailable, or a
                socket cannot be bound.
        """
        self.loop = asyncio.get_running_loop()
        for listener in self.config.listeners:
            if listener.path is not None:
                await self._start_unix(listener, listener.path)
            if listener.vsock_port is not None:
                await self._start_vsock(listener, listener.vsock_port)
        if not self._servers:
            raise ConfigError("no QGS listener configured (give a socket path or a vsock port)")

    async def _start_unix(self, listener: QgsListener, path: Path) -> None:
        cfg = self.config
        if await self.loop.run_in_executor(None, _live, path) and not cfg.replace:
            raise ConfigError(
                f"a server is already answering on {path}; refusing to take it over (use --replace)"
            )
        sock, ident, _ = await self.loop.run_in_executor(
            None,
            lambda: publish_socket(
                path,
                mode=listener.mode,
                backlog=cfg.backlog,
                replace=True,
                probe_timeout=0.5,
                group=listener.group,
            ),
        )
        server = await self.loop.create_unix_server(lambda: _QgsProtocol(self, listener), sock=sock)
        self._servers.append(server)
        self._paths.append((path, ident))
        log.info("QGS listening on %s (mode %o)", path, listener.mode)

    async def _start_vsock(self, listener: QgsListener, port: int) -> None:
        if not vsock_available():
            raise ConfigError(
                "--vsock-port needs AF_VSOCK, which this kernel does not offer (load vsock modules)"
            )
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        try:
            sock.bind((socket.VMADDR_CID_ANY, port))
            sock.listen(self.config.backlog)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot listen on vsock port {port}: {exc}") from exc
        sock.setblocking(False)
        server = await self.loop.create_server(lambda: _QgsProtocol(self, listener), sock=sock)
        self._servers.append(server)
        self.vsock_ports.append(sock.getsockname()[1])
        log.info("QGS listening on vsock port %d", port)

    async def stop(self) -> None:
        """Stop accepting, remove our socket paths, let requests in flight finish."""
        for server in self._servers:
            server.close()
        for path, ident in self._paths:
            with contextlib.suppress(OSError):
                unlink_if_ours(path, ident)
        for server in self._servers:
            await server.wait_closed()
        while self.in_flight:
            await asyncio.sleep(0.01)
        self.executor.shutdown(wait=True)


__all__ = ["DEFAULT_QGS_SOCKET", "QgsConfig", "QgsListener", "QgsServer", "QgsStats", "vsock_available"]
