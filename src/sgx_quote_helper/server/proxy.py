"""The upstream proxy: serve the AESM socket by forwarding every frame to another AESM.

``serve --engine proxy --upstream-socket PATH`` puts this service in front of another AESM (Intel's
aesmd on the host, or another sgx-quote-helper) and adds what our server adds: the socket takeover
and graceful stop, frame-size, in-flight (BUSY) and timeout limits, per-client logging and the
server's counters. Forwarding is **byte-transparent**: each request body goes upstream exactly as
received (request types we do not parse included) on a fresh upstream connection, as Intel's client
does, and the upstream's response body comes back exactly as sent.

When the upstream cannot answer (no socket, connection refused, reset, timeout, an oversized or
truncated reply), the client gets a response **of its request's field number** with errorCode
SERVICE_UNAVAILABLE (30), which Intel's client maps to SGX_ERROR_SERVICE_UNAVAILABLE (0x4001)
(``shared/specs/aesm-protocol.md`` §5). InitQuoteEx error replies carry ``pub_key_id_size`` and
GetQuoteEx ones echo ``qe_report_info``, as our service's do. A request whose field number cannot
be known (not protobuf, empty, several fields) gets no reply: the connection is closed. When the
upstream closes without a single reply byte (aesmd's answer to requests it does not serve), the
client's connection is closed too. The one request answered locally is our own HelperProbe
(field 1000), which asks who serves *this* socket.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..abi.codes import AesmStatus
from ..client.transport import receive_async
from ..errors import ConfigError, RemoteProtocolError, UpstreamFailure
from ..service import IMPLEMENTATION
from ..wire import messages as m
from ..wire.connection import PEER_CLOSED, ClientConnection, ProtocolViolation
from .admission import Action
from .config import ServerConfig
from .connection import ConnectionBase
from .unix import AesmServer

if TYPE_CHECKING:
    from concurrent.futures import Executor

log = logging.getLogger(__name__)

#: the status Intel's client maps to SGX_ERROR_SERVICE_UNAVAILABLE (17, 30, 46 and 48 all do)
UPSTREAM_DOWN = AesmStatus.SERVICE_UNAVAILABLE
#: upstream replies larger than this are refused (a quote is a few KB)
DEFAULT_MAX_RESPONSE = 4 << 20
#: seconds for one upstream exchange (connect, send, whole reply); QE3 can take a while at first
DEFAULT_UPSTREAM_TIMEOUT = 60.0


@dataclass(slots=True)
class ProxyStats:
    """Upstream counters (beside the server's :class:`~sgx_quote_helper.server.unix.ServerStats`)."""

    forwarded: int = 0
    upstream_failures: int = 0
    upstream_closed: int = 0
    last_failure: str = field(default="")


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where and how to forward: the upstream socket path, a timeout and a reply size cap."""

    socket_path: Path
    timeout: float = DEFAULT_UPSTREAM_TIMEOUT
    max_response: int = DEFAULT_MAX_RESPONSE

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ConfigError(f"upstream timeout must be positive, got {self.timeout}")
        if self.max_response < 1:
            raise ConfigError(f"upstream max response must be positive, got {self.max_response}")

    async def exchange(self, body: bytes) -> bytes | None:
        """Send one request body, return the reply body; ``None`` if upstream closed unanswered.

        Raises:
            UpstreamFailure: connect/send failed, timeout, or a reply that is truncated or too big.
        """
        try:
            return await asyncio.wait_for(self._exchange(body), self.timeout)
        except TimeoutError:
            raise UpstreamFailure(f"no reply from {self.socket_path} within {self.timeout:g}s") from None

    async def _exchange(self, body: bytes) -> bytes | None:
        # raw non-blocking socket calls: no transport/stream objects per upstream connection
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            try:
                await loop.sock_connect(sock, str(self.socket_path))
            except OSError as exc:
                raise UpstreamFailure(
                    f"cannot connect to {self.socket_path}: {exc.strerror or exc}"
                ) from None
            conn = ClientConnection(max_frame_size=self.max_response)
            try:
                await loop.sock_sendall(sock, conn.send_body(body))
                ev = await receive_async(conn, lambda n: loop.sock_recv(sock, n), raw=True)
            except OSError as exc:
                raise UpstreamFailure(f"talking to {self.socket_path} failed: {exc}") from None
            if ev is PEER_CLOSED:
                return None  # closed without a reply byte: pass the close on
            if isinstance(ev, ProtocolViolation):
                raise UpstreamFailure(f"{self.socket_path}: {ev.reason}")
            assert isinstance(ev, bytes)
            return ev
        finally:
            sock.close()


def error_reply(body: bytes, status: AesmStatus) -> bytes | None:
    """A response body of the request's field number carrying ``status``; ``None`` if unknowable.

    Known request types get the reply our service would send (``TypedRequest.failure``); a request
    type we do not know gets ``{field: {errorCode: status}}`` (every AESM response has
    ``errorCode`` as its field 1).
    """
    try:
        response = m.decode_request(body).failure(int(status))
    except RemoteProtocolError:
        return None
    return m.encode_response(response) if response is not None else None


class ProxyConnection(ConnectionBase):
    """A client connection whose requests are forwarded upstream, byte for byte, instead of served
    here (the same admission as the daemon's: every request but our probe counts as engine work)."""

    __slots__ = ()
    _server: ProxyServer

    def pull(self) -> object:
        return self._core.take_frame()

    def serve(self, item: Any) -> bool:
        body = cast(bytes, item)
        srv = self._server
        t0 = time.perf_counter()
        srv.stats.requests += 1
        try:
            request: m.Request | None = m.decode_request(body)
        except RemoteProtocolError:
            request = None  # forwarded as it is: the upstream decides what it means
        if type(request) is m.HelperProbeRequest:  # who serves *this* socket: answered here
            assert request is not None
            self.write_reply(self._core.send_body(srv.probe_reply, srv.loop.time()))
            self.answered(request, m.decode_response(srv.probe_reply), t0)
            return True
        d = self.admit(request if request is not None else m.EmptyRequest(), engine=True, exempt=False)
        if d.action is Action.BUSY:
            busy = error_reply(body, AesmStatus.BUSY)
            if busy is None:
                self.client_error("request envelope not understood; closing without a reply")
                return False
            self.write_reply(self._core.send_body(busy, srv.loop.time()))
            return True
        self._decision = d
        srv.admission.started(d)
        self._processing = True
        task = srv.loop.create_task(srv.forward(body))
        task.add_done_callback(functools.partial(self._forward_done, request=request, t0=t0))
        return False

    def _forward_done(self, task: asyncio.Task[bytes | None], request: m.Request | None, t0: float) -> None:
        srv = self._server
        if self._decision is not None:
            srv.admission.finished(self._decision)
        self._processing = False
        reply = None if task.cancelled() else task.result()
        alive = self.transport is not None and not self.transport.is_closing()
        if alive:
            if reply is None:
                self._core.unanswered()
                self.close()
            else:
                self.write_reply(self._core.send_body(reply, srv.loop.time()))
        self._account(request, reply, t0)
        if alive and reply is not None:
            self._next()
        srv.connection_gone()

    def _account(self, request: m.Request | None, reply: bytes | None, t0: float) -> None:
        """Metrics and the debug line of one forwarded request (the reply decoded here: ~5 µs,
        small next to the upstream exchange); frames we cannot decode only release the peer's slot."""
        try:
            if request is None:
                raise RemoteProtocolError("undecodable request")
            response = m.decode_response(reply) if reply is not None else None
        except RemoteProtocolError:
            self._server.admission.answered(self._decision)
            self._decision = None
            return
        self.answered(request, response, t0)


class ProxyServer(AesmServer):
    """An :class:`AesmServer` whose connections forward every request to ``upstream``."""

    connection_class = ProxyConnection

    def __init__(
        self,
        upstream: Upstream,
        config: ServerConfig,
        executor: Executor | None = None,
        *,
        version: str = "",
        instance_id: str = "",
        pid: int = 0,
    ) -> None:
        if upstream.socket_path.resolve() == config.socket_path.resolve():
            raise ConfigError(f"the upstream socket {upstream.socket_path} is the socket we serve")
        super().__init__(None, config, executor)
        self.upstream = upstream
        self.proxy_stats = ProxyStats()
        self.probe_reply = m.encode_response(
            m.HelperProbeResponse(AesmStatus.SUCCESS, IMPLEMENTATION, version, pid, instance_id)
        )

    def describe(self) -> str:
        return f"proxy to {self.upstream.socket_path}"

    def _inline_below(self) -> float:
        return 0.0  # every request but our probe waits on the upstream: never on the loop

    async def forward(self, body: bytes) -> bytes | None:
        """One request upstream; the reply body, an UPSTREAM_DOWN reply, or ``None`` (close).

        Our HelperProbe never comes here: it asks who serves *this* socket (the takeover logic of a
        successor depends on it), so :class:`ProxyConnection` answers it with the proxy's identity.
        """
        try:
            reply = await self.upstream.exchange(body)
        except UpstreamFailure as exc:
            self.proxy_stats.upstream_failures += 1
            if str(exc) != self.proxy_stats.last_failure:  # log a failing upstream once per reason
                log.warning("upstream: %s; answering SERVICE_UNAVAILABLE (30)", exc)
            self.proxy_stats.last_failure = str(exc)
            return error_reply(body, UPSTREAM_DOWN)
        self.proxy_stats.last_failure = ""
        if reply is None:
            self.proxy_stats.upstream_closed += 1
            return None
        self.proxy_stats.forwarded += 1
        return reply


__all__ = [
    "UPSTREAM_DOWN",
    "ProxyConnection",
    "ProxyServer",
    "ProxyStats",
    "Upstream",
    "UpstreamFailure",
    "error_reply",
]
