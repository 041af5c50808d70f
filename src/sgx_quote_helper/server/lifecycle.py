"""The lifecycle both quote services share (AESM ``serve`` and QGS ``qgs serve``): the socket path
published and taken over without a gap, the handover, the impostor watch, the private socket the
probes use, limits at the door, the metrics endpoint, the sweep of deadlines, graceful shutdown.

:class:`PathServer` is the base of :class:`~.unix.AesmServer` (and the upstream proxy) and of
:class:`~.qgs.QgsServer`; what differs is the protocol: the connection class
(:meth:`PathServer.new_connection`), how the path is asked who serves it (:attr:`PathServer.probe`:
``socketpath.probe_path`` for AESM, ``probe_qgs_path`` for QGS), the private socket's name, and the
log lines. One instance serves one shared socket path:

- ``start()`` publishes it (``socketpath``: stale replaced, a live older sgx-quote-helper taken over,
  a newer one left alone (``standby``), another program refused unless ``replace``) and, with a
  private directory, the pod-private socket the probes use (server/instance.py);
- a periodic sweep calls every connection's ``check_timeouts(now)``; a guard task checks that the
  path still names our socket and acts on a loss (socketpath.judge_loss): a successor gets the path
  (``handed-over``: stop accepting there, answer the backlog and what is in flight, stay up drained
  until stopped); anything else gets our socket put back and an ALERT naming who listens there;
- ``terminate()`` (SIGTERM): while we serve the path, keep serving up to ``handover_window`` seconds
  for a successor (``terminating``), then stop. ``request_stop()`` then ``serve_until_stopped()``:
  stop accepting, unlink the path only if it is still ours, accept and answer what is queued in
  the backlog, finish requests in flight, close.

States (``state``, reported by our probe): ``serving``, ``handed-over``, ``terminating``, ``standby``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any, Protocol

from .admission import Admission
from .gate import Gate
from .instance import PRIVATE_SOCKET, private_socket
from .limits import PeerPolicy, RefusalLog
from .listener import Listener
from .metrics import MetricsServer, ServerMetrics, start_metrics_server
from .socketpath import (
    Loss,
    NewerOwner,
    PathState,
    Prober,
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


class PathSettings(Protocol):
    """What :class:`PathServer` reads of its configuration (``ServerConfig``, ``QgsConfig``)."""

    @property
    def socket_path(self) -> Path | None: ...
    @property
    def socket_mode(self) -> int: ...
    @property
    def socket_group(self) -> int | None: ...
    @property
    def backlog(self) -> int: ...
    @property
    def replace(self) -> bool: ...
    @property
    def probe_timeout(self) -> float: ...
    @property
    def path_check_interval(self) -> float: ...
    @property
    def foreign_grace(self) -> float: ...
    @property
    def handover_window(self) -> float: ...
    @property
    def shutdown_grace(self) -> float: ...
    @property
    def private_dir(self) -> Path | None: ...
    @property
    def metrics_port(self) -> int | None: ...
    @property
    def metrics_host(self) -> str: ...
    @property
    def max_connections(self) -> int: ...
    @property
    def max_connections_per_uid(self) -> int: ...
    @property
    def allow_uids(self) -> frozenset[int]: ...
    @property
    def allow_gids(self) -> frozenset[int]: ...
    @property
    def rate_limit(self) -> float: ...
    @property
    def rate_burst(self) -> int: ...
    @property
    def max_in_flight_per_peer(self) -> int: ...
    @property
    def limit_by_pid(self) -> bool: ...


def peer_policy(cfg: PathSettings) -> PeerPolicy:
    """The allow-lists and per-peer limits of ``cfg``."""
    return PeerPolicy(
        allow_uids=cfg.allow_uids,
        allow_gids=cfg.allow_gids,
        rate=cfg.rate_limit,
        burst=cfg.rate_burst or max(1, int(cfg.rate_limit)),
        max_in_flight_per_peer=cfg.max_in_flight_per_peer,
        by_pid=cfg.limit_by_pid,
    )


class PathServer:
    """The shared lifecycle (see the module doc). Subclasses set ``admission`` in their
    ``__init__`` and implement :meth:`new_connection`; they may override the hooks below.

    Args:
        config: the path, limits and windows (:class:`PathSettings`).
        metrics: this service's counters (exported on ``metrics_port`` when set).
    """

    #: how the path is asked who serves it
    probe: Prober = staticmethod(probe_path)
    #: the private socket's name in ``private_dir``
    private_name: str = PRIVATE_SOCKET
    #: for task names and log lines
    protocol: str = "AESM"
    #: the lifecycle's log lines (each service its own logger)
    log: logging.Logger = logging.getLogger(__name__.rsplit(".", 1)[0] + ".unix")
    admission: Admission

    def __init__(self, config: Any, metrics: ServerMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.metrics.gauge("in_flight", "Engine requests queued or running", lambda: self.admission.in_flight)
        self.metrics.gauge("open_connections", "Client connections open", lambda: len(self.connections))
        self.policy = peer_policy(config)
        self.restrict_peers = self.policy.restricts_peers  # plain bools: read on every connection/request
        self.limit_peers = self.policy.limits_peers
        self.metrics_server: MetricsServer | None = None
        self.refusals = RefusalLog(logging.getLogger(__name__.rsplit(".", 1)[0] + ".access"))
        self.gate = Gate(
            self.policy, config.max_connections, config.max_connections_per_uid, self.metrics, self.refusals
        )
        self.per_uid = self.gate.per_uid  # open connections per peer uid
        self.connections: set[Any] = set()
        self.stopping = False
        self.identity: SocketIdentity | None = None
        self.previous: ProbeResult | None = None
        self.stop_reason = ""
        #: another service of this process exported on our metrics endpoint (``serve --qgs-socket``)
        self.metrics_also: tuple[ServerMetrics, ...] = ()
        #: listeners beside the shared path (QGS: vsock, further paths), closed at stop
        self.extra_servers: list[asyncio.AbstractServer] = []
        self._server: Listener | None = None
        self._private_server: asyncio.AbstractServer | None = None
        self._retired: list[Listener] = []  # listeners an impostor cut off the path
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

    # -- hooks
    def new_connection(self) -> asyncio.Protocol:
        """A protocol instance for one accepted connection (the shared path, the private socket,
        the backlog drained at stop)."""
        raise NotImplementedError

    def new_private_connection(self) -> asyncio.Protocol:
        """A protocol instance for the private socket (default: :meth:`new_connection`)."""
        return self.new_connection()

    @property
    def instance_id(self) -> str:
        return ""

    @property
    def started_ns(self) -> int:
        return 0

    def state_changed(self, value: str) -> None:
        """Tell whoever answers our probe (the service) the new state."""

    def sweep_interval(self) -> float:
        """Seconds between two sweeps of the connections' deadlines."""
        raise NotImplementedError

    def release(self) -> None:
        """At the end of shutdown: release what the subclass holds (its executor...)."""

    def summary(self) -> str:
        """The counters for the "stopped" line."""
        return ""

    # -- lifecycle
    async def start(self) -> None:
        """Publish and serve (the subclass: :meth:`start_path` and its own listeners)."""
        raise NotImplementedError

    async def start_path(self) -> None:
        """Publish the shared path (standby under a newer owner), the private socket, the sweep, the
        guard and the metrics endpoint.

        Raises:
            ConfigError: the path is served by another program (and not ``replace``), or unusable.
        """
        self.loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        self._idle = asyncio.Event()
        self.handed_over = asyncio.Event()
        cfg = self.config
        if cfg.socket_path is not None:
            try:
                await self._publish(None)
            except NewerOwner as exc:
                if cfg.private_dir is None:
                    raise
                self.state = "standby"
                self.successor = exc.owner
                self.log.warning("%s; standing by, drained and not ready, until stopped", exc)
        if cfg.private_dir is not None:
            path = private_socket(cfg.private_dir, self.private_name)
            psock, _ = await self.loop.run_in_executor(None, lambda: bind_private(path, backlog=64))
            self._private_server = await self.loop.create_unix_server(
                self.new_private_connection, sock=psock, backlog=64
            )
            self.log.info("private socket for this pod's probes: %s", path)
        name = self.protocol.lower()
        self._sweeper = asyncio.create_task(self._sweep(), name=f"{name}-sweep")
        if cfg.socket_path is not None:
            self._guard = asyncio.create_task(self._guard_path(), name=f"{name}-path-guard")
        if cfg.metrics_port is not None:
            try:
                self.metrics_server = start_metrics_server(
                    self.metrics, cfg.metrics_host, cfg.metrics_port, self.metrics_also
                )
            except OSError as exc:
                self.log.error(
                    "metrics endpoint %s:%d: %s (serving without it)", cfg.metrics_host, cfg.metrics_port, exc
                )
            else:
                self.log.info("metrics on http://%s:%d/metrics", cfg.metrics_host, self.metrics_server.port)

    @property
    def state(self) -> str:
        """``serving``, ``handed-over``, ``terminating`` or ``standby`` (see the module doc)."""
        return self._state

    @state.setter
    def state(self, value: str) -> None:
        self._state = value
        self.state_changed(value)

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
                probe=self.probe,
            ),
        )
        if self._server is not None:
            self._retired.append(self._server)
        self.identity, self.previous = identity, previous
        self._server = await Listener.start(self.loop, self.new_connection, sock, backlog=cfg.backlog)

    def terminate(self, reason: str) -> None:
        """SIGTERM: stop now when a successor already has the path; else keep serving it up to
        ``handover_window`` seconds for one to take it over (socketpath), then stop."""
        window = self.config.handover_window
        if self.state in ("handed-over", "standby") or window <= 0 or self._terminator is not None:
            self.request_stop(reason)
            return
        self.state = "terminating"
        self.log.info(
            "%s: serving %s for up to %gs more for a successor", reason, self.config.socket_path, window
        )
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
        assert cfg.socket_path is not None
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
                        None, self.probe, cfg.socket_path, cfg.probe_timeout
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
                        self.log.warning(
                            "%s; it is an older version (no start time): taking the path back", found.detail
                        )
                        await self._publish(found)
                    elif action is Loss.RESTORE:
                        silent_since = None
                        await self._restore(found)
                else:  # drained: take the path again only if nobody serves it at all
                    found = await self.loop.run_in_executor(
                        None, self.probe, cfg.socket_path, cfg.probe_timeout
                    )
                    if found.state in (PathState.ABSENT, PathState.STALE) and not self.stopping:
                        self.log.warning("%s; nobody serves the path: serving it again", found.detail)
                        await self._publish(found)
                        self.successor = None
                        self.state = "serving"
                        self.handed_over = asyncio.Event()
            except Exception:  # the guard must outlive any one bad check
                self.log.exception("checking %s failed", cfg.socket_path)

    async def _hand_over(self, successor: ProbeResult) -> None:
        """A live sgx-quote-helper serves the path now: drain and stay up (see the module doc)."""
        assert self.handed_over is not None
        self.log.warning(
            "%s is served by our successor (instance %s, pid %d, %s): answering what we were sent, "
            "then staying up drained (not ready) until stopped",
            self.config.socket_path,
            successor.instance_id,
            successor.pid,
            successor.version,
        )
        self.successor = successor
        self.state = "handed-over"
        listener, self._server = self._server, None
        if listener is not None:
            listener.close(keep_backlog=True)
            self._retired.append(listener)
            await listener.drain_rest()
        self.handed_over.set()

    async def _restore(self, found: ProbeResult) -> None:
        """Something that is not sgx-quote-helper (or nothing) is at the path: put ours back, alert."""
        path = self.config.socket_path
        assert path is not None
        who = None
        if found.state is PathState.FOREIGN:
            who = await self.loop.run_in_executor(None, listener_credentials, path, self.config.probe_timeout)
        try:
            await self._publish(found)
        except Exception as exc:
            self.log.error(
                "ALERT: %s was replaced (%s) and putting our socket back failed: %s", path, found.detail, exc
            )
            return
        self.log.error(
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
        interval = self.sweep_interval()
        while True:
            await asyncio.sleep(interval)
            self.refresh()
            now = self.loop.time()
            for conn in list(self.connections):
                conn.check_timeouts(now)

    def refresh(self) -> None:
        """Each sweep: re-read what the request path caches (the subclass: its log level)."""

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
        current = self._server
        if current is not None:
            current.close(keep_backlog=True)  # stop accepting; what queued is answered below
        for srv in (self._private_server, *self._retired, *self.extra_servers):
            if srv is not None:
                srv.close()  # stop accepting
        if (
            self._unlink_on_stop
            and self.identity is not None
            and cfg.socket_path is not None
            and unlink_if_ours(cfg.socket_path, self.identity)
        ):
            self.log.info("removed %s", cfg.socket_path)
        if current is not None:
            await current.drain_rest()
        for conn in list(self.connections):
            conn.check_timeouts(self.loop.time())
        self.connection_gone()
        try:
            await asyncio.wait_for(self._idle.wait(), cfg.shutdown_grace)
        except TimeoutError:
            self.log.warning(
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
        for srv in (self._server, self._private_server, *self._retired, *self.extra_servers):
            if srv is not None:
                await srv.wait_closed()
        if self.config.private_dir is not None:
            with contextlib.suppress(OSError):
                private_socket(self.config.private_dir, self.private_name).unlink()
        self.release()
        if self.metrics_server is not None:
            self.metrics_server.close()
        self.log.info("stopped (%s): %s", self.stop_reason, self.summary())


__all__ = ["PathServer", "PathSettings", "peer_policy"]
