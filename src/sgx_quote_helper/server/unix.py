"""The asyncio Unix-socket server of the quote daemon (runs on uvloop when installed).

Per connection (:class:`~.connection.AesmConnection`, an ``asyncio.Protocol``): frames are decoded as they arrive
(any chunking), each request goes to the :class:`~sgx_quote_helper.service.AesmService` (engine
requests in a one-thread executor: one quote at a time per engine; cheap ones inline), and the
reply (prefix and body) is written in one write. The connection then stays open for further
requests until the client closes it or ``idle_timeout`` passes. Past ``max_in_flight`` engine
requests, new ones are answered BUSY (18) at once. A broken client (oversized prefix, garbage
protobuf, unknown envelope, truncated frame, slow or idle) is logged once with its pid/uid
(SO_PEERCRED) and its connection closed; nobody else notices.

Lifecycle (:class:`AesmServer`, states in ``state``, reported by HelperProbe): ``start()`` publishes
the socket (``socketpath``: stale replaced, a live older sgx-quote-helper taken over, a newer one
left alone (``standby``), another program refused unless ``replace``) and, with a private directory,
the pod-private socket the probes use (server/instance.py). A periodic sweep enforces timeouts; a
guard task checks that the path still names our socket and acts on a loss (socketpath.judge_loss):
a successor gets the path (``handed-over``: stop accepting there, answer the backlog and what is in
flight, stay up drained until stopped); anything else gets our socket put back and an alert.
``terminate()`` (SIGTERM): while we serve the path, keep serving up to ``handover_window`` seconds
for a successor (``terminating``), then stop. ``stop()``: stop accepting, unlink the path only if
it is still ours, accept and answer what is queued in the backlog, finish requests in flight, close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

from ..service import AesmService
from ..wire import messages as m
from .admission import Admission
from .config import ServerConfig
from .connection import AesmConnection, ConnectionBase
from .instance import private_socket
from .limits import PeerPolicy, RefusalLog
from .metrics import MetricsServer, ServerMetrics, start_metrics_server
from .socketpath import (
    Loss,
    NewerOwner,
    PathState,
    ProbeResult,
    SocketIdentity,
    bind_private,
    judge_loss,
    listener_credentials,
    path_is,
    probe_path,
    publish_socket,
    unlink_if_ours,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ServerStats:
    """Counters since start (read them for metrics or tests)."""

    connections: int = 0
    requests: int = 0
    busy: int = 0
    client_errors: int = 0


class AesmServer:
    """The quote daemon's socket server (see the module doc).

    Args:
        service: the request semantics (``None`` for the upstream proxy, ``server.proxy``, whose
            connections forward raw frames instead).
        config: socket path, limits, timeouts.
        executor: where engine requests run (default: a one-thread pool, created on start).
    """

    #: the per-connection protocol; the upstream proxy (server/proxy.py) plugs in its own
    connection_class: type[ConnectionBase] = AesmConnection

    def __init__(
        self, service: AesmService | None, config: ServerConfig, executor: Executor | None = None
    ) -> None:
        self.service = service
        self.config = config
        self.stats = ServerStats()
        self.metrics = ServerMetrics()
        self.metrics.gauge("in_flight", "Engine requests queued or running", lambda: self.admission.in_flight)
        self.metrics.gauge("open_connections", "Client connections open", lambda: len(self.connections))
        self.policy = PeerPolicy(
            allow_uids=config.allow_uids,
            allow_gids=config.allow_gids,
            rate=config.rate_limit,
            burst=config.rate_burst or max(1, int(config.rate_limit)),
            max_in_flight_per_peer=config.max_in_flight_per_peer,
            by_pid=config.limit_by_pid,
        )
        self.restrict_peers = self.policy.restricts_peers  # plain bools: read on every connection/request
        self.limit_peers = self.policy.limits_peers
        inline_below = self._inline_below()
        never_blocks = service is not None and not getattr(service.engine, "blocking", True)
        self.admission = Admission(
            self.policy,
            config.max_in_flight,
            inline_below,
            config.max_reply_bytes,
            always_inline=never_blocks and inline_below > 0,
        )
        self.per_uid: dict[int, int] = {}  # open connections per peer uid
        self.metrics_server: MetricsServer | None = None
        self.refusals = RefusalLog(logging.getLogger(__name__.rsplit(".", 1)[0] + ".access"))
        self.connections: set[ConnectionBase] = set()
        self.stopping = False
        self.identity: SocketIdentity | None = None
        self.previous: ProbeResult | None = None
        self.stop_reason = ""
        self._own_executor = executor is None
        self.executor: Executor = executor or ThreadPoolExecutor(1, thread_name_prefix="aesm-engine")
        self._server: asyncio.AbstractServer | None = None
        self._private_server: asyncio.AbstractServer | None = None
        self._retired: list[asyncio.AbstractServer] = []  # listeners an impostor cut off the path
        self._listen_dup: socket.socket | None = None
        self._state = "serving"
        self.handed_over: asyncio.Event | None = None
        self.successor: ProbeResult | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._guard: asyncio.Task[None] | None = None
        self._terminator: asyncio.Task[None] | None = None
        self._stop_requested: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._unlink_on_stop = True
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set in start()

    async def start(self) -> None:
        """Publish the socket and start serving.

        Raises:
            ConfigError: the path is served by another program (and not ``replace``), or unusable.
        """
        self.loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        self._idle = asyncio.Event()
        self.handed_over = asyncio.Event()
        cfg = self.config
        try:
            await self._publish(None)
        except NewerOwner as exc:
            if cfg.private_dir is None:
                raise
            self.state = "standby"
            self.successor = exc.owner
            log.warning("%s; standing by, drained and not ready, until stopped", exc)
        if cfg.private_dir is not None:
            path = private_socket(cfg.private_dir)
            psock, _ = await self.loop.run_in_executor(None, lambda: bind_private(path, backlog=64))
            self._private_server = await self.loop.create_unix_server(
                lambda: self.connection_class(self), sock=psock, backlog=64
            )
            log.info("private socket for this pod's probes: %s", path)
        self._sweeper = asyncio.create_task(self._sweep(), name="aesm-sweep")
        self._guard = asyncio.create_task(self._guard_path(), name="aesm-path-guard")
        if cfg.metrics_port is not None:
            try:
                self.metrics_server = start_metrics_server(self.metrics, cfg.metrics_host, cfg.metrics_port)
            except OSError as exc:
                log.error(
                    "metrics endpoint %s:%d: %s (serving without it)", cfg.metrics_host, cfg.metrics_port, exc
                )
            else:
                log.info("metrics on http://%s:%d/metrics", cfg.metrics_host, self.metrics_server.port)
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

    @property
    def instance_id(self) -> str:
        return self.service.instance_id if self.service is not None else ""

    @property
    def started_ns(self) -> int:
        return self.service.started_ns if self.service is not None else 0

    @property
    def state(self) -> str:
        """``serving``, ``handed-over``, ``terminating`` or ``standby`` (see the module doc)."""
        return self._state

    @state.setter
    def state(self, value: str) -> None:
        self._state = value
        if self.service is not None:
            self.service.state = value

    async def _publish(self, before: ProbeResult | None) -> None:
        """Put a new listening socket at the path (``before``: what is there, when known) and serve it."""
        cfg = self.config
        sock, identity, previous = await self.loop.run_in_executor(
            None,
            lambda: publish_socket(
                cfg.socket_path,
                mode=cfg.socket_mode,
                backlog=cfg.backlog,
                replace=cfg.replace,
                probe_timeout=cfg.probe_timeout,
                group=cfg.socket_group,
                started_ns=self.started_ns,
                instance_id=self.instance_id,
                before=before,
            ),
        )
        if self._server is not None:
            self._retired.append(self._server)
        if self._listen_dup is not None:
            self._listen_dup.close()
        self.identity, self.previous = identity, previous
        self._listen_dup = sock.dup()  # keeps the listener alive to drain the backlog at stop
        self._listen_dup.setblocking(False)
        self._server = await self.loop.create_unix_server(
            lambda: self.connection_class(self), sock=sock, backlog=cfg.backlog
        )

    def terminate(self, reason: str) -> None:
        """SIGTERM: stop now when a successor already has the path; else keep serving it up to
        ``handover_window`` seconds for one to take it over (socketpath), then stop."""
        window = self.config.handover_window
        if self.state in ("handed-over", "standby") or window <= 0 or self._terminator is not None:
            self.request_stop(reason)
            return
        self.state = "terminating"
        log.info("%s: serving %s for up to %gs more for a successor", reason, self.config.socket_path, window)
        self._terminator = asyncio.ensure_future(self._terminate_after(reason, window))

    async def _terminate_after(self, reason: str, window: float) -> None:
        assert self.handed_over is not None
        try:
            await asyncio.wait_for(self.handed_over.wait(), window)
        except TimeoutError:
            reason += f" (no successor within {window:g}s)"
        else:
            reason += " (handed over)"
        self.request_stop(reason)

    async def _guard_path(self) -> None:
        """Watch the path (see the module doc); never ends by itself."""
        cfg = self.config
        silent_since: float | None = None
        while True:
            await asyncio.sleep(cfg.path_check_interval)
            if self.stopping:
                return
            try:
                if self.state in ("serving", "terminating"):
                    if self.identity is not None and path_is(cfg.socket_path, self.identity):
                        silent_since = None
                        continue
                    found = await self.loop.run_in_executor(
                        None, probe_path, cfg.socket_path, cfg.probe_timeout
                    )
                    if self.stopping:
                        return
                    now = self.loop.time()
                    silent_since = (now if silent_since is None else silent_since) if found.silent else None
                    action = judge_loss(
                        found, now - (silent_since or now), cfg.foreign_grace, self.started_ns
                    )
                    if action is Loss.HAND_OVER:
                        await self._hand_over(found)
                    elif action is Loss.RETAKE:
                        log.warning(
                            "%s; it is an older version (no start time): taking the path back", found.detail
                        )
                        await self._publish(found)
                    elif action is Loss.RESTORE:
                        silent_since = None
                        await self._restore(found)
                else:  # drained: take the path again only if nobody serves it at all
                    found = await self.loop.run_in_executor(
                        None, probe_path, cfg.socket_path, cfg.probe_timeout
                    )
                    if found.state in (PathState.ABSENT, PathState.STALE) and not self.stopping:
                        log.warning("%s; nobody serves the path: serving it again", found.detail)
                        await self._publish(found)
                        self.successor = None
                        self.state = "serving"
                        self.handed_over = asyncio.Event()
            except Exception:  # the guard must outlive any one bad check
                log.exception("checking %s failed", cfg.socket_path)

    async def _hand_over(self, successor: ProbeResult) -> None:
        """A live sgx-quote-helper serves the path now: drain and stay up (see the module doc)."""
        assert self.handed_over is not None
        log.warning(
            "%s is served by our successor (instance %s, pid %d, %s): answering what we were sent, "
            "then staying up drained (not ready) until stopped",
            self.config.socket_path,
            successor.instance_id,
            successor.pid,
            successor.version,
        )
        self.successor = successor
        self.state = "handed-over"
        if self._server is not None:
            self._server.close()
            self._retired.append(self._server)
            self._server = None
        await self._drain_backlog()
        self.handed_over.set()

    async def _restore(self, found: ProbeResult) -> None:
        """Something that is not sgx-quote-helper (or nothing) is at the path: put ours back, alert."""
        path = self.config.socket_path
        who = None
        if found.state is PathState.FOREIGN:
            who = await self.loop.run_in_executor(None, listener_credentials, path, self.config.probe_timeout)
        try:
            await self._publish(found)
        except Exception as exc:
            log.error(
                "ALERT: %s was replaced (%s) and putting our socket back failed: %s", path, found.detail, exc
            )
            return
        log.error(
            "ALERT: %s was replaced by a program that is not sgx-quote-helper: %s%s; our socket is back "
            "at the path and we keep serving",
            path,
            found.detail,
            f"; it listens as {who}" if who is not None else "",
        )

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
        interval = min(cfg.idle_timeout / 4, cfg.read_timeout / 4, 1.0)
        while True:
            await asyncio.sleep(interval)
            now = self.loop.time()
            for conn in list(self.connections):
                conn.check_timeouts(now)

    def _inline_below(self) -> float:
        """Engine requests faster than this run on the loop (the proxy never runs any inline)."""
        return self.config.inline_engine_below

    # the admission state, under the names the server has always shown
    @property
    def in_flight(self) -> int:
        """Requests off the loop (engine thread or upstream), queued or running."""
        return self.admission.in_flight

    @in_flight.setter
    def in_flight(self, value: int) -> None:
        self.admission.in_flight = value

    @property
    def slow_in_flight(self) -> int:
        """In-flight engine requests not known to be fast."""
        return self.admission.slow_in_flight

    @slow_in_flight.setter
    def slow_in_flight(self, value: int) -> None:
        self.admission.slow_in_flight = value

    def known_fast(self, request: m.Request) -> bool:
        """Requests of this kind have recently cost less than ``inline_engine_below``."""
        return self.admission.known_fast(type(request))

    def inline_ok(self, request: m.Request) -> bool:
        """Run this engine request on the loop? When it is known to be fast and no slow (or not yet
        measured) request is in the engine thread, so the engine lock is held only briefly."""
        return self.admission.slow_in_flight == 0 and self.admission.known_fast(type(request))

    def record_cost(self, request: m.Request, seconds: float) -> None:
        """Update the moving average of engine time for this kind of request."""
        self.admission.record_cost(type(request), seconds)

    def connection_gone(self) -> None:
        """A connection closed or a request came back: at shutdown, are we done?"""
        if (
            self.stopping
            and self._idle is not None
            and self.admission.in_flight == 0
            and not self.connections
        ):
            self._idle.set()

    async def _shutdown(self) -> None:
        assert self._idle is not None
        cfg = self.config
        self.stopping = True
        for srv in (self._server, self._private_server, *self._retired):
            if srv is not None:
                srv.close()  # stop accepting
        if (
            self._unlink_on_stop
            and self.identity is not None
            and unlink_if_ours(cfg.socket_path, self.identity)
        ):
            log.info("removed %s", cfg.socket_path)
        await self._drain_backlog()
        for conn in list(self.connections):
            conn.check_timeouts(self.loop.time())
        self.connection_gone()
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
        for task in (self._sweeper, self._guard, self._terminator):
            if task is not None:
                task.cancel()
        for srv in (self._server, self._private_server, *self._retired):
            if srv is not None:
                await srv.wait_closed()
        if self.config.private_dir is not None:
            with contextlib.suppress(OSError):
                private_socket(self.config.private_dir).unlink()
        if self._own_executor:
            self.executor.shutdown(wait=True)
        if self.metrics_server is not None:
            self.metrics_server.close()
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


__all__ = ["AesmServer", "ServerStats"]
