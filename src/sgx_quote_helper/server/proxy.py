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
from typing import TYPE_CHECKING

from ..abi.codes import AesmStatus
from ..errors import ConfigError, RemoteProtocolError
from ..service import IMPLEMENTATION
from ..wire import messages as m
from ..wire.framing import HEADER, encode_frame
from .config import ServerConfig
from .unix import AesmServer, _Connection

if TYPE_CHECKING:
    from concurrent.futures import Executor

log = logging.getLogger(__name__)

#: the status Intel's client maps to SGX_ERROR_SERVICE_UNAVAILABLE (17, 30, 46 and 48 all do)
UPSTREAM_DOWN = AesmStatus.SERVICE_UNAVAILABLE
#: upstream replies larger than this are refused (a quote is a few KB)
DEFAULT_MAX_RESPONSE = 4 << 20
#: seconds for one upstream exchange (connect, send, whole reply); QE3 can take a while at first
DEFAULT_UPSTREAM_TIMEOUT = 60.0


class UpstreamFailure(Exception):
    """Internal: the upstream did not produce a usable reply (answered with UPSTREAM_DOWN)."""


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
            try:
                await loop.sock_sendall(sock, encode_frame(body))
                buf = bytearray()
                need = HEADER.size
                while len(buf) < need:
                    chunk = await loop.sock_recv(sock, 65536)
                    if not chunk:
                        if not buf:
                            return None  # closed without a reply byte: pass the close on
                        raise UpstreamFailure(f"{self.socket_path} closed after {len(buf)} bytes of a reply")
                    buf += chunk
                    if need == HEADER.size and len(buf) >= HEADER.size:
                        (size,) = HEADER.unpack_from(buf)
                        if size > self.max_response:
                            raise UpstreamFailure(
                                f"{self.socket_path} announced a {size}-byte reply (limit {self.max_response})"
                            )
                        need += size
                return bytes(buf[HEADER.size : need])
            except OSError as exc:
                raise UpstreamFailure(f"talking to {self.socket_path} failed: {exc}") from None
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


_PROBE_REQUEST = m.encode_request(m.HelperProbeRequest())


def _is_probe(body: bytes) -> bool:
    # cheap pre-check on the envelope tag of field 1000, length-delimited: varint 0xC2 0x3E
    if not body.startswith(b"\xc2\x3e"):
        return False
    try:
        return isinstance(m.decode_request(body), m.HelperProbeRequest)
    except RemoteProtocolError:
        return False


class _ProxyConnection(_Connection):
    """A client connection whose requests are forwarded upstream instead of served here."""

    _server: ProxyServer

    def _next(self) -> None:
        srv = self._server
        while self._queue and not self._processing:
            if self.transport is None or self.transport.is_closing():
                return
            body = self._queue.popleft()
            t0 = time.perf_counter()
            srv.stats.requests += 1
            refusal = None
            if srv.limit_peers and not _is_probe(body):
                pid, uid, _ = self.peer()
                key = srv.policy.key(pid, uid)
                refusal = srv.policy.admit(key, srv.loop.time())
                if refusal is None:
                    self._peer_key = key
                else:
                    srv.refusals.refused(refusal, pid, uid, "answered BUSY (18)", srv.loop.time(), key)
            if refusal is None and srv.in_flight >= srv.config.max_in_flight:
                srv.stats.busy += 1
                refusal = "busy"
                pid, uid, _ = self.peer()
                srv.refusals.refused(
                    refusal, pid, uid, f"{srv.in_flight} requests in flight; answered BUSY (18)",
                    srv.loop.time(), srv.policy.key(pid, uid),
                )  # fmt: skip
            if refusal is not None:
                srv.metrics.refuse(refusal)
                if self._peer_key is not None:
                    srv.policy.release(self._peer_key)
                    self._peer_key = None
                busy = error_reply(body, AesmStatus.BUSY)
                if busy is None:
                    self._client_error("request envelope not understood; closing without a reply")
                    return
                self._write_body(busy)
                continue
            srv.in_flight += 1
            self._processing = True
            task = srv.loop.create_task(srv.forward(body))
            task.add_done_callback(functools.partial(self._forward_done, body=body, t0=t0))
            return
        super()._next()  # queue empty or busy: resume reading / close as the base does

    def _forward_done(self, task: asyncio.Task[bytes | None], body: bytes, t0: float) -> None:
        srv = self._server
        srv.in_flight -= 1
        self._processing = False
        reply = None if task.cancelled() else task.result()
        if self.transport is not None and not self.transport.is_closing():
            self.last_activity = srv.loop.time()
            if reply is None:
                self.transport.close()
            else:
                self._write_body(reply)
        self._account(body, reply, t0)
        if self.transport is not None and not self.transport.is_closing() and reply is not None:
            self._next()
        srv._connection_gone()

    def _account(self, body: bytes, reply: bytes | None, t0: float) -> None:
        """Metrics and the debug line of one forwarded request (decoded here: ~5 µs, small next to
        the upstream exchange); frames we cannot decode only release the peer's slot."""
        try:
            request = m.decode_request(body)
            response = m.decode_response(reply) if reply is not None else None
        except RemoteProtocolError:
            if self._peer_key is not None:
                self._server.policy.release(self._peer_key)
                self._peer_key = None
            return
        self._answered(request, response, t0)

    def _write_body(self, body: bytes) -> None:
        assert self.transport is not None
        self.transport.write(encode_frame(body))
        self.served += 1
        if self._server.stopping:
            self._closing = True


class ProxyServer(AesmServer):
    """An :class:`AesmServer` whose connections forward every request to ``upstream``."""

    connection_class = _ProxyConnection

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
        self._probe_reply = m.encode_response(
            m.HelperProbeResponse(AesmStatus.SUCCESS, IMPLEMENTATION, version, pid, instance_id)
        )

    def describe(self) -> str:
        return f"proxy to {self.upstream.socket_path}"

    async def forward(self, body: bytes) -> bytes | None:
        """One request upstream; the reply body, an UPSTREAM_DOWN reply, or ``None`` (close).

        The one request answered here is our HelperProbe: it asks who serves *this* socket (the
        takeover logic of a successor depends on it), so the proxy answers with its own identity.
        """
        if body == _PROBE_REQUEST or _is_probe(body):
            return self._probe_reply
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


__all__ = ["UPSTREAM_DOWN", "ProxyServer", "ProxyStats", "Upstream", "error_reply"]
