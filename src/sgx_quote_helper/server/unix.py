"""The asyncio Unix-socket server of the quote daemon (runs on uvloop when installed).

Connections are accepted by :class:`~.listener.Listener`: the loop's own server, which takes one per
turn of the loop (apps that connect once per call would run in lock step with it), plus a drain of
the backlog on the turns it accepts. Per connection (:class:`~.connection.AesmConnection`, an
``asyncio.Protocol``): frames are decoded as they arrive
(any chunking), each request goes to the :class:`~sgx_quote_helper.service.AesmService` (engine
requests in a one-thread executor: one quote at a time per engine; cheap ones inline), and the
reply (prefix and body) is written in one write. The connection then stays open for further
requests until the client closes it or ``idle_timeout`` passes. Past ``max_in_flight`` engine
requests, new ones are answered BUSY (18) at once. A broken client (oversized prefix, garbage
protobuf, unknown envelope, truncated frame, slow or idle) is logged once with its pid/uid
(SO_PEERCRED) and its connection closed; nobody else notices.

Lifecycle (:class:`AesmServer`, states in ``state``, reported by HelperProbe; the code is
:class:`~.lifecycle.PathServer`, shared with the QGS service): ``start()`` publishes
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

import logging
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

from ..service import AesmService
from ..wire import messages as m
from .admission import Admission
from .config import ServerConfig
from .connection import AesmConnection, ConnectionBase
from .connection import log as _request_log
from .lifecycle import PathServer
from .metrics import ServerMetrics

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ServerStats:
    """Counters since start (read them for metrics or tests)."""

    connections: int = 0
    requests: int = 0
    busy: int = 0
    client_errors: int = 0


class AesmServer(PathServer):
    """The quote daemon's socket server (see the module doc; the lifecycle is :mod:`.lifecycle`).

    Args:
        service: the request semantics (``None`` for the upstream proxy, ``server.proxy``, whose
            connections forward raw frames instead).
        config: socket path, limits, timeouts.
        executor: where engine requests run (default: a one-thread pool, created on start).
    """

    #: the per-connection protocol; the upstream proxy (server/proxy.py) plugs in its own
    connection_class: type[ConnectionBase] = AesmConnection
    log = log

    def __init__(
        self, service: AesmService | None, config: ServerConfig, executor: Executor | None = None
    ) -> None:
        self.service = service
        self.stats = ServerStats()
        super().__init__(config, ServerMetrics())
        self.config: ServerConfig = config
        inline_below = self._inline_below()
        never_blocks = service is not None and not getattr(service.engine, "blocking", True)
        self.admission = Admission(
            self.policy,
            config.max_in_flight,
            inline_below,
            config.max_reply_bytes,
            always_inline=never_blocks and inline_below > 0,
        )
        self.connections: set[ConnectionBase] = set()
        #: the connections' debug line per request is on (read once per sweep, not per request)
        self.log_requests = _request_log.isEnabledFor(logging.DEBUG)
        self._own_executor = executor is None
        self.executor: Executor = executor or ThreadPoolExecutor(1, thread_name_prefix="aesm-engine")

    def new_connection(self) -> ConnectionBase:
        return self.connection_class(self)

    async def start(self) -> None:
        """Publish the socket and start serving.

        Raises:
            ConfigError: the path is served by another program (and not ``replace``), or unusable.
        """
        self.refresh()
        await self.start_path()
        cfg = self.config
        log.info(
            "serving AESM protocol on %s (mode %o, %s, max in flight %d)",
            cfg.socket_path,
            cfg.socket_mode,
            self.describe(),
            cfg.max_in_flight,
        )

    def refresh(self) -> None:
        self.log_requests = _request_log.isEnabledFor(logging.DEBUG)

    def describe(self) -> str:
        """What answers the requests, for logs ("engine simulated", "proxy to ...")."""
        return f"engine {self.service.engine.name}" if self.service is not None else "no engine"

    @property
    def instance_id(self) -> str:
        return self.service.instance_id if self.service is not None else ""

    @property
    def started_ns(self) -> int:
        return self.service.started_ns if self.service is not None else 0

    def state_changed(self, value: str) -> None:
        if self.service is not None:
            self.service.state = value

    def sweep_interval(self) -> float:
        cfg = self.config
        return min(cfg.idle_timeout / 4, cfg.read_timeout / 4, 1.0)

    def release(self) -> None:
        if self._own_executor:
            self.executor.shutdown(wait=True)

    def summary(self) -> str:
        s = self.stats
        return f"{s.connections} connections, {s.requests} requests, {s.busy} busy, {s.client_errors} client errors"

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


__all__ = ["AesmServer", "ServerStats"]
