"""Python clients of a QGS (Intel's Quote Generation Service protocol): blocking and asyncio.

Each call opens one connection (a Unix socket path, or vsock ``(cid, port)``), writes the framed
request in one piece (as QEMU and libtdx_attest do), reads the framed response and closes: the
QGS answers one request per connection. Errors: :class:`TransportError` (connect/read/write failed
or timed out, or the QGS closed without answering: what Intel's server does with input it refuses),
:class:`BadResponseError` (not a valid response of the expected type, or a non-zero error code),
both from :mod:`sgx_quote_helper.errors`. The protocol is :mod:`sgx_quote_helper.wire.qgs`.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from ..abi import qgs as q
from ..errors import BadResponseError, RemoteProtocolError, TransportError
from ..wire.qgs import QgsClientConnection, ResponseReceived

#: the host's CID as a TD guest sees it (VMADDR_CID_HOST)
VMADDR_CID_HOST = 2
DEFAULT_TIMEOUT = 30.0

Address = Path | tuple[int, int]


def _describe(addr: Address) -> str:
    return f"vsock {addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)


def _open(addr: Address, timeout: float) -> socket.socket:
    if isinstance(addr, tuple):
        if not hasattr(socket, "AF_VSOCK"):
            raise TransportError("this Python/kernel has no AF_VSOCK; use a Unix socket (--qgs-socket)")
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        target: tuple[int, int] | str = addr
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = str(addr)
    sock.settimeout(timeout)
    try:
        sock.connect(target)
    except OSError as exc:
        sock.close()
        raise TransportError(
            f"cannot connect to the QGS at {_describe(addr)}: {exc.strerror or exc}"
        ) from None
    return sock


def _checked(event: object, addr: Address) -> q.Response:
    assert isinstance(event, ResponseReceived)
    resp = event.response
    if resp.error_code:
        raise BadResponseError(f"the QGS at {_describe(addr)} answered error {resp.error_code:#x}")
    return resp


class QgsClient:
    """Blocking QGS client (see the module doc)."""

    def __init__(self, address: Address, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.address = address
        self.timeout = timeout

    def request(self, request: q.Request) -> q.Response:
        conn = QgsClientConnection()
        data = conn.send(request)
        with _open(self.address, self.timeout) as sock:
            try:
                sock.sendall(data)
                while True:
                    event = conn.next_event()
                    if isinstance(event, ResponseReceived):
                        return _checked(event, self.address)
                    conn.receive_data(sock.recv(65536))
            except RemoteProtocolError as exc:
                raise (TransportError if "closed" in str(exc) else BadResponseError)(
                    f"QGS at {_describe(self.address)}: {exc}"
                ) from None
            except OSError as exc:
                raise TransportError(f"QGS at {_describe(self.address)}: {exc.strerror or exc}") from None

    def get_quote(self, td_report: bytes) -> bytes:
        """The quote of a 1024-byte TDREPORT."""
        resp = self.request(q.GetQuoteRequest(td_report))
        assert isinstance(resp, q.GetQuoteResponse)
        return resp.quote

    def platform_info(self) -> q.GetPlatformInfoResponse:
        resp = self.request(q.GetPlatformInfoRequest())
        assert isinstance(resp, q.GetPlatformInfoResponse)
        return resp

    def collateral(self, fmspc: bytes, ca: str) -> q.GetCollateralResponse:
        resp = self.request(q.GetCollateralRequest(fmspc, ca.encode() + b"\0"))
        assert isinstance(resp, q.GetCollateralResponse)
        return resp


class AsyncQgsClient:
    """asyncio QGS client over a Unix socket (see the module doc)."""

    def __init__(self, path: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout

    async def request(self, request: q.Request) -> q.Response:
        conn = QgsClientConnection()
        data = conn.send(request)
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_unix_connection(str(self.path))
                try:
                    writer.write(data)
                    await writer.drain()
                    while True:
                        event = conn.next_event()
                        if isinstance(event, ResponseReceived):
                            return _checked(event, self.path)
                        conn.receive_data(await reader.read(65536))
                finally:
                    writer.close()
        except TimeoutError:
            raise TransportError(f"QGS at {self.path}: no answer within {self.timeout} s") from None
        except RemoteProtocolError as exc:
            raise (TransportError if "closed" in str(exc) else BadResponseError)(
                f"QGS at {self.path}: {exc}"
            ) from None
        except OSError as exc:
            raise TransportError(f"cannot talk to the QGS at {self.path}: {exc.strerror or exc}") from None

    async def get_quote(self, td_report: bytes) -> bytes:
        resp = await self.request(q.GetQuoteRequest(td_report))
        assert isinstance(resp, q.GetQuoteResponse)
        return resp.quote


__all__ = ["DEFAULT_TIMEOUT", "VMADDR_CID_HOST", "AsyncQgsClient", "QgsClient"]
