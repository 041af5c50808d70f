"""The asyncio QGS server: Intel's Quote Generation Service protocol on a Unix socket and/or vsock.

Each connection is a thin adapter over :class:`~sgx_quote_helper.wire.qgs.QgsServerConnection`:
bytes in, events out, one answer written in one piece, then the connection is closed (one request
per connection, as Intel's ``qgsd``; libtdx_attest reads the reply with a single ``recv`` of the
prefix, so the reply must go out whole). Quotes run in a pool of ``workers`` threads (QGS runs one
TDQE context per worker thread).

The lifecycle, the door and the limits are the AESM daemon's, shared code (:mod:`.lifecycle`,
:mod:`.gate`, :mod:`.admission`):

- the Unix socket (default ``/var/run/tdx-qgs/qgs.socket``, mode 0660, an optional group: Intel's
  1.26 default that QEMU joins) is published atomically and taken over without a gap from a live
  older sgx-quote-helper QGS (asked with the QGS-framed probe, ``socketpath.probe_qgs_path``), never
  from a newer one (``standby``); a stale socket is replaced; a path another program serves (e.g.
  Intel's qgsd, which closes on our probe) is refused unless ``replace``. A successor taking the
  path makes this server ``handed-over`` (answers what it owes, stays up drained); anything else at
  the path gets our socket put back and an ALERT. ``private_dir``: the instance record and
  ``qgs.socket``, the private socket ``qgs healthcheck --ready/--quote`` reach this very server on;
- connections: ``max_connections``, the allow-lists (SO_PEERCRED; a peer whose credentials cannot
  be read, e.g. over vsock, is refused when a list is set), ``max_connections_per_uid``;
- requests (:class:`~.admission.Admission`): per-peer rate and in-flight limits, then
  ``max_in_flight`` requests in the workers, then the reply-buffer cap. A refused framed request is
  answered at once with Intel's error response, 0x12001 UNEXPECTED (the only code Intel's server
  sends: there is no BUSY in ``qgs_msg_error_t``, and Intel queues without bound instead); a
  refused raw-mode report is closed with no data (raw mode has no error form);
- deadlines: the whole connection has ``timeout`` (Intel's 30 s, from the wire state machine, with
  the loop's clock, checked by the sweep); a peer that does not read its reply is aborted
  ``idle_timeout`` after it was written, freeing the buffer.

vsock (``VMADDR_CID_ANY:port``) is bound only when asked and the kernel has AF_VSOCK. Per listener a
request-type allow-list and a raw-mode switch (a socket handed to a VMM may only ask GET_QUOTE); the
private socket serves every type. Metrics: the AESM families under ``sgx_quote_helper_qgs_``
(server/metrics.py).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from ..abi import qgs as q
from ..abi.qgs import MsgType
from ..errors import ConfigError
from ..qgs_service import QgsService
from ..service import IMPLEMENTATION
from ..wire.qgs import (
    ALL_REQUESTS,
    NEED_DATA,
    CloseConnection,
    MalformedRequest,
    ProbeAnswer,
    ProbeReceived,
    QgsServerConnection,
    RawReportReceived,
    RequestReceived,
)
from .admission import Action, Admission, Decision
from .config import DEFAULT_MAX_REPLY_BYTES, MAX_UNIX_PATH
from .gate import peer_credentials
from .instance import QGS_PRIVATE_SOCKET
from .lifecycle import PathServer
from .metrics import QGS_PREFIX, ServerMetrics
from .socketpath import probe_qgs_path, publish_socket, unlink_if_ours

log = logging.getLogger(__name__)

DEFAULT_QGS_SOCKET = Path("/var/run/tdx-qgs/qgs.socket")
#: reply bytes a request is counted for until its reply is written (then what is really buffered)
QUOTE_REPLY_HINT = 16 << 10
COLLATERAL_REPLY_HINT = 64 << 10


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
    """How the QGS service listens and protects itself.

    The first listener with a path is the shared socket path (takeover, handover, impostor watch:
    :mod:`.lifecycle`); further paths are published with the same takeover rule but not watched.
    The fields after ``backlog`` mean what the AESM daemon's ``ServerConfig`` fields of the same
    names mean (``timeout`` is the whole connection's deadline, Intel's 30 s).
    """

    listeners: tuple[QgsListener, ...] = (QgsListener(),)
    workers: int = 4
    max_in_flight: int = 64
    timeout: float = 30.0
    allow_uids: frozenset[int] = frozenset()
    allow_gids: frozenset[int] = frozenset()
    replace: bool = False
    backlog: int = 128
    private_dir: Path | None = None
    handover_window: float = 0.0
    idle_timeout: float = 30.0
    max_connections: int = 2048
    max_connections_per_uid: int = 0
    rate_limit: float = 0.0
    rate_burst: int = 0
    max_in_flight_per_peer: int = 0
    limit_by_pid: bool = False
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    probe_timeout: float = 2.0
    path_check_interval: float = 0.5
    foreign_grace: float = 10.0
    shutdown_grace: float = 10.0

    def __post_init__(self) -> None:
        for lst in self.listeners:
            if lst.path is not None and len(str(lst.path).encode()) > MAX_UNIX_PATH - 12:
                raise ConfigError(f"socket path {str(lst.path)!r} is too long for a Unix socket")
        for name in ("workers", "max_in_flight", "backlog", "max_connections"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for name in ("timeout", "idle_timeout", "probe_timeout", "path_check_interval", "shutdown_grace"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        for name in (
            "handover_window",
            "max_connections_per_uid",
            "rate_limit",
            "rate_burst",
            "max_in_flight_per_peer",
            "max_reply_bytes",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics port {self.metrics_port} is not a TCP port")

    @property
    def primary(self) -> QgsListener | None:
        """The listener of the shared socket path (the first with a path)."""
        return next((lst for lst in self.listeners if lst.path is not None), None)

    @property
    def socket_path(self) -> Path | None:
        p = self.primary
        return p.path if p is not None else None

    @property
    def socket_mode(self) -> int:
        p = self.primary
        return p.mode if p is not None else 0o660

    @property
    def socket_group(self) -> int | None:
        p = self.primary
        return p.group if p is not None else None


@dataclass(slots=True)
class QgsStats:
    connections: int = 0
    quotes: int = 0
    errors: int = 0
    refused: int = 0
    busy: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


class RawQuoteRequest:
    """The metrics' request type of a raw-mode TDREPORT (label ``RawQuote``)."""


class HelperProbeRequest:
    """The metrics' request type of our probe (label ``HelperProbe``)."""


#: a code below 0: closed with no reply (a raw-mode report refused)
CLOSED = -1


def qgs_type_name(kind: type) -> str:
    """``GetQuoteRequest`` -> ``GetQuote`` (and ``RawQuote``, ``HelperProbe``)."""
    name = kind.__name__
    return name.removesuffix("Request")


def qgs_result_name(code: int) -> str:
    """The label of a QGS result code: its ``qgs_msg_error_t`` name, ``closed``, or ``0x...``."""
    if code < 0:
        return "closed"
    try:
        return q.MsgError(code).name
    except ValueError:
        return f"UNKNOWN_{code:#x}"


def vsock_available() -> bool:
    """Whether this kernel can make AF_VSOCK sockets."""
    if not hasattr(socket, "AF_VSOCK"):
        return False
    try:
        socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()
    except OSError:
        return False
    return True


_PRIVATE = QgsListener(path=None)


class _QgsProtocol(asyncio.Protocol):
    """One QGS connection (see the module doc)."""

    def __init__(self, server: QgsServer, listener: QgsListener) -> None:
        self.server = server
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.conn: QgsServerConnection | None = None
        self.busy = False
        self._peer: tuple[int, int, int] | None = None
        self._uid: int | None = None
        self._decision: Decision | None = None
        self._reply_bytes = 0
        self._closed_at: float | None = None
        self._kind: type = RawQuoteRequest
        self._t0 = 0.0

    def peer(self) -> tuple[int, int, int]:
        """(pid, uid, gid) of the client (SO_PEERCRED); (-1, -1, -1) if unavailable (vsock)."""
        if self._peer is None:
            self._peer = peer_credentials(self.transport)
        return self._peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        srv = self.server
        srv.stats.connections += 1
        srv.metrics.connections_total += 1
        now = srv.loop.time()
        admitted, self._uid = srv.gate.open(len(srv.connections), self.peer, now)
        if not admitted:
            srv.stats.refused += 1
            self.transport.close()
            return
        self.conn = QgsServerConnection(
            now,
            allowed=self.listener.allowed,
            allow_raw=self.listener.allow_raw,
            timeout=srv.config.timeout,
        )
        srv.connections.add(self)

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
        srv = self.server
        srv.connections.discard(self)
        srv.gate.close(self._uid)
        self._uid = None
        srv.admission.reply_bytes -= self._reply_bytes
        self._reply_bytes = 0
        if self._decision is not None and not self.busy:
            srv.admission.answered(self._decision)
            self._decision = None
        srv.connection_gone()

    def check_timeouts(self, now: float) -> None:
        """Called by the sweep: the connection's deadline, and replies the peer never reads."""
        t = self.transport
        if t is None:
            return
        if t.is_closing():
            if self._closed_at is None:
                self._closed_at = now
            elif now - self._closed_at > self.server.config.idle_timeout:
                t.abort()  # a peer that never reads its reply must not keep its buffer
            return
        self._count_reply_bytes()
        self._step(now)

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._closed_at = self.server.loop.time()
            self.transport.close()

    def _step(self, now: float | None = None) -> None:
        conn = self.conn
        if conn is None or self.busy:
            return
        srv = self.server
        now = srv.loop.time() if now is None else now
        event = conn.next_event(now)
        if event is NEED_DATA:
            return
        if isinstance(event, CloseConnection):
            if conn.state == "DONE" and event.reason == "the connection is finished":
                return
            deadline = event.reason.startswith("no complete request before the deadline")
            self._client_error(event.reason, "read_timeout" if deadline else "client_error")
            self._close()
            return
        if isinstance(event, ProbeReceived):  # who serves this socket: never refused
            self._write(conn.send_probe_answer(srv.probe_answer()))
            srv.metrics.answered(HelperProbeRequest, 0)
            return
        if isinstance(event, MalformedRequest):
            log.info("QGS %s does not inflate: %s", MsgType(event.type).name, event.reason)
            srv.stats.errors += 1
            self._write(conn.send_error())
            srv.metrics.answered(q.REQUESTS[event.type][0], q.MsgError.UNEXPECTED)
            return
        assert isinstance(event, (RequestReceived, RawReportReceived))
        if isinstance(event, RequestReceived):
            kind: type = type(event.request)
            hint = COLLATERAL_REPLY_HINT if kind is q.GetCollateralRequest else QUOTE_REPLY_HINT
        else:
            kind, hint = RawQuoteRequest, QUOTE_REPLY_HINT
        adm = srv.admission
        key = 0
        if adm.limit_peers:
            pid, uid, _ = self.peer()
            key = srv.policy.key(pid, uid)
        d = adm.decide(kind, key, now, engine=True, reply_hint=hint)
        if d.action is Action.BUSY:
            self._busy(d.reason, kind, now)
            if isinstance(event, RequestReceived):
                self._write(conn.send_error())
                srv.metrics.answered(kind, q.MsgError.UNEXPECTED)
            else:
                conn.refuse()
                self._close()
                srv.metrics.answered(kind, CLOSED)
            return
        adm.reply_bytes += hint
        self._reply_bytes += hint
        self._decision, self._kind, self._t0 = d, kind, time.perf_counter()
        self.busy = True
        adm.started(d)
        fut = srv.loop.run_in_executor(srv.executor, self._work, event)
        fut.add_done_callback(self._done)

    def _busy(self, reason: str, kind: type, now: float) -> None:
        srv = self.server
        srv.metrics.refuse(reason)
        if reason == "busy":
            srv.stats.busy += 1
            detail = f"{srv.admission.in_flight} requests in flight"
        elif reason == "reply_buffer":
            detail = f"{srv.admission.reply_bytes} reply bytes buffered for clients"
        else:
            detail = "per-peer limit"
        pid, uid, _ = self.peer()
        how = "answered 0x12001 UNEXPECTED" if kind is not RawQuoteRequest else "closed (raw mode)"
        srv.refusals.refused(reason, pid, uid, f"{detail}; {how}", now, srv.policy.key(pid, uid))

    def _client_error(self, reason: str, kind: str) -> None:
        srv = self.server
        srv.stats.errors += 1
        srv.metrics.refuse(kind)
        pid, uid, _ = self.peer()
        log.info("QGS client pid=%d uid=%d: connection closed without a reply: %s", pid, uid, reason)

    def _work(self, event: RequestReceived | RawReportReceived) -> tuple[bytes | None, int]:
        assert self.conn is not None
        svc = self.server.service
        if isinstance(event, RawReportReceived):
            quote = svc.raw_quote(event.report)
            if quote is None:
                self.conn.refuse()
                return None, CLOSED
            return self.conn.send_raw_quote(quote), 0
        response = svc.answer(event.request)
        return self.conn.send(response), response.error_code

    def _done(self, fut: asyncio.Future[tuple[bytes | None, int]]) -> None:
        srv = self.server
        d, self._decision = self._decision, None
        if d is not None:
            srv.admission.finished(d)
            srv.admission.answered(d)
        self.busy = False
        kind = self._kind
        try:
            out, code = fut.result()
        except Exception:  # a bug, not the client's: log it, close
            log.exception("QGS request failed")
            srv.stats.errors += 1
            srv.metrics.answered(kind, CLOSED)
            self._close()
            srv.connection_gone()
            return
        srv.metrics.answered(kind, code)
        if kind in (q.GetQuoteRequest, RawQuoteRequest):
            srv.metrics.quote_latency(time.perf_counter() - self._t0)
        if code != 0:
            srv.metrics.engine_error(kind)
        if log.isEnabledFor(logging.DEBUG):
            self._log_request(kind, code)
        if out is None:
            srv.stats.errors += 1
            self._close()
        else:
            srv.stats.quotes += 1
            self._write(out)
        srv.connection_gone()

    def _log_request(self, kind: type, code: int) -> None:
        pid, uid, _ = self.peer()
        name, result = qgs_type_name(kind), qgs_result_name(code)
        ms = (time.perf_counter() - self._t0) * 1000
        log.debug(
            "QGS request %s -> %s in %.3f ms (pid=%d uid=%d)",
            name,
            result,
            ms,
            pid,
            uid,
            extra={
                "service": "qgs",
                "request": name,
                "result": result,
                "code": code,
                "duration_ms": round(ms, 3),
                "pid": pid,
                "uid": uid,
            },
        )

    def _write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(data)  # one write: the whole reply
            self._count_reply_bytes()
            self._close()  # flushes, then closes

    def _count_reply_bytes(self) -> None:
        t = self.transport
        if t is None or self.busy:
            return
        pending = t.get_write_buffer_size()
        if pending != self._reply_bytes:
            self.server.admission.reply_bytes += pending - self._reply_bytes
            self._reply_bytes = pending


class QgsServer(PathServer):
    """The QGS daemon's sockets (see the module doc)."""

    probe = staticmethod(probe_qgs_path)
    private_name = QGS_PRIVATE_SOCKET
    protocol = "QGS"
    log = log

    def __init__(self, service: QgsService, config: QgsConfig) -> None:
        self.service = service
        self.stats = QgsStats()
        metrics = ServerMetrics(
            QGS_PREFIX, "QGS", qgs_type_name, qgs_result_name, "GetQuote and raw-mode quote"
        )
        super().__init__(config, metrics)
        self.config: QgsConfig = config
        self.admission = Admission(self.policy, config.max_in_flight, 0.0, config.max_reply_bytes)
        self.executor = ThreadPoolExecutor(max(1, config.workers), thread_name_prefix="qgs-worker")
        self._paths: list[tuple[Path, Any]] = []
        self.vsock_ports: list[int] = []

    # -- the lifecycle's hooks
    def new_connection(self) -> _QgsProtocol:
        primary = self.config.primary
        return _QgsProtocol(self, primary if primary is not None else _PRIVATE)

    def new_private_connection(self) -> _QgsProtocol:
        return _QgsProtocol(self, _PRIVATE)  # this pod's probes: every request type

    @property
    def instance_id(self) -> str:
        return self.service.instance_id

    @property
    def started_ns(self) -> int:
        return self.service.started_ns

    def state_changed(self, value: str) -> None:
        self.service.state = value

    def sweep_interval(self) -> float:
        cfg = self.config
        return min(cfg.timeout / 4, cfg.idle_timeout / 4, 1.0)

    def release(self) -> None:
        self.executor.shutdown(wait=True)

    def summary(self) -> str:
        s = self.stats
        return f"{s.connections} connections, {s.quotes} answered, {s.busy} busy, {s.errors} errors"

    def probe_answer(self) -> ProbeAnswer:
        """Our probe's answer: who we are and in which state."""
        svc = self.service
        return ProbeAnswer(IMPLEMENTATION, svc.version, svc.pid, svc.instance_id, svc.started_ns, self.state)

    # -- the admission state, under the names the server has always shown
    @property
    def in_flight(self) -> int:
        """Requests in the workers, queued or running."""
        return self.admission.in_flight

    @in_flight.setter
    def in_flight(self, value: int) -> None:
        self.admission.in_flight = value

    async def start(self) -> None:
        """Bind every listener (the first path is the shared one, see :mod:`.lifecycle`).

        Raises:
            ConfigError: another program serves a path (no ``replace``), vsock is unavailable, or a
                socket cannot be bound.
        """
        cfg = self.config
        if not any(lst.path is not None or lst.vsock_port is not None for lst in cfg.listeners):
            raise ConfigError("no QGS listener configured (give a socket path or a vsock port)")
        for listener in cfg.listeners:
            if listener.vsock_port is not None and not vsock_available():
                raise ConfigError(
                    "--vsock-port needs AF_VSOCK, which this kernel does not offer (load vsock modules)"
                )
        await self.start_path()
        primary = cfg.primary
        try:
            if primary is not None and self.state != "standby":
                self.log.info("QGS listening on %s (mode %o)", primary.path, primary.mode)
            for listener in cfg.listeners:
                if listener.path is not None and listener is not primary:
                    await self._start_unix(listener, listener.path)
                if listener.vsock_port is not None:
                    await self._start_vsock(listener, listener.vsock_port)
        except BaseException:
            await self.stop()
            raise
        self.log.info(
            "serving QGS protocol (engine %s, %d workers, max in flight %d)",
            getattr(self.service.engine, "name", "?"),
            cfg.workers,
            cfg.max_in_flight,
        )

    async def _start_unix(self, listener: QgsListener, path: Path) -> None:
        cfg = self.config
        sock, ident, _ = await self.loop.run_in_executor(
            None,
            lambda: publish_socket(
                path,
                mode=listener.mode,
                backlog=cfg.backlog,
                replace=cfg.replace,
                probe_timeout=cfg.probe_timeout,
                group=listener.group,
                started_ns=self.started_ns,
                instance_id=self.instance_id,
                probe=probe_qgs_path,
            ),
        )
        server = await self.loop.create_unix_server(lambda: _QgsProtocol(self, listener), sock=sock)
        self.extra_servers.append(server)
        self._paths.append((path, ident))
        self.log.info("QGS listening on %s (mode %o)", path, listener.mode)

    async def _start_vsock(self, listener: QgsListener, port: int) -> None:
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        try:
            sock.bind((socket.VMADDR_CID_ANY, port))
            sock.listen(self.config.backlog)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot listen on vsock port {port}: {exc}") from exc
        sock.setblocking(False)
        server = await self.loop.create_server(lambda: _QgsProtocol(self, listener), sock=sock)
        self.extra_servers.append(server)
        self.vsock_ports.append(sock.getsockname()[1])
        self.log.info("QGS listening on vsock port %d", port)

    async def stop(self, reason: str = "stop requested") -> None:
        """Stop now: stop accepting, remove our socket paths, answer what is queued and in flight."""
        self.request_stop(reason)
        await self.serve_until_stopped()

    async def _shutdown(self) -> None:
        for path, ident in self._paths:
            unlink_if_ours(path, ident)
        await super()._shutdown()


__all__ = [
    "DEFAULT_QGS_SOCKET",
    "QgsConfig",
    "QgsListener",
    "QgsServer",
    "QgsStats",
    "qgs_result_name",
    "qgs_type_name",
    "vsock_available",
]
