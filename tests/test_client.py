"""client.py: every quote-ex call, the three error kinds, retries, timeouts, mode selection."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sgx_quote_helper.abi.codes import AesmStatus
from sgx_quote_helper.abi.keyid import AttKeyId, QeReportInfo
from sgx_quote_helper.abi.report import TargetInfo
from sgx_quote_helper.client import AsyncQuoteClient, QuoteClient, out_of_process_mode, trim_quote
from sgx_quote_helper.errors import AesmError, BadResponseError, TransportError
from sgx_quote_helper.server.config import ServerConfig
from sgx_quote_helper.service import AesmService
from sgx_quote_helper.testing.daemon import ServerThread
from sgx_quote_helper.testing.fakes import FAKE_QUOTE_SIZE, FakeEngine, fake_quote
from sgx_quote_helper.wire import messages as m
from sgx_quote_helper.wire.framing import encode_frame

from ._aesm_helpers import report, short_dir


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with short_dir() as d:
        yield d


def daemon(path: Path, engine: FakeEngine | None = None, **kw: object) -> ServerThread:
    cfg = ServerConfig(socket_path=path, **kw)  # type: ignore[arg-type]
    return ServerThread(AesmService(engine or FakeEngine(), version="v"), cfg)


class Scripted:
    """A socket server that answers every request with ``reply(body)`` raw bytes (or closes/hangs)."""

    def __init__(self, path: Path, reply: Callable[[bytes], bytes | None], hang: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.reply, self.hang, self.stop = reply, hang, threading.Event()
        self.held: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            c.settimeout(2)
            head = c.recv(4)
            body = c.recv(int.from_bytes(head, "little")) if len(head) == 4 else b""
            if self.hang:
                self.held.append(c)
                continue
            out = self.reply(body)
            if out is not None:
                c.sendall(out)
            c.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        for c in self.held:
            c.close()


def test_every_quote_ex_call(sock_dir: Path) -> None:
    path = sock_dir / "s"
    with daemon(path), QuoteClient(path) as c:
        assert c.get_supported_att_key_id_num() == 1
        assert c.get_supported_att_key_ids() == [AttKeyId.ecdsa_p256_qe3()]
        assert c.select_att_key_id() == AttKeyId.ecdsa_p256_qe3()
        assert c.select_att_key_id([AttKeyId(algorithm_id=0), AttKeyId()]) == AttKeyId()
        size_q = c.init_quote_ex(want_pub_key_id=False)
        assert size_q.pub_key_id_size == 32 and size_q.target_info.is_zero and size_q.pub_key_id is None
        init = c.init_quote_ex()
        assert init.pub_key_id is not None and len(init.pub_key_id) == 32 and not init.target_info.is_zero
        assert c.get_quote_size_ex() == FAKE_QUOTE_SIZE
        info = QeReportInfo(b"n" * 16, TargetInfo(mr_enclave=b"a" * 32))
        res = c.get_quote_ex(report(1), qe_report_info=info)
        assert res.quote == fake_quote(report(1)) and res.qe_report_info is not None
        assert res.qe_report_info.nonce == info.nonce and res.qe_report_info.qe_report != bytes(432)
        padded = c.get_quote_ex(report(1), buf_size=5000)
        assert len(padded.quote) == 5000
        assert c.probe().implementation == "sgx-quote-helper"


def test_answered_errors_are_aesm_errors_not_retried(sock_dir: Path) -> None:
    path = sock_dir / "s"
    eng = FakeEngine()  # no key yet
    with daemon(path, eng), QuoteClient(path, retry_deadline=5) as c:
        with pytest.raises(AesmError) as err:
            c.get_quote_size_ex()
        assert err.value.status is AesmStatus.ATT_KEY_NOT_INITIALIZED
        assert eng.calls["quote_size"] == 1
        with pytest.raises(AesmError) as err2:
            c.get_quote_ex(report(1), buf_size=100)
        assert err2.value.status == AesmStatus.ATT_KEY_NOT_INITIALIZED


def test_absent_socket_without_retry_is_transport_error(sock_dir: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(TransportError):
        QuoteClient(sock_dir / "missing", retry_deadline=0).get_supported_att_key_id_num()
    assert time.monotonic() - t0 < 5


def test_retry_until_the_daemon_appears(sock_dir: Path) -> None:
    path = sock_dir / "s"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # refused (stale file) at first
    dead.close()
    d = daemon(path)
    timer = threading.Timer(0.3, d.start)
    timer.start()
    try:
        assert QuoteClient(path, retry_deadline=10, backoff=0.02).get_supported_att_key_id_num() == 1
    finally:
        timer.join()
        d.stop()


def test_async_retry_until_the_daemon_appears(sock_dir: Path) -> None:
    path = sock_dir / "s"
    d = daemon(path)
    timer = threading.Timer(0.3, d.start)
    timer.start()
    try:
        n = asyncio.run(
            AsyncQuoteClient(path, retry_deadline=10, backoff=0.02).get_supported_att_key_id_num()
        )
        assert n == 1
    finally:
        timer.join()
        d.stop()


def test_timeout_is_transport_error(sock_dir: Path) -> None:
    path = sock_dir / "s"
    srv = Scripted(path, lambda b: None, hang=True)
    try:
        with pytest.raises(TransportError, match="within"):
            QuoteClient(path, timeout=0.3).get_supported_att_key_id_num()
        with pytest.raises(TransportError, match="within"):
            asyncio.run(AsyncQuoteClient(path, timeout=0.3).get_supported_att_key_id_num())
    finally:
        srv.close()


def _frame(resp: m.Response) -> bytes:
    return encode_frame(m.encode_response(resp))


@pytest.mark.parametrize(
    ("reply", "exc"),
    [
        (lambda b: None, TransportError),  # closed without answering (aesmd on an unknown request)
        (lambda b: b"\x05\x00\x00\x00ab", BadResponseError),  # truncated
        (lambda b: encode_frame(b"\xff\xff"), BadResponseError),  # garbage protobuf
        (
            lambda b: _frame(m.GetQuoteSizeExResponse(AesmStatus.SUCCESS, 1)),
            BadResponseError,
        ),  # wrong field number
        (lambda b: encode_frame(bytes.fromhex("aa010210 01")), BadResponseError),  # no errorCode
        (lambda b: _frame(m.GetSupportedAttKeyIDNumResponse(AesmStatus.SUCCESS)), BadResponseError),  # no num
        (lambda b: _frame(m.GetSupportedAttKeyIDNumResponse(99, 0)), AesmError),  # unknown code kept
    ],
    ids=["eof", "truncated", "garbage", "wrong-type", "no-errorcode", "no-num", "unknown-code"],
)
def test_bad_answers(sock_dir: Path, reply: Callable[[bytes], bytes | None], exc: type[Exception]) -> None:
    path = sock_dir / "s"
    srv = Scripted(path, reply)
    try:
        with pytest.raises(exc) as err:
            QuoteClient(path, retry_deadline=0).get_supported_att_key_id_num()
        if isinstance(err.value, AesmError):
            assert err.value.status == 99 and AesmStatus(err.value.status).name == "UNKNOWN_99"
        with pytest.raises(exc):
            asyncio.run(AsyncQuoteClient(path, retry_deadline=0).get_supported_att_key_id_num())
    finally:
        srv.close()


@pytest.mark.parametrize(
    "resp",
    [
        m.GetQuoteExResponse(AesmStatus.SUCCESS, b"q" * 101),  # longer than buf_size
        m.GetQuoteExResponse(AesmStatus.SUCCESS, None),
    ],
)
def test_quote_length_checks(sock_dir: Path, resp: m.Response) -> None:
    path = sock_dir / "s"
    srv = Scripted(path, lambda b: _frame(resp))
    try:
        with pytest.raises(BadResponseError):
            QuoteClient(path).get_quote_ex(report(1), buf_size=100)
    finally:
        srv.close()


def test_qe_report_info_must_be_echoed(sock_dir: Path) -> None:
    path = sock_dir / "s"
    srv = Scripted(path, lambda b: _frame(m.GetQuoteExResponse(AesmStatus.SUCCESS, b"q" * 10)))
    try:
        with pytest.raises(BadResponseError, match="qe_report_info"):
            QuoteClient(path).get_quote_ex(
                report(1), buf_size=100, qe_report_info=QeReportInfo(bytes(16), TargetInfo())
            )
    finally:
        srv.close()


def test_key_ids_length_checked(sock_dir: Path) -> None:
    path = sock_dir / "s"
    srv = Scripted(path, lambda b: _frame(m.GetSupportedAttKeyIDsResponse(AesmStatus.SUCCESS, bytes(200))))
    try:
        with pytest.raises(BadResponseError):
            QuoteClient(path).get_supported_att_key_ids(num=1)
    finally:
        srv.close()


def test_reused_connection_survives_server_idle_close(sock_dir: Path) -> None:
    path = sock_dir / "s"
    d = daemon(path, idle_timeout=0.2, read_timeout=1.0).start()
    try:
        with QuoteClient(path, reuse_connection=True) as c:
            assert c.get_supported_att_key_id_num() == 1
            assert d.server is not None
            deadline = time.monotonic() + 5
            while (
                d.server.connections and time.monotonic() < deadline
            ):  # the server drops our idle connection
                time.sleep(0.02)
            assert not d.server.connections
            assert c.get_supported_att_key_id_num() == 1  # transparently reconnected
            before = d.server.stats.connections
            assert c.get_supported_att_key_id_num() == 1
            assert d.server.stats.connections == before  # and reused
    finally:
        d.stop()


def test_async_client_calls(sock_dir: Path) -> None:
    path = sock_dir / "s"

    async def run() -> None:
        async with AsyncQuoteClient(path, reuse_connection=True) as c:
            assert await c.get_supported_att_key_ids() == [AttKeyId()]
            assert await c.select_att_key_id() == AttKeyId()
            await c.init_quote_ex()
            size = await c.get_quote_size_ex()
            res = await c.get_quote_ex(report(2), buf_size=size + 10)
            assert res.trimmed() == res.quote  # the fake quote has no v3 signature length to trim by
            assert res.quote == fake_quote(report(2)) + bytes(10)
            assert (await c.probe()).version == "v"

    with daemon(path):
        asyncio.run(run())


def test_trim_quote() -> None:
    sig = b"s" * 10
    q = (3).to_bytes(2, "little") + bytes(430) + len(sig).to_bytes(4, "little") + sig
    assert trim_quote(q + bytes(100)) == q
    assert trim_quote(b"short") == b"short"


@pytest.mark.parametrize(
    ("env", "out"),
    [
        ({}, False),
        ({"SGX_AESM_ADDR": "1"}, True),
        ({"SGX_AESM_ADDR": ""}, True),
        ({"SGX_AESM_ADDR": "/x"}, True),
    ],
)
def test_out_of_process_mode(env: dict[str, str], out: bool) -> None:
    d = out_of_process_mode(env)
    assert d.out_of_process is out
    assert ("SGX_AESM_ADDR is set" in d.reason) is out
    assert d.name == ("out-of-process" if out else "in-process")


def test_out_of_process_mode_reads_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SGX_AESM_ADDR", "")
    assert out_of_process_mode().out_of_process
    monkeypatch.delenv("SGX_AESM_ADDR")
    assert not out_of_process_mode().out_of_process
    assert os.environ.get("SGX_AESM_ADDR") is None


def test_full_backlog_eagain_is_retried(sock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """connect() on a Unix socket whose listen backlog is full fails with EAGAIN (the socket has a
    timeout, so it is non-blocking): a burst, not an absent daemon; the client retries it."""
    path = sock_dir / "aesm.socket"
    real_connect = socket.socket.connect
    failures = {"left": 3}

    def busy_connect(self: socket.socket, address: object) -> None:
        if self.family == socket.AF_UNIX and failures["left"] > 0:
            failures["left"] -= 1
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        real_connect(self, address)

    with daemon(path, FakeEngine()):
        monkeypatch.setattr(socket.socket, "connect", busy_connect)
        assert QuoteClient(path, retry_deadline=5, backoff=0.01).get_supported_att_key_id_num() == 1
        assert failures["left"] == 0
        failures["left"] = 1
        with pytest.raises(TransportError):
            QuoteClient(path, retry_deadline=0).get_supported_att_key_id_num()
