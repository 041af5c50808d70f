"""The asyncio Unix-socket server of the quote daemon (runs on uvloop when installed).

Per connection (:class:`_Connection`, an ``asyncio.Protocol``): frames are decoded as they arrive
(any chunking), each request goes to the :class:`~sgx_quote_helper.service.AesmService` (engine
requests in a one-thread executor: one quote at a time per engine; cheap ones inline), and the
reply (prefix and body) is written in one write. The connection then stays open for further
requests until the client closes it or ``idle_timeout`` passes. Past ``max_in_flight`` engine
requests, new ones are answered BUSY (18) at once. A broken client (oversized prefix, garbage
protobuf, unknown envelope, truncated frame, slow or idle) is logged once with its pid/uid
(SO_PEERCRED) and its connection closed; nobody else notices.

Lifecycle (:class:`AesmServer`): ``start()`` publishes the socket (``socketpath``: stale replaced,
a live sgx-quote-helper taken over, another program refused unless ``replace``), then a periodic
sweep enforces timeouts and checks that the path still names our socket. ``stop()`` (SIGTERM, or
the path taken over by a successor): stop accepting, unlink the path only if it is still ours,
accept and answer what is queued in the backlog, finish requests in flight, close.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections import deque
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

from ..abi.codes import AesmStatus
from ..errors import LocalProtocolError, RemoteProtocolError
from ..service import AesmService
from ..wire import messages as m
from ..wire.framing import FrameDecoder, encode_frame
from .config import ServerConfig
from .socketpath import ProbeResult, SocketIdentity, path_is, publish_socket, unlink_if_ours

log = logging.getLogger(__name__)

_PEERCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}
_MAX_QUEUED_FRAMES = 8


@dataclass(slots=True)
class ServerStats:
    """Counters since start (read them for metrics or tests)."""

    connections: int = 0
    requests: int = 0
    busy: int = 0
    client_errors: int = 0


def _timed(service: AesmService, request: m.Request) -> tuple[m.Request, m.Response | None, float]:
    """Run in the engine thread: the answer and how long the engine work took."""
    t0 = time.perf_counter()
    response = service.handle(request)
    return request, response, time.perf_counter() - t0


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_closing",
        "_decoder",
        "_logged",
        "_paused",
        "_peer",
        "_processing",
        "_queue",
        "_server",
        "frame_started",
        "last_activity",
        "served",
        "transport",
    )

    def __init__(self, server: AesmServer) -> None:
        self._server = server
        self._decoder = FrameDecoder(server.config.max_frame_size)
        self._queue: deque[bytes] = deque()
        self._processing = False
        self._closing = False
        self._paused = False
        self._logged = False
        self._peer: tuple[int, int, int] | None = None
        self.transport: asyncio.Transport | None = None
        self.last_activity = 0.0
        self.frame_started = 0.0
        self.served = 0

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        srv = self._server
        srv.stats.connections += 1
        srv.connections.add(self)
        self.last_activity = srv.loop.time()

    def data_received(self, data: bytes) -> None:
        now = self._server.loop.time()
        self.last_activity = now
        was_in_frame = self._decoder.in_frame
        try:
            frames = self._decoder.feed(data)
        except RemoteProtocolError as exc:
            self._client_error(str(exc))
            return
        if self._decoder.in_frame and (frames or not was_in_frame):
            self.frame_started = now
        if not frames:
            return
        self._queue.extend(frames)
        if len(self._queue) > _MAX_QUEUED_FRAMES and not self._paused:
            self._paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]
        if not self._processing:
            self._next()

    def eof_received(self) -> bool:
        try:
            self._decoder.eof()
        except RemoteProtocolError as exc:
            self._client_error(str(exc))
            return False
        # half-close: answer what was asked, then close
        self._closing = True
        return self._processing or bool(self._queue)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._queue.clear()
        self._server.connections.discard(self)
        self._server._connection_gone()

    def pause_writing(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self._paused and self.transport is not None and len(self._queue) <= _MAX_QUEUED_FRAMES:
            self._paused = False
            self.transport.resume_reading()

    # -- request flow
    def _next(self) -> None:
        srv = self._server
        while self._queue and not self._processing:
            if self.transport is None or self.transport.is_closing():
                return
            body = self._queue.popleft()
            try:
                request = m.decode_request(body)
            except RemoteProtocolError as exc:
                self._client_error(str(exc))
                return
            srv.stats.requests += 1
            service = srv.service
            assert service is not None  # only the upstream proxy has none, and it overrides _next
            if isinstance(request, m.EmptyRequest | m.UnknownRequest):
                what = (
                    "empty envelope"
                    if isinstance(request, m.EmptyRequest)
                    else f"unknown fields {request.fields}"
                )
                self._client_error(
                    f"request with {what}; closing without a reply, as aesmd does", level=logging.INFO
                )
                return
            if service.needs_engine(request):
                if srv.in_flight >= srv.config.max_in_flight:
                    srv.stats.busy += 1
                    self._reply(service.error_response(request, AesmStatus.BUSY))
                    continue
                if srv.inline_ok(request):  # a fast engine and nothing queued: no thread hop
                    t0 = time.perf_counter()
                    response = service.handle(request)
                    srv.record_cost(request, time.perf_counter() - t0)
                    self._reply(response)
                    continue
                srv.in_flight += 1
                self._processing = True
                fut = srv.loop.run_in_executor(srv.executor, _timed, service, request)
                fut.add_done_callback(self._engine_done)
                return
            self._reply(service.handle(request))
        if (
            self._paused
            and not self._queue
            and self.transport is not None
            and not self.transport.is_closing()
        ):
            self._paused = False
            self.transport.resume_reading()
        if self._closing and not self._processing and self.transport is not None:
            self.transport.close()

    def _engine_done(self, fut: asyncio.Future[tuple[m.Request, m.Response | None, float]]) -> None:
        srv = self._server
        srv.in_flight -= 1
        self._processing = False
        try:
            request, response, cost = fut.result()
            srv.record_cost(request, cost)
        except Exception:  # the service already maps engine errors; this is a bug
            log.exception("service failed")
            response = None
        if self.transport is not None and not self.transport.is_closing():
            self.last_activity = srv.loop.time()
            self._reply(response)
            self._next()
        srv._connection_gone()

    def _reply(self, response: m.Response | None) -> None:
        if response is None or self.transport is None:
            if self.transport is not None:
                self.transport.close()
            return
        try:
            frame = encode_frame(m.encode_response(response))
        except LocalProtocolError:
            log.exception("cannot encode %s", type(response).__name__)
            self.transport.close()
            return
        self.transport.write(frame)
        self.served += 1
        if self._server.stopping:  # at shutdown, close after each answer (aesmd behaviour)
            self._closing = True

    # -- errors and peers
    def peer(self) -> tuple[int, int, int]:
        """(pid, uid, gid) of the client from SO_PEERCRED; (-1, -1, -1) if unavailable."""
        if self._peer is None:
            self._peer = (-1, -1, -1)
            sock = self.transport.get_extra_info("socket") if self.transport is not None else None
            if sock is not None:
                try:
                    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
                    self._peer = _PEERCRED.unpack(raw)
                except (OSError, AttributeError):
                    pass
        return self._peer

    def _client_error(self, reason: str, level: int = logging.WARNING) -> None:
        self._server.stats.client_errors += 1
        if not self._logged:
            self._logged = True
            pid, uid, _ = self.peer()
            log.log(level, "client pid=%d uid=%d: %s", pid, uid, reason)
        self._queue.clear()
        if self.transport is not None:
            self.transport.close()

    def check_timeouts(self, now: float) -> None:
        """Called by the server's sweep: close slow or idle connections."""
        if self.transport is None or self.transport.is_closing() or self._processing or self._queue:
            return
        cfg = self._server.config
        if self._decoder.in_frame:
            if now - self.frame_started > cfg.read_timeout:
                self._client_error(f"request not complete after {cfg.read_timeout:g}s (slow client)")
            return
        limit = cfg.idle_timeout
        if self._server.stopping:
            limit = 0.0 if self.served else min(cfg.read_timeout, cfg.idle_timeout)
        if now - self.last_activity > limit:
            if not self.served and not self._server.stopping:
                self._client_error(f"no request within {limit:g}s of connecting (idle)", level=logging.INFO)
            else:
                self.transport.close()


class AesmServer:
    """The quote daemon's socket server (see the module doc).

    Args:
        service: the request semantics (``None`` for the upstream proxy, ``server.proxy``, whose
            connections forward raw frames instead).
        config: socket path, limits, timeouts.
        executor: where engine requests run (default: a one-thread pool, created on start).
    """

    #: the per-connection protocol; the upstream proxy (server/proxy.py) plugs in its own
    connection_class: type[_Connection] = _Connection

    def __init__(
        self, service: AesmService | None, config: ServerConfig, executor: Executor | None = None
    ) -> None:
        self.service = service
        self.config = config
        self.stats = ServerStats()
        self.connections: set[_Connection] = set()
        self.in_flight = 0
        self.stopping = False
        self.identity: SocketIdentity | None = None
        self.previous: ProbeResult | None = None
        self.stop_reason = ""
        self._own_executor = executor is None
        self.executor: Executor = executor or ThreadPoolExecutor(1, thread_name_prefix="aesm-engine")
        self._server: asyncio.AbstractServer | None = None
        self._listen_dup: socket.socket | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._stop_requested: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._unlink_on_stop = True
        self._cost: dict[type, float] = {}  # moving average of engine seconds per request type
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set in start()

    async def start(self) -> None:
        """Publish the socket and start serving.

        Raises:
            ConfigError: the path is served by another program (and not ``replace``), or unusable.
        """
        self.loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        self._idle = asyncio.Event()
        cfg = self.config
        sock, self.identity, self.previous = await self.loop.run_in_executor(
            None,
            lambda: publish_socket(
                cfg.socket_path,
                mode=cfg.socket_mode,
                backlog=cfg.backlog,
                replace=cfg.replace,
                probe_timeout=cfg.probe_timeout,
            ),
        )
        self._listen_dup = sock.dup()  # keeps the listener alive to drain the backlog at stop
        self._listen_dup.setblocking(False)
        self._server = await self.loop.create_unix_server(
            lambda: self.connection_class(self), sock=sock, backlog=cfg.backlog
        )
        self._sweeper = asyncio.create_task(self._sweep(), name="aesm-sweep")
        log.info(
            "serving AESM protocol on %s (mode %o, %s, max in flight %d)",
            cfg.socket_path,
            cfg.socket_mode,
            self.describe(),
            cfg.max_in_flight,
        )

    def describe(self) -> str:
        """What answers the requests, for logs ("engine simulated", "proxy to ...")."""
        return f"engine {self.service.engine.name}" if self.service is not None else "no engine"

    def request_stop(self, reason: str = "stop requested", unlink: bool = True) -> None:
        """Ask the server to shut down gracefully (safe from signal handlers via the loop)."""
        if self._stop_requested is not None and not self._stop_requested.is_set():
            self.stop_reason = reason
            self._unlink_on_stop = unlink
            self._stop_requested.set()

    async def serve_until_stopped(self) -> str:
        """Serve until :meth:`request_stop` (or a takeover), then shut down. Returns the reason."""
        assert self._stop_requested is not None
        await self._stop_requested.wait()
        await self._shutdown()
        return self.stop_reason

    async def _sweep(self) -> None:
        cfg = self.config
        interval = min(cfg.path_check_interval, cfg.idle_timeout / 4, cfg.read_timeout / 4, 1.0)
        next_path_check = 0.0
        while True:
            await asyncio.sleep(interval)
            now = self.loop.time()
            for conn in list(self.connections):
                conn.check_timeouts(now)
            if not self.stopping and now >= next_path_check and self.identity is not None:
                next_path_check = now + cfg.path_check_interval
                if not path_is(cfg.socket_path, self.identity):
                    log.warning(
                        "%s no longer names our socket (taken over or removed): finishing queued "
                        "and in-flight requests, then exiting",
                        cfg.socket_path,
                    )
                    self.request_stop("socket path taken over", unlink=False)

    def inline_ok(self, request: m.Request) -> bool:
        """Run this engine request on the loop? Only when nothing waits for the engine thread
        and requests of this kind have recently taken less than ``inline_engine_below``."""
        limit = self.config.inline_engine_below
        return limit > 0 and self.in_flight == 0 and self._cost.get(type(request), limit) < limit

    def record_cost(self, request: m.Request, seconds: float) -> None:
        """Update the moving average of engine time for this kind of request."""
        old = self._cost.get(type(request))
        self._cost[type(request)] = seconds if old is None else old * 0.8 + seconds * 0.2

    def _connection_gone(self) -> None:
        if self.stopping and self._idle is not None and self.in_flight == 0 and not self.connections:
            self._idle.set()

    async def _shutdown(self) -> None:
        assert self._idle is not None
        cfg = self.config
        self.stopping = True
        if self._server is not None:
            self._server.close()  # stop accepting
        if (
            self._unlink_on_stop
            and self.identity is not None
            and unlink_if_ours(cfg.socket_path, self.identity)
        ):
            log.info("removed %s", cfg.socket_path)
        await self._drain_backlog()
        for conn in list(self.connections):
            conn.check_timeouts(self.loop.time())
        self._connection_gone()
        try:
            await asyncio.wait_for(self._idle.wait(), cfg.shutdown_grace)
        except TimeoutError:
            log.warning(
                "shutdown grace of %gs over; closing %d connections",
                cfg.shutdown_grace,
                len(self.connections),
            )
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            await self._server.wait_closed()
        if self._own_executor:
            self.executor.shutdown(wait=True)
        log.info(
            "stopped (%s): %d connections, %d requests, %d busy, %d client errors",
            self.stop_reason,
            self.stats.connections,
            self.stats.requests,
            self.stats.busy,
            self.stats.client_errors,
        )

    async def _drain_backlog(self) -> None:
        """Accept what the kernel queued before we stopped accepting, so it gets answered."""
        dup = self._listen_dup
        if dup is None:
            return
        self._listen_dup = None
        try:
            while True:
                try:
                    conn, _ = dup.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    log.warning("draining the backlog: %s", exc)
                    break
                conn.setblocking(False)
                await self.loop.connect_accepted_socket(lambda: self.connection_class(self), conn)
        finally:
            dup.close()

    def info(self) -> dict[str, Any]:
        """A snapshot for logs and tests."""
        return {"in_flight": self.in_flight, "connections": len(self.connections), **vars_of(self.stats)}


def vars_of(stats: ServerStats) -> dict[str, int]:
    return {k: getattr(stats, k) for k in ServerStats.__slots__}


__all__ = ["AesmServer", "ServerStats"]
