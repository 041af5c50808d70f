"""The blocking AESM client, :class:`QuoteClient` (see the package doc)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from typing import TypeVar, cast

from ..abi.keyid import AttKeyId, QeReportInfo
from ..abi.report import Report
from ..errors import BadResponseError, TransportError
from ..wire import messages as m
from ..wire.connection import ClientConnection
from .mode import DEFAULT_SOCKET_PATH
from .replies import (
    _RETRYABLE,
    DEFAULT_RETRY_DEADLINE,
    DEFAULT_TIMEOUT,
    MAX_RESPONSE_FRAME,
    InitQuoteExResult,
    QuoteExResult,
    _check_init,
    _check_key_ids,
    _check_num,
    _check_quote,
    _check_selected,
    _ok,
    _select_request,
    _Settings,
)
from .transport import Attempts, receive

R = TypeVar("R")


class QuoteClient(_Settings):
    """Blocking client (see the module doc). Use as a context manager or call :meth:`close`.

    Args:
        socket_path: the daemon's socket (default /var/run/aesmd/aesm.socket).
        timeout: seconds for one whole call (connect, send, receive); also sent on the wire in ms.
        retry_deadline: seconds during which connection refused / absent socket is retried, and a
            request whose connection was lost before any reply byte is sent again (up to 3 tries).
        reuse_connection: keep the connection for the next call (not with Intel's aesmd). A client
            that keeps its connection must not be shared between threads; one per thread.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str] = DEFAULT_SOCKET_PATH,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry_deadline: float = DEFAULT_RETRY_DEADLINE,
        reuse_connection: bool = False,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
    ) -> None:
        super().__init__(socket_path, timeout, retry_deadline, reuse_connection, backoff, max_backoff)
        self._sock: socket.socket | None = None

    def __enter__(self) -> QuoteClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close a kept connection (idempotent)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # -- transport
    def _connect(self, deadline: float) -> socket.socket:
        start = time.monotonic()
        delay = self.backoff
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                sock.connect(self.socket_path)
                return sock
            except _RETRYABLE as exc:
                sock.close()
                left = start + self.retry_deadline - time.monotonic()
                if left <= 0 or time.monotonic() + delay > deadline:
                    raise TransportError(
                        f"cannot connect to {self.socket_path}: {exc.strerror or exc}"
                    ) from exc
                time.sleep(min(delay, left))
                delay = min(delay * 2, self.max_backoff)
            except TimeoutError as exc:
                sock.close()
                raise TransportError(f"connecting to {self.socket_path} timed out") from exc
            except OSError as exc:
                sock.close()
                raise TransportError(f"cannot connect to {self.socket_path}: {exc}") from exc

    def transact(self, request: m.Request) -> m.Response:
        """Send one request, return its response (of the request's type; no errorCode check)."""
        body = m.encode_request(request)
        expect = getattr(type(request), "Response", None)
        start = time.monotonic()
        deadline = start + self.timeout
        plan = Attempts(
            self.socket_path, self.retry_deadline, deadline, self._sock is not None, start, self.backoff
        )
        first = True
        while True:
            if not first:
                time.sleep(plan.pause(time.monotonic()))
            first = False
            sock = self._sock if self._sock is not None else self._connect(deadline)
            self._sock = None
            plan.begin(time.monotonic())
            conn = ClientConnection(max_frame_size=MAX_RESPONSE_FRAME)

            def recv(n: int, sock: socket.socket = sock) -> bytes:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                return sock.recv(n)

            try:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock.sendall(conn.send_body(body, 0.0, expect))
                ev = receive(conn, recv)
            except TimeoutError as exc:
                sock.close()
                raise TransportError(f"no answer from {self.socket_path} within {self.timeout:g}s") from exc
            except (BrokenPipeError, ConnectionResetError) as exc:
                sock.close()
                plan.lost(exc)
                continue
            except OSError as exc:
                sock.close()
                raise TransportError(f"talking to {self.socket_path} failed: {exc}") from exc
            except BaseException:
                sock.close()
                raise
            try:
                response = plan.settle(ev)
            except BaseException:
                sock.close()
                raise
            if response is None:
                sock.close()
                continue
            if self.reuse_connection:
                self._sock = sock
            else:
                sock.close()
            return response  # type: ignore[return-value]

    def call(self, request: m.TypedRequest[R]) -> R:
        """Send a typed request; its own response type back, or AesmError for a non-zero errorCode."""
        return _ok(cast(R, self.transact(request)), request)  # type: ignore[arg-type]

    # -- the quote-ex calls
    def get_supported_att_key_id_num(self) -> int:
        """How many attestation key ids the daemon supports."""
        req = m.GetSupportedAttKeyIDNumRequest(self.tms)
        return _check_num(self.call(req))

    def get_supported_att_key_ids(self, num: int | None = None) -> list[AttKeyId]:
        """The supported key ids (asks for the count first unless ``num`` is given)."""
        n = self.get_supported_att_key_id_num() if num is None else num
        req = m.GetSupportedAttKeyIDsRequest(n * AttKeyId.SIZE, self.tms)
        return _check_key_ids(self.call(req), n * AttKeyId.SIZE)

    def select_att_key_id(self, key_ids: Sequence[AttKeyId] | None = None) -> AttKeyId:
        """The daemon's choice among ``key_ids`` (or among all it supports)."""
        req = _select_request(key_ids, self.tms)
        return _check_selected(self.call(req))

    def init_quote_ex(
        self, key_id: AttKeyId | None = None, want_pub_key_id: bool = True
    ) -> InitQuoteExResult:
        """Initialise the attestation key; returns the QE target info (and ECDSA_ID if wanted)."""
        raw = (key_id or self.key_id).to_bytes()
        req = m.InitQuoteExRequest(raw, want_pub_key_id, 32 if want_pub_key_id else None, self.tms)
        return _check_init(self.call(req), want_pub_key_id)

    def get_quote_size_ex(self, key_id: AttKeyId | None = None) -> int:
        """The size of the quote GetQuoteEx will produce."""
        req = m.GetQuoteSizeExRequest((key_id or self.key_id).to_bytes(), self.tms)
        resp = self.call(req)
        if resp.quote_size is None:
            raise BadResponseError("GetQuoteSizeEx: quote_size missing")
        return resp.quote_size

    def get_quote_ex(
        self,
        report: Report | bytes,
        key_id: AttKeyId | None = None,
        buf_size: int | None = None,
        qe_report_info: QeReportInfo | None = None,
    ) -> QuoteExResult:
        """Quote an app REPORT made for the QE's target info (asks the size first if not given)."""
        size = self.get_quote_size_ex(key_id) if buf_size is None else buf_size
        raw = report.to_bytes() if isinstance(report, Report) else report
        info = qe_report_info.to_bytes() if qe_report_info is not None else None
        req = m.GetQuoteExRequest(raw, (key_id or self.key_id).to_bytes(), info, size, self.tms)
        return _check_quote(self.call(req), size, info is not None)

    def probe(self) -> m.HelperProbeResponse:
        """Ask who serves the socket (sgx-quote-helper answers; Intel's aesmd closes)."""
        req = m.HelperProbeRequest()
        return self.call(req)


__all__ = ["QuoteClient"]
