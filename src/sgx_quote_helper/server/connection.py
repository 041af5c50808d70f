"""One client connection of the quote daemon or the upstream proxy: a thin ``asyncio.Protocol``
adapter over the sans-I/O core (:class:`~sgx_quote_helper.wire.connection.ServerConnection`).

:class:`ConnectionBase` owns what both share: feeding the core, flow control (reading pauses while
the peer does not read our replies, or while too many requests are queued: a client can make us
buffer at most one reply and a few requests), the per-uid connection cap, the reply bytes counted
against the global cap, the deadlines (the core says which passed; a peer that has read none of its
reply for ``idle_timeout`` is aborted, not closed, so its buffer is freed at once), and the one
log line per broken client with its pid/uid (SO_PEERCRED). What to do with each request is the
subclass's :meth:`ConnectionBase.serve` — :class:`AesmConnection` (the daemon: the service, inline
or in the engine thread) or the proxy's (forward upstream) — after the one admission decision
(:mod:`.admission`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from typing import Any, Protocol

from ..abi.codes import AesmStatus
from ..errors import Fault, LocalProtocolError
from ..service import AesmService
from ..wire import messages as m
from ..wire.connection import EXPIRED, NEED_DATA, PeerClosed, ProtocolViolation, ServerConnection
from .admission import Action, Admission, Decision
from .config import ServerConfig
from .gate import Gate, peer_credentials
from .limits import PeerPolicy, RefusalLog
from .metrics import ServerMetrics, request_type_name, result_name

log = logging.getLogger(__name__)

_MAX_QUEUED_FRAMES = 8

#: a thread-run call longer than this (wall clock) counts as slow whatever its CPU time (I/O waits)
_WALL_IS_COST_ABOVE = 0.02

#: log level and metrics reason of each violation (all others: WARNING, "client_error")
_VIOLATION_LOG = {
    Fault.UNEXPECTED: (logging.INFO, "client_error"),
    Fault.FRAME_TIMEOUT: (logging.WARNING, "read_timeout"),
    Fault.IDLE_TIMEOUT: (logging.INFO, "idle_timeout"),
    Fault.REPLY_TIMEOUT: (logging.WARNING, "reply_timeout"),
}


def _timed(service: AesmService, request: m.Request) -> tuple[m.Request, m.Response | None, float]:
    """Run in the engine thread: the answer and the engine cost of the call.

    The cost is the thread's CPU time, so that waiting for the GIL while the event loop runs does
    not make a fast engine look slow; a call whose wall time exceeds 20 ms counts by wall time
    (an engine waiting on a device or the network is slow however little CPU it uses).
    """
    w0, c0 = time.perf_counter(), time.thread_time()
    response = service.handle(request)
    wall, cpu = time.perf_counter() - w0, time.thread_time() - c0
    return request, response, wall if wall > _WALL_IS_COST_ABOVE else cpu


class ServerSide(Protocol):
    """What a connection needs of its server (``AesmServer`` has it; no import of the server)."""

    config: ServerConfig
    service: AesmService | None
    admission: Admission
    policy: PeerPolicy
    restrict_peers: bool
    metrics: ServerMetrics
    refusals: RefusalLog
    connections: set[Any]
    gate: Gate
    executor: Executor
    stopping: bool
    #: one debug line per request (``log`` enabled for DEBUG; the server refreshes it each sweep)
    log_requests: bool

    @property
    def stats(self) -> Any: ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def connection_gone(self) -> None: ...


class ConnectionBase(asyncio.Protocol):
    """The asyncio side of one connection (see the module doc)."""

    __slots__ = (
        "_closed_at",
        "_closing",
        "_core",
        "_decision",
        "_logged",
        "_peer",
        "_processing",
        "_read_paused",
        "_reply_bytes",
        "_server",
        "_t0",
        "_uid",
        "transport",
    )

    def __init__(self, server: ServerSide) -> None:
        self._server = server
        cfg = server.config
        self._core = ServerConnection(
            max_frame_size=cfg.max_frame_size, frame_timeout=cfg.read_timeout, idle_timeout=cfg.idle_timeout
        )
        self._processing = False
        self._closing = False
        self._closed_at: float | None = None
        self._read_paused = False
        self._logged = False
        self._peer: tuple[int, int, int] | None = None
        self._uid: int | None = None  # counted against max_connections_per_uid
        self._decision: Decision | None = None  # of the request being served
        self._reply_bytes = 0  # counted in admission.reply_bytes
        self._t0 = 0.0
        self.transport: asyncio.Transport | None = None

    @property
    def served(self) -> int:
        """Replies sent on this connection."""
        return self._core.served

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t: asyncio.Transport = transport  # type: ignore[assignment]  # uvloop's are not subclasses
        self.transport = t
        srv = self._server
        srv.stats.connections += 1
        srv.metrics.connections_total += 1
        self._core.last_activity = now = srv.loop.time()
        gate = srv.gate
        if gate.counts_only and len(srv.connections) < gate.max_connections:
            admitted = True  # what gate.open answers when it has no list and no per-uid cap
        else:
            admitted, self._uid = gate.open(len(srv.connections), self.peer, now)
        if not admitted:
            self._closing = True
            t.close()
            return
        srv.connections.add(self)

    def data_received(self, data: bytes) -> None:
        core = self._core
        core.receive_data(data, self._server.loop.time())
        if core.violation is not None:  # an oversized prefix: pre-empts everything queued
            self._violation(core.violation)
            return
        queued = core.queued
        if queued:
            if (queued > _MAX_QUEUED_FRAMES or core.write_blocked) is not self._read_paused:
                self._flow()  # (it acts only on a change)
            if not self._processing:
                self._next()

    def eof_received(self) -> bool:
        core = self._core
        core.receive_data(b"", self._server.loop.time())
        if core.violation is not None:  # EOF inside a frame
            self._violation(core.violation)
            return False
        # half-close: answer what was asked, then close
        self._closing = True
        return self._processing or bool(core.queued)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        srv = self._server
        srv.connections.discard(self)
        if self._uid is not None:
            srv.gate.close(self._uid)
            self._uid = None
        if self._reply_bytes:
            srv.admission.reply_bytes -= self._reply_bytes
            self._reply_bytes = 0
        if srv.stopping:  # (connection_gone acts only then)
            srv.connection_gone()

    def pause_writing(self) -> None:
        assert self.transport is not None
        self._core.writing_paused(self._server.loop.time(), self.transport.get_write_buffer_size())
        self._flow()

    def resume_writing(self) -> None:
        self._core.writing_resumed(self._server.loop.time())
        self._count_reply_bytes()
        self._flow()
        if self._core.queued and not self._processing:
            self._next()

    def _flow(self) -> None:
        """Stop reading while the peer does not read our replies or too many requests are queued
        (a pipelining client cannot make us buffer without bound); read again when both clear."""
        t = self.transport
        if t is None or t.is_closing():
            return
        want_pause = self._core.write_blocked or self._core.queued > _MAX_QUEUED_FRAMES
        if want_pause and not self._read_paused:
            self._read_paused = True
            t.pause_reading()
        elif not want_pause and self._read_paused:
            self._read_paused = False
            t.resume_reading()

    # -- request flow
    def _next(self) -> None:
        core = self._core
        while not self._processing and not core.write_blocked:
            t = self.transport
            if t is None or t.is_closing():
                return
            item = self.pull()
            if item is NEED_DATA or type(item) is PeerClosed:
                break
            if type(item) is ProtocolViolation:
                self._violation(item)
                return
            if not self.serve(item):
                return  # off the loop; the completion calls _next again
        if (core.write_blocked or core.queued > _MAX_QUEUED_FRAMES) is not self._read_paused:
            self._flow()  # (it acts only on a change)
        if self._closing and not self._processing and self.transport is not None:
            self.transport.close()

    def pull(self) -> object:
        """The next item to serve (a decoded request, a raw frame...), or a core event."""
        raise NotImplementedError

    def serve(self, item: Any) -> bool:
        """Serve one pulled item; False when it went off the loop (``_processing`` is then set)."""
        raise NotImplementedError

    def admit(self, request: m.Request, *, engine: bool, exempt: bool) -> Decision:
        """The admission decision for ``request`` (see :mod:`.admission`); BUSY is logged here."""
        srv = self._server
        adm = srv.admission
        peer_key = 0
        if adm.limit_peers and not exempt:
            pid, uid, _ = self.peer()
            peer_key = srv.policy.key(pid, uid)
        hint = request.buf_size if type(request) is m.GetQuoteExRequest else 0
        d = adm.decide(
            type(request), peer_key, srv.loop.time(), engine=engine, exempt=exempt, reply_hint=hint
        )
        if d.action is Action.BUSY:
            self._log_busy(d.reason)
        elif hint:  # the reply's bytes count against the cap from now, not only once written
            adm.reply_bytes += hint
            self._reply_bytes += hint
        return d

    def _log_busy(self, reason: str) -> None:
        srv = self._server
        srv.metrics.refuse(reason)
        if reason == "busy":
            srv.stats.busy += 1
        pid, uid, _ = self.peer()
        if reason == "busy":
            detail = f"{srv.admission.in_flight} requests in flight; answered BUSY (18)"
        elif reason == "reply_buffer":
            detail = f"{srv.admission.reply_bytes} reply bytes buffered for clients; answered BUSY (18)"
        else:
            detail = "answered BUSY (18)"
        srv.refusals.refused(reason, pid, uid, detail, srv.loop.time(), srv.policy.key(pid, uid))

    def write_reply(self, frame: bytes) -> None:
        """Write one reply frame (prefix and body in one write)."""
        t = self.transport
        assert t is not None
        t.write(frame)
        pending = t.get_write_buffer_size()  # _count_reply_bytes, inline: once per reply
        if pending != self._reply_bytes:
            self._server.admission.reply_bytes += pending - self._reply_bytes
            self._reply_bytes = pending
        if self._server.stopping:  # at shutdown, close after each answer (aesmd behaviour)
            self._closing = True

    def _count_reply_bytes(self) -> None:
        t = self.transport
        if t is None:
            return
        pending = t.get_write_buffer_size()
        if pending != self._reply_bytes:
            self._server.admission.reply_bytes += pending - self._reply_bytes
            self._reply_bytes = pending

    def answered(self, request: m.Request, response: m.Response | None, t0: float) -> None:
        """Account for one answered request: metrics, the per-peer slot, the debug line."""
        srv = self._server
        code = getattr(response, "error_code", -1)
        rtype = type(request)
        srv.metrics.answered(rtype, code)
        if rtype is m.GetQuoteExRequest:
            srv.metrics.quote_latency(time.perf_counter() - t0)
        if code > 0 and rtype.ENGINE:
            srv.metrics.engine_error(rtype)
        d = self._decision
        if d is not None:
            self._decision = None
            if d.peer is not None:
                srv.admission.answered(d)
        if srv.log_requests:  # log.isEnabledFor(DEBUG), as of the server's last sweep
            self._log_request(request, code, t0)

    def _log_request(self, request: m.Request, code: int, t0: float) -> None:
        pid, uid, _ = self.peer()
        name, result = request_type_name(type(request)), result_name(code) if code >= 0 else "closed"
        ms = (time.perf_counter() - t0) * 1000
        log.debug(
            "request %s -> %s in %.3f ms (pid=%d uid=%d)",
            name,
            result,
            ms,
            pid,
            uid,
            extra={
                "request": name,
                "result": result,
                "code": code,
                "duration_ms": round(ms, 3),
                "pid": pid,
                "uid": uid,
            },
        )

    # -- errors and peers
    def peer(self) -> tuple[int, int, int]:
        """(pid, uid, gid) of the client from SO_PEERCRED; (-1, -1, -1) if unavailable."""
        if self._peer is None:
            self._peer = peer_credentials(self.transport)
        return self._peer

    def _violation(self, v: ProtocolViolation) -> None:
        level, kind = _VIOLATION_LOG.get(v.fault, (logging.WARNING, "client_error"))
        if v.fault == Fault.UNEXPECTED:
            self._server.stats.requests += 1  # an envelope we do not serve still counts as a request
        self.client_error(v.reason, level, kind, abort=v.fault == Fault.REPLY_TIMEOUT)

    def client_error(
        self, reason: str, level: int = logging.WARNING, kind: str = "client_error", abort: bool = False
    ) -> None:
        """Log a broken client once, count it, and close (``abort``: drop unsent replies at once)."""
        self._server.stats.client_errors += 1
        self._server.metrics.refuse(kind)
        if not self._logged:
            self._logged = True
            pid, uid, _ = self.peer()
            log.log(level, "client pid=%d uid=%d: %s", pid, uid, reason)
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.close()

    def close(self) -> None:
        """Close gracefully (unsent replies are flushed first, for at most ``idle_timeout``)."""
        if self.transport is not None:
            if self._closed_at is None:
                self._closed_at = self._server.loop.time()
            self.transport.close()

    def check_timeouts(self, now: float) -> None:
        """Called by the server's sweep: the core's deadlines, and closes that never flush."""
        t = self.transport
        if t is None:
            return
        srv = self._server
        if t.is_closing():
            # a graceful close waits for the peer to take what is unsent; one that never does
            # would hold its buffer and its slot forever
            if self._closed_at is None:
                self._closed_at = now
            elif now - self._closed_at > srv.config.idle_timeout:
                t.abort()
            return
        core = self._core
        if core.write_blocked:
            core.write_progress(now, t.get_write_buffer_size())
            self._count_reply_bytes()
        outcome = core.handle_timeout(now, draining=srv.stopping)
        if outcome is EXPIRED:
            self.close()
        elif outcome is not None:
            self._violation(outcome)  # type: ignore[arg-type]


class AesmConnection(ConnectionBase):
    """A daemon connection: each request goes to the service (inline, or in the engine thread)."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        # the usual chunk (one whole request while nothing is pending: the core decides) is
        # served here in one step, exactly as ConnectionBase.data_received -> _next would serve it
        t = self.transport
        if not self._processing and not self._read_paused and t is not None and not t.is_closing():
            core = self._core
            event = core.receive_request(data, self._server.loop.time())
            if event is not None:
                if type(event) is ProtocolViolation:
                    self._violation(event)
                elif self.serve(event):
                    blocked = core.write_blocked
                    if not blocked and t.is_closing():
                        return
                    if blocked is not self._read_paused:
                        self._flow()
                    if self._closing and not self._processing:
                        t.close()
                return
        ConnectionBase.data_received(self, data)

    def pull(self) -> object:
        return self._core.next_event()

    def serve(self, item: Any) -> bool:
        request: m.Request = item
        srv = self._server
        t0 = time.perf_counter()
        srv.stats.requests += 1
        service = srv.service
        assert service is not None
        kind = type(request)
        d = self.admit(request, engine=kind.ENGINE, exempt=kind is m.HelperProbeRequest)
        action = d.action
        if action is Action.BUSY:
            busy = request.failure(AesmStatus.BUSY)
            self._reply(busy)
            srv.metrics.answered(kind, getattr(busy, "error_code", -1))
            return True
        self._decision = d
        if action is Action.INLINE:
            if kind.ENGINE and not srv.admission.always_inline:
                response, cost = _timed(service, request)[1:]
                srv.admission.record_cost(kind, cost)
            else:
                response = service.handle(request)
            self._reply(response)
            self.answered(request, response, t0)
            return True
        self._t0 = t0
        srv.admission.started(d)
        self._processing = True
        fut = srv.loop.run_in_executor(srv.executor, _timed, service, request)
        fut.add_done_callback(self._engine_done)
        return False

    def _engine_done(self, fut: asyncio.Future[tuple[m.Request, m.Response | None, float]]) -> None:
        srv = self._server
        d = self._decision
        if d is not None:
            srv.admission.finished(d)
        self._processing = False
        request: m.Request | None = None
        try:
            request, response, cost = fut.result()
            srv.admission.record_cost(type(request), cost)
        except Exception:  # the service already maps engine errors; this is a bug
            log.exception("service failed")
            response = None
        if self.transport is not None and not self.transport.is_closing():
            self._reply(response)
            if request is not None:
                self.answered(request, response, self._t0)
            self._next()
        elif request is not None:
            self.answered(request, None, self._t0)
        else:
            srv.admission.answered(self._decision)
            self._decision = None
        srv.connection_gone()

    def _reply(self, response: m.Response | None) -> None:
        if self.transport is None:
            return
        if response is None:
            self._core.unanswered()
            self.close()
            return
        try:
            frame = self._core.send(response, self._server.loop.time())
        except LocalProtocolError:
            log.exception("cannot encode %s", type(response).__name__)
            self._core.unanswered()
            self.close()
            return
        self.write_reply(frame)


__all__ = ["AesmConnection", "ConnectionBase", "ServerSide"]
