"""Python client of the AESM quote service: :class:`QuoteClient` (blocking), :class:`AsyncQuoteClient`.

Each call connects to the socket, sends one frame, reads one frame (as Intel's
``SocketTransporter::transact`` does); with ``reuse_connection=True`` the connection is kept for the
next call (our daemon allows it; aesmd does not). Errors are split three ways:

- :class:`~sgx_quote_helper.errors.TransportError`: connect/read/write failed or timed out, or the
  daemon closed without answering (Intel's client: SGX_ERROR_SERVICE_UNAVAILABLE / _TIMEOUT /
  _UNEXPECTED);
- :class:`~sgx_quote_helper.errors.AesmError`: the daemon answered a non-zero ``errorCode``
  (``.status`` is an :class:`~sgx_quote_helper.abi.codes.AesmStatus`, unknown codes kept);
- :class:`~sgx_quote_helper.errors.BadResponseError`: the answer is not a valid reply to the request.

Only "connection refused" and "no such socket" (the daemon restarting during a node update) are
retried, with exponential backoff, until ``retry_deadline`` seconds have passed; never a request
the daemon answered. :func:`out_of_process_mode` says which quoting mode an app is in and why,
using Intel's rule (``SGX_AESM_ADDR`` set to anything, even empty, means out-of-process).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .abi.codes import AesmStatus
from .abi.keyid import AttKeyId, AttKeyIdList, QeReportInfo
from .abi.report import Report, TargetInfo
from .errors import AesmError, BadResponseError, LocalProtocolError, RemoteProtocolError, TransportError
from .wire import messages as m
from .wire.framing import FrameDecoder, encode_frame

DEFAULT_SOCKET_PATH = Path("/var/run/aesmd/aesm.socket")
#: Intel's IPC_LATENCY: 15 s, also sent on the wire in milliseconds
DEFAULT_TIMEOUT = 15.0
DEFAULT_RETRY_DEADLINE = 5.0
#: the replies we accept: the largest is a quote, well under this
MAX_RESPONSE_FRAME = 4 << 20
AESM_ADDR_ENV = "SGX_AESM_ADDR"

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class ModeDecision:
    """Which quoting mode an app is in, and the reason in one sentence."""

    out_of_process: bool
    reason: str

    @property
    def name(self) -> str:
        return "out-of-process" if self.out_of_process else "in-process"


def out_of_process_mode(environ: Mapping[str, str] | None = None) -> ModeDecision:
    """Intel's rule (libsgx_dcap_ql, Open Enclave): ``SGX_AESM_ADDR`` set, any value, means out-of-process.

    The value is never used as an address: the socket path is fixed at /var/run/aesmd/aesm.socket.
    """
    env = os.environ if environ is None else environ
    if AESM_ADDR_ENV in env:
        value = env[AESM_ADDR_ENV]
        shown = repr(value) if value else "the empty string"
        return ModeDecision(
            True,
            f"{AESM_ADDR_ENV} is set (to {shown}; only its presence matters): quotes come from the "
            f"AESM service on {DEFAULT_SOCKET_PATH}",
        )
    return ModeDecision(
        False,
        f"{AESM_ADDR_ENV} is not set: libsgx_dcap_ql loads the quoting enclave inside the app "
        "(needs /dev/sgx_enclave and /dev/sgx_provision)",
    )


@dataclass(frozen=True, slots=True)
class InitQuoteExResult:
    """InitQuoteEx answer: the QE's target info and the 32-byte ECDSA_ID (pub_key_id)."""

    target_info: TargetInfo
    pub_key_id_size: int
    pub_key_id: bytes | None


@dataclass(frozen=True, slots=True)
class QuoteExResult:
    """GetQuoteEx answer. ``quote`` is exactly ``buf_size`` bytes (zero padded), as aesmd sends it."""

    quote: bytes
    qe_report_info: QeReportInfo | None

    def trimmed(self) -> bytes:
        """The quote without padding (v3 layout: 436 + signature_data_len bytes)."""
        return trim_quote(self.quote)


def trim_quote(quote: bytes) -> bytes:
    """Cut the zero padding after a v3 ECDSA quote (436 + signature_data_len); else unchanged."""
    if len(quote) >= 436 and int.from_bytes(quote[0:2], "little") == 3:
        end = 436 + int.from_bytes(quote[432:436], "little")
        if end <= len(quote):
            return quote[:end]
    return quote


# ------------------------------------------------------------------ request/response checks


def _timeout_ms(timeout: float) -> int:
    return max(0, min(int(timeout * 1000), 0xFFFFFFFF))


def _expect(response: m.Response, cls: type[R], request: m.Request) -> R:
    name = type(request).__name__.removesuffix("Request")
    if not isinstance(response, cls):
        raise BadResponseError(f"{name}: the daemon answered {type(response).__name__}, not {cls.__name__}")
    code = int(getattr(response, "error_code", 0))
    if code != 0:
        raise AesmError(AesmStatus(code), name)
    return response


def _check_key_ids(resp: m.GetSupportedAttKeyIDsResponse, buf_size: int) -> list[AttKeyId]:
    raw = resp.att_key_ids or b""
    if len(raw) != buf_size:
        raise BadResponseError(f"GetSupportedAttKeyIDs: {len(raw)} bytes of key ids, expected {buf_size}")
    return [AttKeyId.from_bytes(raw[i : i + AttKeyId.SIZE]) for i in range(0, len(raw), AttKeyId.SIZE)]


def _check_init(resp: m.InitQuoteExResponse, want_pub_key_id: bool) -> InitQuoteExResult:
    if resp.target_info is None or len(resp.target_info) != TargetInfo.SIZE:
        raise BadResponseError("InitQuoteEx: target_info missing or not 512 bytes")
    if resp.pub_key_id_size is None:
        raise BadResponseError("InitQuoteEx: pub_key_id_size missing")
    pub = resp.pub_key_id
    if want_pub_key_id and (pub is None or len(pub) != resp.pub_key_id_size or len(pub) != 32):
        raise BadResponseError("InitQuoteEx: pub_key_id missing or not pub_key_id_size (32) bytes")
    return InitQuoteExResult(TargetInfo.from_bytes(resp.target_info), resp.pub_key_id_size, pub)


def _check_quote(resp: m.GetQuoteExResponse, buf_size: int, sent_info: bool) -> QuoteExResult:
    if resp.quote is None or len(resp.quote) > buf_size:
        raise BadResponseError(f"GetQuoteEx: quote missing or longer than buf_size {buf_size}")
    info = None
    if sent_info:
        if resp.qe_report_info is None or len(resp.qe_report_info) != QeReportInfo.SIZE:
            raise BadResponseError("GetQuoteEx: qe_report_info not echoed (960 bytes)")
        info = QeReportInfo.from_bytes(resp.qe_report_info)
    return QuoteExResult(resp.quote, info)


def _select_request(key_ids: Sequence[AttKeyId] | None, tms: int) -> m.SelectAttKeyIDRequest:
    raw = AttKeyIdList(tuple(key_ids)).to_bytes() if key_ids is not None else None
    return m.SelectAttKeyIDRequest(raw, tms)


def _check_selected(resp: m.SelectAttKeyIDResponse) -> AttKeyId:
    if resp.selected_att_key_id is None or len(resp.selected_att_key_id) != AttKeyId.SIZE:
        raise BadResponseError("SelectAttKeyID: selected id missing or not 256 bytes")
    return AttKeyId.from_bytes(resp.selected_att_key_id)


def _decode(body: bytes) -> m.Response:
    try:
        return m.decode_response(body)
    except RemoteProtocolError as exc:
        raise BadResponseError(str(exc)) from None


def _encode(request: m.Request) -> bytes:
    try:
        return encode_frame(m.encode_request(request))
    except LocalProtocolError:
        raise
    except Exception as exc:  # pragma: no cover - encode_request maps its errors already
        raise LocalProtocolError(str(exc)) from exc


_RETRYABLE = (ConnectionRefusedError, FileNotFoundError)


class _Settings:
    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        timeout: float,
        retry_deadline: float,
        reuse_connection: bool,
        backoff: float,
        max_backoff: float,
    ) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout
        self.retry_deadline = retry_deadline
        self.reuse_connection = reuse_connection
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.key_id = AttKeyId.ecdsa_p256_qe3()

    @property
    def tms(self) -> int:
        return _timeout_ms(self.timeout)


# ------------------------------------------------------------------ blocking client


class QuoteClient(_Settings):
    """Blocking client (see the module doc). Use as a context manager or call :meth:`close`.

    Args:
        socket_path: the daemon's socket (default /var/run/aesmd/aesm.socket).
        timeout: seconds for one whole call (connect, send, receive); also sent on the wire in ms.
        retry_deadline: seconds during which connection refused / absent socket is retried.
        reuse_connection: keep the connection for the next call (not with Intel's aesmd).
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

    def _exchange(self, sock: socket.socket, frame: bytes, deadline: float) -> bytes | None:
        """Send one frame, read one; None when the peer closed before any reply byte."""
        decoder = FrameDecoder(MAX_RESPONSE_FRAME)
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        sock.sendall(frame)
        got_any = False
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(65536)
            if not chunk:
                if not got_any:
                    return None
                try:
                    decoder.eof()
                except RemoteProtocolError as exc:
                    raise BadResponseError(str(exc)) from None
                return None
            got_any = True
            try:
                frames = decoder.feed(chunk)
            except RemoteProtocolError as exc:
                raise BadResponseError(str(exc)) from None
            if frames:
                return frames[0]

    def transact(self, request: m.Request) -> m.Response:
        """Send one request, return the decoded response (no errorCode check)."""
        frame = _encode(request)
        deadline = time.monotonic() + self.timeout
        reused = self._sock is not None
        for attempt in range(2):
            sock = self._sock if self._sock is not None else self._connect(deadline)
            self._sock = None
            try:
                body = self._exchange(sock, frame, deadline)
            except TimeoutError as exc:
                sock.close()
                raise TransportError(f"no answer from {self.socket_path} within {self.timeout:g}s") from exc
            except (BrokenPipeError, ConnectionResetError) as exc:
                sock.close()
                if reused and attempt == 0:
                    reused = False
                    continue
                raise TransportError(f"connection to {self.socket_path} lost: {exc}") from exc
            except OSError as exc:
                sock.close()
                raise TransportError(f"talking to {self.socket_path} failed: {exc}") from exc
            except BaseException:
                sock.close()
                raise
            if body is None:
                sock.close()
                if reused and attempt == 0:  # the daemon closed our idle kept connection
                    reused = False
                    continue
                raise TransportError(f"{self.socket_path} closed the connection without answering")
            if self.reuse_connection:
                self._sock = sock
            else:
                sock.close()
            return _decode(body)
        raise TransportError(
            f"{self.socket_path} closed the connection without answering"
        )  # pragma: no cover

    # -- the quote-ex calls
    def get_supported_att_key_id_num(self) -> int:
        """How many attestation key ids the daemon supports."""
        req = m.GetSupportedAttKeyIDNumRequest(self.tms)
        resp = _expect(self.transact(req), m.GetSupportedAttKeyIDNumResponse, req)
        if resp.att_key_id_num is None:
            raise BadResponseError("GetSupportedAttKeyIDNum: att_key_id_num missing")
        return resp.att_key_id_num

    def get_supported_att_key_ids(self, num: int | None = None) -> list[AttKeyId]:
        """The supported key ids (asks for the count first unless ``num`` is given)."""
        n = self.get_supported_att_key_id_num() if num is None else num
        req = m.GetSupportedAttKeyIDsRequest(n * AttKeyId.SIZE, self.tms)
        return _check_key_ids(
            _expect(self.transact(req), m.GetSupportedAttKeyIDsResponse, req), n * AttKeyId.SIZE
        )

    def select_att_key_id(self, key_ids: Sequence[AttKeyId] | None = None) -> AttKeyId:
        """The daemon's choice among ``key_ids`` (or among all it supports)."""
        req = _select_request(key_ids, self.tms)
        return _check_selected(_expect(self.transact(req), m.SelectAttKeyIDResponse, req))

    def init_quote_ex(
        self, key_id: AttKeyId | None = None, want_pub_key_id: bool = True
    ) -> InitQuoteExResult:
        """Initialise the attestation key; returns the QE target info (and ECDSA_ID if wanted)."""
        raw = (key_id or self.key_id).to_bytes()
        req = m.InitQuoteExRequest(raw, want_pub_key_id, 32 if want_pub_key_id else None, self.tms)
        return _check_init(_expect(self.transact(req), m.InitQuoteExResponse, req), want_pub_key_id)

    def get_quote_size_ex(self, key_id: AttKeyId | None = None) -> int:
        """The size of the quote GetQuoteEx will produce."""
        req = m.GetQuoteSizeExRequest((key_id or self.key_id).to_bytes(), self.tms)
        resp = _expect(self.transact(req), m.GetQuoteSizeExResponse, req)
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
        return _check_quote(_expect(self.transact(req), m.GetQuoteExResponse, req), size, info is not None)

    def probe(self) -> m.HelperProbeResponse:
        """Ask who serves the socket (sgx-quote-helper answers; Intel's aesmd closes)."""
        req = m.HelperProbeRequest()
        return _expect(self.transact(req), m.HelperProbeResponse, req)


# ------------------------------------------------------------------ asyncio client


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

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, frame: bytes
    ) -> bytes | None:
        writer.write(frame)
        await writer.drain()
        decoder = FrameDecoder(MAX_RESPONSE_FRAME)
        got_any = False
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                if got_any:
                    try:
                        decoder.eof()
                    except RemoteProtocolError as exc:
                        raise BadResponseError(str(exc)) from None
                return None
            got_any = True
            try:
                frames = decoder.feed(chunk)
            except RemoteProtocolError as exc:
                raise BadResponseError(str(exc)) from None
            if frames:
                return frames[0]

    async def transact(self, request: m.Request) -> m.Response:
        """Send one request, return the decoded response (no errorCode check)."""
        try:
            return await asyncio.wait_for(self._transact(request), self.timeout)
        except TimeoutError as exc:
            await self.close()
            raise TransportError(f"no answer from {self.socket_path} within {self.timeout:g}s") from exc

    async def _transact(self, request: m.Request) -> m.Response:
        frame = _encode(request)
        reused = self._conn is not None
        for attempt in range(2):
            reader, writer = self._conn if self._conn is not None else await self._connect()
            self._conn = None
            try:
                body = await self._exchange(reader, writer, frame)
            except (BrokenPipeError, ConnectionResetError) as exc:
                writer.close()
                if reused and attempt == 0:
                    reused = False
                    continue
                raise TransportError(f"connection to {self.socket_path} lost: {exc}") from exc
            except OSError as exc:
                writer.close()
                raise TransportError(f"talking to {self.socket_path} failed: {exc}") from exc
            except BaseException:
                writer.close()
                raise
            if body is None:
                writer.close()
                if reused and attempt == 0:
                    reused = False
                    continue
                raise TransportError(f"{self.socket_path} closed the connection without answering")
            if self.reuse_connection:
                self._conn = (reader, writer)
            else:
                writer.close()
            return _decode(body)
        raise TransportError(
            f"{self.socket_path} closed the connection without answering"
        )  # pragma: no cover

    async def get_supported_att_key_id_num(self) -> int:
        """How many attestation key ids the daemon supports."""
        req = m.GetSupportedAttKeyIDNumRequest(self.tms)
        resp = _expect(await self.transact(req), m.GetSupportedAttKeyIDNumResponse, req)
        if resp.att_key_id_num is None:
            raise BadResponseError("GetSupportedAttKeyIDNum: att_key_id_num missing")
        return resp.att_key_id_num

    async def get_supported_att_key_ids(self, num: int | None = None) -> list[AttKeyId]:
        """The supported key ids (asks for the count first unless ``num`` is given)."""
        n = await self.get_supported_att_key_id_num() if num is None else num
        req = m.GetSupportedAttKeyIDsRequest(n * AttKeyId.SIZE, self.tms)
        resp = _expect(await self.transact(req), m.GetSupportedAttKeyIDsResponse, req)
        return _check_key_ids(resp, n * AttKeyId.SIZE)

    async def select_att_key_id(self, key_ids: Sequence[AttKeyId] | None = None) -> AttKeyId:
        """The daemon's choice among ``key_ids`` (or among all it supports)."""
        req = _select_request(key_ids, self.tms)
        return _check_selected(_expect(await self.transact(req), m.SelectAttKeyIDResponse, req))

    async def init_quote_ex(
        self, key_id: AttKeyId | None = None, want_pub_key_id: bool = True
    ) -> InitQuoteExResult:
        """Initialise the attestation key; returns the QE target info (and ECDSA_ID if wanted)."""
        raw = (key_id or self.key_id).to_bytes()
        req = m.InitQuoteExRequest(raw, want_pub_key_id, 32 if want_pub_key_id else None, self.tms)
        return _check_init(_expect(await self.transact(req), m.InitQuoteExResponse, req), want_pub_key_id)

    async def get_quote_size_ex(self, key_id: AttKeyId | None = None) -> int:
        """The size of the quote GetQuoteEx will produce."""
        req = m.GetQuoteSizeExRequest((key_id or self.key_id).to_bytes(), self.tms)
        resp = _expect(await self.transact(req), m.GetQuoteSizeExResponse, req)
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
        return _check_quote(
            _expect(await self.transact(req), m.GetQuoteExResponse, req), size, info is not None
        )

    async def probe(self) -> m.HelperProbeResponse:
        """Ask who serves the socket (sgx-quote-helper answers; Intel's aesmd closes)."""
        req = m.HelperProbeRequest()
        return _expect(await self.transact(req), m.HelperProbeResponse, req)


__all__ = [
    "AESM_ADDR_ENV",
    "DEFAULT_SOCKET_PATH",
    "DEFAULT_TIMEOUT",
    "AsyncQuoteClient",
    "InitQuoteExResult",
    "ModeDecision",
    "QuoteClient",
    "QuoteExResult",
    "out_of_process_mode",
    "trim_quote",
]
