"""One client connection of the quote daemon (``AesmConnection``, an ``asyncio.Protocol``).

Frames are decoded as they arrive (any chunking); each request goes to the service (engine
requests in the server's engine thread, or on the loop when the engine is fast and idle, see
``AesmServer.inline_ok``); the reply (prefix and body) is written in one write; the connection then
waits for the next request. A broken client (oversized prefix, garbage protobuf, unknown envelope,
truncated frame, slow or idle) is logged once with its pid/uid (SO_PEERCRED) and closed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections import deque
from typing import TYPE_CHECKING, cast

from ..abi.codes import AesmStatus
from ..errors import LocalProtocolError, RemoteProtocolError
from ..service import AesmService
from ..wire import messages as m
from ..wire.framing import FrameDecoder, encode_frame
from .metrics import request_type_name, result_name

if TYPE_CHECKING:
    from .unix import AesmServer

log = logging.getLogger(__name__)

_PEERCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}
_MAX_QUEUED_FRAMES = 8


#: a thread-run call longer than this (wall clock) counts as slow whatever its CPU time (I/O waits)
_WALL_IS_COST_ABOVE = 0.02


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


class AesmConnection(asyncio.Protocol):
    """Protocol of one client connection (see the module doc)."""

    __slots__ = (
        "_closing",
        "_decoder",
        "_logged",
        "_peer",
        "_peer_key",
        "_processing",
        "_queue",
        "_read_paused",
        "_server",
        "_slow",
        "_t0",
        "_write_blocked",
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
        self._slow = False  # the request in the engine thread is not known to be fast
        self._closing = False
        self._read_paused = False
        self._write_blocked = False  # the peer does not read our replies (transport above high-water)
        self._logged = False
        self._peer: tuple[int, int, int] | None = None
        self._peer_key: int | None = None  # set while an admitted request of a limited peer runs
        self._t0 = 0.0
        self.transport: asyncio.Transport | None = None
        self.last_activity = 0.0
        self.frame_started = 0.0
        self.served = 0

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        srv = self._server
        srv.stats.connections += 1
        srv.metrics.connections_total += 1
        self.last_activity = now = srv.loop.time()
        if len(srv.connections) >= srv.config.max_connections:
            self._refuse_connection("max_connections", f"{srv.config.max_connections} connections open", now)
            return
        if srv.restrict_peers:
            _, uid, gid = self.peer()
            if not srv.policy.allowed(uid, gid):
                self._refuse_connection("not_allowed", "uid/gid not in the allow-list", now)
                return
        srv.connections.add(self)

    def _refuse_connection(self, reason: str, detail: str, now: float) -> None:
        srv = self._server
        srv.metrics.refuse(reason)
        pid, uid, _ = self.peer()
        srv.refusals.refused(reason, pid, uid, f"{detail}; connection closed", now)
        self._closing = True
        assert self.transport is not None
        self.transport.close()

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
        self._flow()
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
        self._write_blocked = True
        self._flow()

    def resume_writing(self) -> None:
        self._write_blocked = False
        self._flow()
        if self._queue and not self._processing:
            self._next()

    def _flow(self) -> None:
        """Stop reading while the peer does not read our replies or too many requests are queued
        (a pipelining client cannot make us buffer without bound); read again when both clear."""
        t = self.transport
        if t is None or t.is_closing():
            return
        want_pause = self._write_blocked or len(self._queue) > _MAX_QUEUED_FRAMES
        if want_pause and not self._read_paused:
            self._read_paused = True
            t.pause_reading()
        elif not want_pause and self._read_paused:
            self._read_paused = False
            t.resume_reading()

    # -- request flow
    def _next(self) -> None:
        srv = self._server
        while self._queue and not self._processing and not self._write_blocked:
            if self.transport is None or self.transport.is_closing():
                return
            body = self._queue.popleft()
            try:
                request = m.decode_request(body)
            except RemoteProtocolError as exc:
                self._client_error(str(exc))
                return
            t0 = time.perf_counter()
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
            if srv.limit_peers and not isinstance(request, m.HelperProbeRequest):
                pid, uid, _ = self.peer()
                key = srv.policy.key(pid, uid)
                refusal = srv.policy.admit(key, srv.loop.time())
                if refusal is not None:
                    self._refused_request(refusal, service, request, t0)
                    continue
                self._peer_key = key
            if service.needs_engine(request):
                if srv.in_flight >= srv.config.max_in_flight:
                    srv.stats.busy += 1
                    self._refused_request("busy", service, request, t0)
                    continue
                if srv.inline_ok(request):  # a fast engine, nothing slow queued: no thread hop
                    t1 = time.perf_counter()
                    response = service.handle(request)
                    srv.record_cost(request, time.perf_counter() - t1)
                    self._reply(response)
                    self._answered(request, response, t0)
                    continue
                self._t0 = t0
                srv.in_flight += 1
                self._slow = not srv.known_fast(request)
                srv.slow_in_flight += self._slow
                self._processing = True
                fut = srv.loop.run_in_executor(srv.executor, _timed, service, request)
                fut.add_done_callback(self._engine_done)
                return
            response = service.handle(request)
            self._reply(response)
            self._answered(request, response, t0)
        self._flow()
        if self._closing and not self._processing and self.transport is not None:
            self.transport.close()

    def _engine_done(self, fut: asyncio.Future[tuple[m.Request, m.Response | None, float]]) -> None:
        srv = self._server
        srv.in_flight -= 1
        srv.slow_in_flight -= self._slow
        self._slow = False
        self._processing = False
        request: m.Request | None = None
        try:
            request, response, cost = fut.result()
            srv.record_cost(request, cost)
        except Exception:  # the service already maps engine errors; this is a bug
            log.exception("service failed")
            response = None
        if self.transport is not None and not self.transport.is_closing():
            self.last_activity = srv.loop.time()
            self._reply(response)
            if request is not None:
                self._answered(request, response, self._t0)
            self._next()
        elif request is not None:
            self._answered(request, None, self._t0)
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

    def _answered(self, request: m.Request, response: m.Response | None, t0: float) -> None:
        """Account for one answered request: metrics, the per-peer slot, the debug line."""
        srv = self._server
        code = getattr(response, "error_code", -1)
        rtype = type(request)
        srv.metrics.answered(rtype, code)
        if rtype is m.GetQuoteExRequest:
            srv.metrics.quote_latency(time.perf_counter() - t0)
        if code > 0 and AesmService.needs_engine(request):
            srv.metrics.engine_error(rtype)
        if self._peer_key is not None:
            srv.policy.release(self._peer_key)
            self._peer_key = None
        if log.isEnabledFor(logging.DEBUG):
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

    def _refused_request(self, reason: str, service: AesmService, request: m.Request, t0: float) -> None:
        """Answer ``request`` BUSY (18) because of ``reason`` (one log line, folded when repeated)."""
        srv = self._server
        srv.metrics.refuse(reason)
        pid, uid, _ = self.peer()
        detail = (
            "answered BUSY (18)"
            if reason != "busy"
            else f"{srv.in_flight} requests in flight; answered BUSY (18)"
        )
        srv.refusals.refused(reason, pid, uid, detail, srv.loop.time(), srv.policy.key(pid, uid))
        if self._peer_key is not None:  # admitted by the peer limits, refused by the global bound
            srv.policy.release(self._peer_key)
            self._peer_key = None
        response = service.error_response(request, AesmStatus.BUSY)
        self._reply(response)
        srv.metrics.answered(type(request), getattr(response, "error_code", -1))

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

    def _client_error(self, reason: str, level: int = logging.WARNING, kind: str = "client_error") -> None:
        self._server.stats.client_errors += 1
        self._server.metrics.refuse(kind)
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
                self._client_error(
                    f"request not complete after {cfg.read_timeout:g}s (slow client)", kind="read_timeout"
                )
            return
        limit = cfg.idle_timeout
        if self._server.stopping:
            limit = 0.0 if self.served else min(cfg.read_timeout, cfg.idle_timeout)
        if now - self.last_activity > limit:
            if not self.served and not self._server.stopping:
                self._client_error(
                    f"no request within {limit:g}s of connecting (idle)",
                    level=logging.INFO,
                    kind="idle_timeout",
                )
            else:
                self.transport.close()


__all__ = ["AesmConnection"]
