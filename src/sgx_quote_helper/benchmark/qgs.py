"""The request a QGS benchmark sends, prepared once, and how each reply is read and judged.

A :class:`QgsWorkload` is the bytes one client writes on a new connection, as the TD's path to the
QGS writes them (``shared/specs/tdx-qgs.md`` §1.4-§1.5), and what a correct reply is:

``framed``
    ``[BE length][GET_QUOTE_REQ v1.1, id_list 0]``: what QEMU's quote-generation-socket and
    libtdx_attest over vsock send (:class:`~sgx_quote_helper.wire.qgs.QgsClientConnection`). The
    reply is read until the framed GET_QUOTE_RESP is complete, as they read it; it must be error 0
    with a quote of the expected size.
``raw``
    the bare 1024-byte TDREPORT (raw mode, what an unwrapping VMM forwards); the reply is the bare
    quote, read until the QGS closes, and must be the expected size.

The TDREPORT comes from ``--state-dir`` (the simulated platform the QGS serves: its simulated TDX
module makes it) or a file. One quote is fetched in each mode before the workload is returned, so
a refused report fails before the load starts. The load itself runs in the ordinary load
generator (:mod:`.loadgen`, style ``qgs``: one connection per request, as QEMU and libtdx_attest).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..abi.qgs import GetQuoteRequest, GetQuoteResponse
from ..client.qgs import QgsClient
from ..errors import BadResponseError, ConfigError, RemoteProtocolError, TransportError
from ..sim.platform import Platform
from ..sim.tdx_module import TdIdentity, TdxModule
from ..wire.qgs import RAW_REPORT_SIZE, QgsClientConnection, ResponseReceived
from .workload import BAD_RESPONSE, OK, TRANSPORT

QgsMode = Literal["framed", "raw"]
QGS_MODES: tuple[QgsMode, ...] = ("framed", "raw")
#: what a benchmark TD puts in its TDREPORT's report data
BENCH_TD_REPORT_DATA = b"sgx-quote-helper bench qgs".ljust(64, b"\0")
BENCH_TD = TdIdentity(mr_td=b"\x42" * 48)
#: the most a raw-mode reply may be before it is judged bad (a quote is a few KiB)
MAX_RAW_REPLY = 1 << 20


def qgs_error_label(code: int) -> str:
    return f"qgs_error({code:#x})"


class QgsReply:
    """Reads one reply (sans-I/O): :meth:`feed` the bytes received (``b""`` = the QGS closed) until
    it returns the label: ``"ok"``, ``"transport"`` (closed early), ``"bad_response"``, or
    ``"qgs_error(0x12001)"``-style for a framed error reply."""

    __slots__ = ("_buf", "_conn", "expect_len", "mode")

    def __init__(self, mode: QgsMode, expect_len: int, request: GetQuoteRequest | None = None) -> None:
        self.mode = mode
        self.expect_len = expect_len
        self._buf = bytearray()
        self._conn: QgsClientConnection | None = None
        if mode == "framed":
            if request is None:
                raise ConfigError("a framed reply needs the request it answers")
            self._conn = QgsClientConnection()
            self._conn.send(request)

    def feed(self, data: bytes) -> str | None:
        if self._conn is not None:
            self._conn.receive_data(data)
            try:
                event = self._conn.next_event()
            except RemoteProtocolError as exc:
                return TRANSPORT if "closed" in str(exc) else BAD_RESPONSE
            if not isinstance(event, ResponseReceived):
                return None
            resp = event.response
            if not isinstance(resp, GetQuoteResponse):
                return BAD_RESPONSE
            if resp.error_code:
                return qgs_error_label(resp.error_code)
            return OK if len(resp.quote) == self.expect_len else BAD_RESPONSE
        if data:
            self._buf += data
            return BAD_RESPONSE if len(self._buf) > MAX_RAW_REPLY else None
        if not self._buf:
            return TRANSPORT  # raw mode refuses by closing with no data
        return OK if len(self._buf) == self.expect_len else BAD_RESPONSE


@dataclass(frozen=True, slots=True)
class QgsWorkload:
    """One prepared QGS request and the reply that counts as success (picklable: the workers get it).

    ``frame`` is what a client writes on its connection; the attributes ``kind``, ``sequence``,
    ``prelude``, ``body``, ``description`` are those the load generator reports for any workload.
    """

    mode: QgsMode
    frame: bytes
    td_report: bytes
    quote_size: int
    kind: Literal["quote"] = "quote"
    prelude: tuple[()] = ()

    @property
    def sequence(self) -> str:
        return f"qgs-{self.mode}"

    @property
    def body(self) -> bytes:
        return self.frame

    @property
    def expect_len(self) -> int:
        return self.quote_size

    @property
    def description(self) -> str:
        if self.mode == "framed":
            return "QGS GET_QUOTE_REQ v1.1 of a valid TDREPORT, framed as QEMU sends it (a full quote per request)"
        return "QGS raw mode: the bare 1024-byte TDREPORT, the bare quote back (a full quote per request)"

    def reply(self) -> QgsReply:
        """A reader for one reply to :attr:`frame`."""
        request = GetQuoteRequest(self.td_report) if self.mode == "framed" else None
        return QgsReply(self.mode, self.quote_size, request)

    def judge(self, reply: bytes) -> str:
        """The label of a whole reply (everything read until the QGS closed)."""
        reader = self.reply()
        label = reader.feed(reply) if reply else None
        return label if label is not None else (reader.feed(b"") or TRANSPORT)


def bench_td_report(state_dir: Path) -> bytes:
    """A valid TDREPORT of the simulated platform in ``state_dir`` (what its QGS quotes).

    Raises:
        PlatformStateError: no simulated platform there.
    """
    module = TdxModule.open(Platform.open(state_dir))
    return module.report(BENCH_TD_REPORT_DATA, BENCH_TD).to_bytes()


def raw_exchange(path: Path, report: bytes, timeout: float) -> bytes:
    """One raw-mode request: the bare TDREPORT written, everything read until the QGS closes.

    Raises:
        TransportError: no connection, a timeout, or a close with no data (the report refused).
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(report)
            out = bytearray()
            while chunk := sock.recv(65536):
                out += chunk
                if len(out) > MAX_RAW_REPLY:
                    raise BadResponseError(f"a raw-mode reply over {MAX_RAW_REPLY} bytes")
        except OSError as exc:
            raise TransportError(f"QGS at {path}: {exc.strerror or exc}") from None
    if not out:
        raise TransportError(f"the QGS at {path} closed with no data: it refused the raw TDREPORT")
    return bytes(out)


def prepare_qgs_workload(
    socket_path: Path,
    mode: QgsMode,
    *,
    td_report: bytes | None = None,
    state_dir: Path | None = None,
    timeout: float = 15.0,
) -> QgsWorkload:
    """Fetch one quote in ``mode`` (the QGS works and accepts the report) and build the workload.

    Raises:
        ConfigError: no report and no state directory, or a report that is not 1024 bytes.
        PlatformStateError: ``state_dir`` holds no simulated platform.
        TransportError: the QGS is unreachable or closed without answering (raw mode's refusal).
        BadResponseError: an error reply (e.g. 0x12001: the report is not this platform's).
    """
    if td_report is None:
        if state_dir is None:
            raise ConfigError("a quote needs a valid TDREPORT: give --state-dir (simulated) or --td-report")
        td_report = bench_td_report(state_dir)
    if len(td_report) != RAW_REPORT_SIZE:
        raise ConfigError(f"a TDREPORT is {RAW_REPORT_SIZE} bytes, got {len(td_report)}")
    if mode == "framed":
        quote = QgsClient(socket_path, timeout).get_quote(td_report)
        frame = QgsClientConnection().send(GetQuoteRequest(td_report))
    else:
        quote = raw_exchange(socket_path, td_report, timeout)
        frame = td_report
    return QgsWorkload(mode, frame, td_report, len(quote))


__all__ = [
    "BENCH_TD_REPORT_DATA",
    "QGS_MODES",
    "QgsMode",
    "QgsReply",
    "QgsWorkload",
    "bench_td_report",
    "prepare_qgs_workload",
    "qgs_error_label",
    "raw_exchange",
]
