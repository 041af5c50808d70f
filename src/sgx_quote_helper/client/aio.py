"""The asyncio AESM client, :class:`AsyncQuoteClient` (see the package doc)."""

from __future__ import annotations

import asyncio
import contextlib
import os
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
from .transport import Attempts, receive_async

R = TypeVar("R")


class AsyncQuoteClient(_Settings):
    """The asyncio twin of :class:`QuoteClient` (same arguments, same errors, ``await`` the calls)."""

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
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def __aenter__(self) -> AsyncQuoteClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close a kept connection (idempotent)."""
        if self._conn is not None:
            _, writer = self._conn
            self._conn = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        delay = self.backoff
        while True:
            try:
                return await asyncio.open_unix_connection(self.socket_path, limit=MAX_RESPONSE_FRAME)
            except _RETRYABLE as exc:
                left = start + self.retry_deadline - loop.time()
                if left <= 0:
                    raise TransportError(
                        f"cannot connect to {self.socket_path}: {exc.strerror or exc}"
                    ) from exc
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, self.max_backoff)
            except OSError as exc:
                raise TransportError(f"cannot connect to {self.socket_path}: {exc}") from exc

    async def transact(self, request: m.Request) -> m.Response:
        """Send one request, return its response (of the request's type; no errorCode check)."""
        try:
            return await asyncio.wait_for(self._transact(request), self.timeout)
        except TimeoutError as exc:
            await self.close()
            raise TransportError(f"no answer from {self.socket_path} within {self.timeout:g}s") from exc

    async def _transact(self, request: m.Request) -> m.Response:
        body = m.encode_request(request)
        expect = getattr(type(request), "Response", None)
        start = time.monotonic()
        plan = Attempts(
            self.socket_path,
            self.retry_deadline,
            start + self.timeout,
            self._conn is not None,
            start,
            self.backoff,
        )
        first = True
        while True:
            if not first:
                await asyncio.sleep(plan.pause(time.monotonic()))
            first = False
            reader, writer = self._conn if self._conn is not None else await self._connect()
            self._conn = None
            plan.begin(time.monotonic())
            conn = ClientConnection(max_frame_size=MAX_RESPONSE_FRAME)
            try:
                writer.write(conn.send_body(body, 0.0, expect))
                await writer.drain()
                ev = await receive_async(conn, reader.read)
            except (BrokenPipeError, ConnectionResetError) as exc:
                writer.close()
                plan.lost(exc)
                continue
            except OSError as exc:
                writer.close()
                raise TransportError(f"talking to {self.socket_path} failed: {exc}") from exc
            except BaseException:
                writer.close()
                raise
            try:
                response = plan.settle(ev)
            except BaseException:
                writer.close()
                raise
            if response is None:
                writer.close()
                continue
            if self.reuse_connection:
                self._conn = (reader, writer)
            else:
                writer.close()
            return response  # type: ignore[return-value]

    async def call(self, request: m.TypedRequest[R]) -> R:
        """Send a typed request; its own response type back, or AesmError for a non-zero errorCode."""
        return _ok(cast(R, await self.transact(request)), request)  # type: ignore[arg-type]

    async def get_supported_att_key_id_num(self) -> int:
        """How many attestation key ids the daemon supports."""
        req = m.GetSupportedAttKeyIDNumRequest(self.tms)
        return _check_num(await self.call(req))

    async def get_supported_att_key_ids(self, num: int | None = None) -> list[AttKeyId]:
        """The supported key ids (asks for the count first unless ``num`` is given)."""
        n = await self.get_supported_att_key_id_num() if num is None else num
        req = m.GetSupportedAttKeyIDsRequest(n * AttKeyId.SIZE, self.tms)
        resp = await self.call(req)
        return _check_key_ids(resp, n * AttKeyId.SIZE)

    async def select_att_key_id(self, key_ids: Sequence[AttKeyId] | None = None) -> AttKeyId:
        """The daemon's choice among ``key_ids`` (or among all it supports)."""
        req = _select_request(key_ids, self.tms)
        return _check_selected(await self.call(req))

    async def init_quote_ex(
        self, key_id: AttKeyId | None = None, want_pub_key_id: bool = True
    ) -> InitQuoteExResult:
        """Initialise the attestation key; returns the QE target info (and ECDSA_ID if wanted)."""
        raw = (key_id or self.key_id).to_bytes()
        req = m.InitQuoteExRequest(raw, want_pub_key_id, 32 if want_pub_key_id else None, self.tms)
        return _check_init(await self.call(req), want_pub_key_id)

    async def get_quote_size_ex(self, key_id: AttKeyId | None = None) -> int:
        """The size of the quote GetQuoteEx will produce."""
        req = m.GetQuoteSizeExRequest((key_id or self.key_id).to_bytes(), self.tms)
        resp = await self.call(req)
        if resp.quote_size is None:
            raise BadResponseError("GetQuoteSizeEx: quote_size missing")
        return resp.quote_size

    async def get_quote_ex(
        self,
        report: Report | bytes,
        key_id: AttKeyId | None = None,
        buf_size: int | None = None,
        qe_report_info: QeReportInfo | None = None,
    ) -> QuoteExResult:
        """Quote an app REPORT made for the QE's target info (asks the size first if not given)."""
        size = await self.get_quote_size_ex(key_id) if buf_size is None else buf_size
        raw = report.to_bytes() if isinstance(report, Report) else report
        info = qe_report_info.to_bytes() if qe_report_info is not None else None
        req = m.GetQuoteExRequest(raw, (key_id or self.key_id).to_bytes(), info, size, self.tms)
        return _check_quote(await self.call(req), size, info is not None)

    async def probe(self) -> m.HelperProbeResponse:
        """Ask who serves the socket (sgx-quote-helper answers; Intel's aesmd closes)."""
        req = m.HelperProbeRequest()
        return await self.call(req)


__all__ = ["AsyncQuoteClient"]
