"""Helpers shared by the quote-service tests: short socket dirs, raw AESM frames, a report."""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sgx_quote_helper.abi.keyid import AttKeyId
from sgx_quote_helper.abi.report import Report, ReportBody
from sgx_quote_helper.wire import messages as m
from sgx_quote_helper.wire.framing import FrameDecoder, encode_frame

KEY_RAW = AttKeyId.ecdsa_p256_qe3().to_bytes()


@contextmanager
def short_dir() -> Iterator[Path]:
    """A temp dir with a short path (sun_path is 108 bytes; pytest's tmp_path can be longer)."""
    d = Path(tempfile.mkdtemp(prefix="sq", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def report(tag: int) -> Report:
    """A report the FakeEngine accepts (non-zero MAC), distinct per tag."""
    return Report(ReportBody(report_data=tag.to_bytes(8, "little") * 8), key_id=bytes(32), mac=b"\x01" * 16)


def quote_frame(rep: Report, buf_size: int = 8192, info: bytes | None = None) -> bytes:
    return encode_frame(m.encode_request(m.GetQuoteExRequest(rep.to_bytes(), KEY_RAW, info, buf_size, 15000)))


def raw_connect(path: Path, timeout: float = 5.0) -> socket.socket:
    """Connect like a patient client: a full listen backlog (EAGAIN) is waited out, up to timeout."""
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(str(path))
            return s
        except BlockingIOError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def read_frame(sock: socket.socket) -> bytes | None:
    """One response frame body, or None on EOF before a complete frame."""
    dec = FrameDecoder(4 << 20)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        frames = dec.feed(chunk)
        if frames:
            return frames[0]


def transact_raw(path: Path, payload: bytes) -> m.Response | None:
    """Send raw bytes on a new connection; decode one response (None if closed without reply)."""
    with raw_connect(path) as s:
        s.sendall(payload)
        body = read_frame(s)
    return None if body is None else m.decode_response(body)
