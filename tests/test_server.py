"""server/: a real Unix socket in a temp dir, FakeEngine behind it.

Concurrency with malformed clients, keep-alive and pipelining, BUSY past the in-flight bound, socket
path ownership (stale, foreign, takeover of a live instance) and graceful stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sgx_quote_helper.abi.codes import AesmStatus
from sgx_quote_helper.abi.keyid import AttKeyId
from sgx_quote_helper.client import AsyncQuoteClient, QuoteClient
from sgx_quote_helper.errors import ConfigError
from sgx_quote_helper.server.config import ServerConfig
from sgx_quote_helper.server.socketpath import PathState, probe_path
from sgx_quote_helper.service import AesmService
from sgx_quote_helper.testing.daemon import ServerThread
from sgx_quote_helper.testing.fakes import FakeEngine, fake_quote
from sgx_quote_helper.wire import messages as m
from sgx_quote_helper.wire.framing import encode_frame

from ._aesm_helpers import quote_frame, raw_connect, read_frame, report, short_dir, transact_raw

FAST = {"idle_timeout": 0.4, "read_timeout": 0.4, "path_check_interval": 0.05, "probe_timeout": 1.0}


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with short_dir() as d:
        yield d


def start(path: Path, engine: FakeEngine | None = None, **kw: object) -> ServerThread:
    cfg = ServerConfig(socket_path=path, **{**FAST, **kw})  # type: ignore[arg-type]
    svc = AesmService(engine or FakeEngine(initialised=True), version="test", instance_id=os.urandom(4).hex())
    return ServerThread(svc, cfg).start()


def test_socket_mode_and_basic_answer(sock_dir: Path) -> None:
    path = sock_dir / "aesm.socket"
    with start(path):
        assert path.is_socket() and (path.stat().st_mode & 0o777) == 0o777
        assert QuoteClient(path).get_supported_att_key_id_num() == 1
        # Intel's exact bytes, in two writes as libsgx_quote_ex sends them
        with raw_connect(path) as s:
            s.sendall(bytes.fromhex("06000000"))
            s.sendall(bytes.fromhex("aa0103489875"))
            assert read_frame(s) == bytes.fromhex("aa01 04 0800 1001".replace(" ", ""))
    assert not path.exists()


def test_socket_mode_configurable(sock_dir: Path) -> None:
    path = sock_dir / "aesm.socket"
    with start(path, socket_mode=0o660):
        assert (path.stat().st_mode & 0o777) == 0o660


def test_connection_kept_open_and_pipelined(sock_dir: Path) -> None:
    path = sock_dir / "aesm.socket"
    with start(path), raw_connect(path) as s:
        for tag in range(3):  # sequential requests on one connection
            s.sendall(quote_frame(report(tag)))
            resp = m.decode_response(read_frame(s) or b"")
            assert isinstance(resp, m.GetQuoteExResponse) and resp.quote == fake_quote(report(tag)) + bytes(
                8192 - 1456
            )
        s.sendall(quote_frame(report(10)) + quote_frame(report(11)))  # two frames in one write
        got: list[m.Response] = []
        buf = b""
        while len(got) < 2:
            buf += s.recv(65536)
            while len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:4], "little"):
                n = int.from_bytes(buf[:4], "little")
                got.append(m.decode_response(buf[4 : 4 + n]))
                buf = buf[4 + n :]
        quotes = [r.quote for r in got if isinstance(r, m.GetQuoteExResponse)]
        assert [q[:1456] for q in quotes if q] == [fake_quote(report(10)), fake_quote(report(11))]


def test_unknown_and_empty_envelopes_closed_without_reply(sock_dir: Path) -> None:
    path = sock_dir / "aesm.socket"
    with start(path) as d:
        assert transact_raw(path, encode_frame(b"")) is None
        assert transact_raw(path, encode_frame(bytes.fromhex("f20100"))) is None  # field 30
        assert transact_raw(path, encode_frame(b"\xff\xff")) is None  # garbage protobuf
        assert d.server is not None and d.server.stats.client_errors == 3
        assert QuoteClient(path).get_supported_att_key_id_num() == 1


def test_legacy_request_answered_with_its_type(sock_dir: Path) -> None:
    path = sock_dir / "aesm.socket"
    with start(path):
        wire = encode_frame(m.encode_request(m.LegacyRequest(3, b"\x0a\x01x\x12\x01y\x1a\x01z")))
        assert transact_raw(path, wire) == m.LegacyResponse(3, AesmStatus.SERVICE_UNAVAILABLE)


def test_64_clients_with_malformed_neighbours(sock_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    path = sock_dir / "aesm.socket"
    with start(path) as d:
        # malformed neighbours, started first and kept around while the good clients run
        oversized = raw_connect(path)
        oversized.sendall((1 << 30).to_bytes(4, "little"))
        garbage = raw_connect(path)
        garbage.sendall(encode_frame(b"\x0a\xff\xff\xff"))
        half = raw_connect(path)
        half.sendall(quote_frame(report(999))[:100])
        half.shutdown(socket.SHUT_WR)  # truncated frame then EOF
        idle = raw_connect(path)
        slow = raw_connect(path)
        slow.sendall(b"\x10\x00")  # half a length prefix, then nothing

        async def one(i: int) -> None:
            async with AsyncQuoteClient(path, timeout=20) as c:
                for j in range(3):
                    rep = report(i * 100 + j)
                    res = await c.get_quote_ex(rep, buf_size=2000)
                    assert res.quote == fake_quote(rep) + bytes(2000 - 1456)

        async def many() -> None:
            await asyncio.gather(*(one(i) for i in range(64)))

        asyncio.run(many())
        for s in (oversized, garbage, half, idle, slow):  # each was closed by the server
            assert read_frame(s) is None
            s.close()
        assert d.server is not None
        assert d.server.stats.client_errors >= 5
        assert QuoteClient(path).get_supported_att_key_id_num() == 1
    pid = os.getpid()
    logged = [r.getMessage() for r in caplog.records if "client pid=" in r.getMessage()]
    assert any(f"pid={pid} uid={os.getuid()}" in line and "exceeds the maximum" in line for line in logged)
    assert any("slow client" in line for line in logged)


def test_busy_past_in_flight_bound(sock_dir: Path) -> None:
    path = sock_dir / "aesm.socket"
    gate = threading.Event()
    eng = FakeEngine(initialised=True, gate=gate)
    with start(path, eng, max_in_flight=1):
        held = raw_connect(path)
        held.sendall(quote_frame(report(1)))
        deadline = time.monotonic() + 5
        while eng.calls["get_quote"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        resp = transact_raw(path, quote_frame(report(2)))
        assert resp == m.GetQuoteExResponse(AesmStatus.BUSY)
        assert QuoteClient(path).get_supported_att_key_id_num() == 1  # cheap requests still answered
        gate.set()
        first = m.decode_response(read_frame(held) or b"")
        assert isinstance(first, m.GetQuoteExResponse) and first.error_code == AesmStatus.SUCCESS
        held.close()


@pytest.mark.parametrize("inline_below", [0.0, 0.5])
def test_engine_thread_or_inline(sock_dir: Path, inline_below: float) -> None:
    path = sock_dir / "aesm.socket"
    eng = FakeEngine(initialised=True)
    with start(path, eng, inline_engine_below=inline_below), QuoteClient(path, reuse_connection=True) as c:
        for i in range(5):
            assert c.get_quote_ex(report(i), buf_size=1456).quote == fake_quote(report(i))
    if inline_below == 0:  # always the engine thread
        assert eng.threads == {"aesm-engine_0": 5}
    else:  # the first call is measured in the engine thread, the fast ones then run on the loop
        assert eng.threads["aesm-engine_0"] == 1 and eng.threads["aesm-server"] == 4


def test_stale_socket_replaced(sock_dir: Path) -> None:
    path = sock_dir / "aesm.socket"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens
    assert probe_path(path).state is PathState.STALE
    with start(path) as d:
        assert d.server is not None and d.server.previous is not None
        assert d.server.previous.state is PathState.STALE
        assert QuoteClient(path).get_supported_att_key_id_num() == 1


def _foreign_daemon(path: Path, stop: threading.Event) -> socket.socket:
    """Something like Intel's aesmd: reads the request, does not know field 1000, closes."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(8)
    srv.settimeout(0.1)

    def loop() -> None:
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except (TimeoutError, OSError):
                continue
            c.recv(4096)
            c.close()

    threading.Thread(target=loop, daemon=True).start()
    return srv


def test_foreign_socket_refused_unless_replace(sock_dir: Path) -> None:
    path = sock_dir / "aesm.socket"
    stop = threading.Event()
    foreign = _foreign_daemon(path, stop)
    try:
        assert probe_path(path).state is PathState.FOREIGN
        with pytest.raises(ConfigError, match="--replace"):
            start(path)
        assert probe_path(path).state is PathState.FOREIGN  # untouched
        with start(path, replace=True):
            assert QuoteClient(path).probe().implementation == "sgx-quote-helper"
    finally:
        stop.set()
        foreign.close()


def test_regular_file_refused(sock_dir: Path) -> None:
    path = sock_dir / "aesm.socket"
    path.write_text("not a socket")
    with pytest.raises(ConfigError):
        start(path)
    assert path.read_text() == "not a socket"


def test_takeover_of_live_instance(sock_dir: Path) -> None:
    path = sock_dir / "aesm.socket"
    gate = threading.Event()
    old = start(path, FakeEngine(initialised=True, gate=gate))
    assert old.server is not None
    held = raw_connect(path)
    held.sendall(quote_frame(report(5)))  # in flight at the old instance
    new = start(path)
    try:
        assert new.server is not None and new.server.previous is not None
        assert new.server.previous.state is PathState.OURS
        assert QuoteClient(path).probe().instance_id == new.service.instance_id
        gate.set()  # the old instance finishes what it had
        resp = m.decode_response(read_frame(held) or b"")
        assert isinstance(resp, m.GetQuoteExResponse) and resp.quote is not None
        held.close()
        wait_for(lambda: old.server is not None and old.server.state == "handed-over")
        assert not old.join(0.3)  # it stays up, drained, until stopped (a pod deletion)
        old.stop()
        assert old.join(10)
        assert path.is_socket()  # the old one did not unlink its successor's socket
        assert QuoteClient(path).get_supported_att_key_id_num() == 1
    finally:
        old.stop()
        new.stop()
    assert not path.exists()


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_stop_leaves_a_successors_socket_alone(sock_dir: Path) -> None:
    path = sock_dir / "aesm.socket"
    d = start(path, path_check_interval=60.0)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = sock_dir / "other"
    other.bind(str(tmp))
    os.rename(tmp, path)  # someone else's socket now at the path; we have not noticed yet
    ino = path.stat().st_ino
    d.stop()
    assert path.exists() and path.stat().st_ino == ino
    other.close()


def test_stop_answers_in_flight_and_queued(sock_dir: Path) -> None:
    path = sock_dir / "aesm.socket"
    gate = threading.Event()
    d = start(path, FakeEngine(initialised=True, gate=gate))
    assert d.server is not None and d.loop is not None
    held = raw_connect(path)
    held.sendall(quote_frame(report(1)))
    while d.server.in_flight == 0:
        time.sleep(0.01)
    # block the loop so new connections stay in the kernel backlog, then ask for the stop
    blocked = threading.Event()

    def block() -> None:
        blocked.set()
        time.sleep(0.5)  # stands for a busy loop: new clients queue in the kernel backlog

    d.call(block)
    blocked.wait()
    queued = [raw_connect(path) for _ in range(5)]
    for i, s in enumerate(queued):
        s.sendall(quote_frame(report(100 + i)))
    d.request_stop("SIGTERM")
    gate.set()
    for s in [held, *queued]:
        resp = m.decode_response(read_frame(s) or b"")
        assert isinstance(resp, m.GetQuoteExResponse) and resp.error_code == AesmStatus.SUCCESS
        assert s.recv(1) == b""  # closed after answering, at shutdown
        s.close()
    assert d.join(10) and d.stop_reason == "SIGTERM"
    assert not path.exists()


def test_sigterm_in_a_real_process(sock_dir: Path) -> None:
    path = sock_dir / "aesm.socket"
    code = textwrap.dedent(
        f"""
        import logging, sys
        logging.basicConfig(level=logging.INFO)
        from pathlib import Path
        from sgx_quote_helper.server.config import ServerConfig
        from sgx_quote_helper.server.run import run_server
        from sgx_quote_helper.service import AesmService
        from sgx_quote_helper.testing.fakes import FakeEngine
        reason = run_server(AesmService(FakeEngine(initialised=True)), ServerConfig(socket_path=Path({str(path)!r})),
                            on_ready=lambda s: print("READY", flush=True))
        print("STOPPED", reason, flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        assert QuoteClient(path).get_quote_ex(report(3), buf_size=1456).quote == fake_quote(report(3))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "STOPPED signal SIGTERM" in out
    assert not path.exists()


def test_startup_warns_when_protobuf_is_not_upb(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from sgx_quote_helper.server import run

    monkeypatch.setattr(run, "protobuf_backend", lambda: "python")
    with caplog.at_level(logging.WARNING):
        warnings = run.check_environment()
    assert any("'upb'" in w for w in warnings)
    assert any("upb" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    monkeypatch.setattr(run, "protobuf_backend", lambda: "upb")
    assert not any("upb" in w for w in run.check_environment())


def test_libsgx_dcap_ql_sequence_byte_for_byte(sock_dir: Path) -> None:
    """What libsgx_dcap_ql (SGX_AESM_ADDR=1) sends through libsgx_quote_ex, one connection per
    call, and the exact bytes a conforming daemon must answer (FakeEngine's canned values)."""
    from .test_messages import bfield, vfield

    path = sock_dir / "aesm.socket"
    eng = FakeEngine()
    key = AttKeyId.ecdsa_p256_qe3().to_bytes()

    def call(body: bytes) -> bytes:
        with raw_connect(path) as s:
            s.sendall(len(body).to_bytes(4, "little"))  # prefix and body in two writes, as Intel's client
            s.sendall(body)
            out = read_frame(s)
        assert out is not None
        return out

    with start(path, eng):
        # size query with an uninitialised buf_size
        size_q = bfield(15, bfield(1, key) + vfield(3, 0) + vfield(4, 140393291379042) + vfield(9, 15000))
        assert call(size_q) == bfield(15, vfield(1, 0) + bfield(2, bytes(512)) + vfield(3, 32))
        init = bfield(15, bfield(1, key) + vfield(3, 1) + vfield(4, 32) + vfield(9, 15000))
        ti = eng.target_info.to_bytes()
        assert call(init) == bfield(
            15, vfield(1, 0) + bfield(2, ti) + vfield(3, 32) + bfield(4, eng.pub_key_id)
        )
        assert call(bfield(16, bfield(1, key) + vfield(9, 15000))) == bfield(
            16, vfield(1, 0) + vfield(2, 1456)
        )
        rep = report(77)
        get = bfield(17, bfield(1, rep.to_bytes()) + bfield(2, key) + vfield(4, 1456) + vfield(9, 15000))
        assert call(get) == bfield(17, vfield(1, 0) + bfield(2, fake_quote(rep)))
        # a report of the wrong size: errorCode 3 in a GetQuoteExResponse
        bad = bfield(17, bfield(1, rep.to_bytes()[:431]) + bfield(2, key) + vfield(4, 1456))
        assert call(bad) == bfield(17, vfield(1, 3))


def test_a_thousand_idle_connections_do_not_block_service(sock_dir: Path) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 2400:
        if hard != resource.RLIM_INFINITY and hard < 2400:
            pytest.skip("needs ~2,400 file descriptors (client and server ends in one process)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (2400, hard))
    path = sock_dir / "aesm.socket"
    conns: list[socket.socket] = []
    with start(path, idle_timeout=30.0, read_timeout=30.0) as d:
        try:
            for _ in range(1030):  # generous timeouts: a loaded 2-core CI machine accepts slowly
                conns.append(raw_connect(path, timeout=60.0))
            assert d.server is not None
            deadline = time.monotonic() + 60
            while len(d.server.connections) < 1030 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(d.server.connections) >= 1030
            client = QuoteClient(path, timeout=60.0)
            assert client.get_quote_ex(report(1), buf_size=1456).quote == fake_quote(report(1))
        finally:
            for c in conns:
                c.close()


def test_inline_policy_units() -> None:
    from sgx_quote_helper.server.connection import _timed
    from sgx_quote_helper.server.unix import AesmServer

    cfg = ServerConfig(socket_path=Path("/tmp/unused.sock"), inline_engine_below=0.0005)
    srv = AesmServer(AesmService(FakeEngine()), cfg)
    quote, init = m.GetQuoteExRequest(), m.InitQuoteExRequest()
    assert not srv.known_fast(quote)  # never measured: the engine thread first
    srv.record_cost(quote, 0.0001)
    srv.record_cost(init, 0.05)
    assert srv.known_fast(quote) and not srv.known_fast(init)
    srv.in_flight = 5  # fast requests in the engine thread do not force the thread
    assert srv.inline_ok(quote)
    srv.slow_in_flight = 1  # a slow one holds the engine lock: do not block the loop on it
    assert not srv.inline_ok(quote)
    for _ in range(30):  # the moving average follows an engine that became slow
        srv.record_cost(quote, 0.01)
    assert not srv.known_fast(quote)
    srv.executor.shutdown()

    class Sleeper:
        def handle(self, request: m.Request) -> None:
            time.sleep(0.03)  # an engine waiting on a device: little CPU, long wall time

    _, _, cost = _timed(Sleeper(), quote)  # type: ignore[arg-type]
    assert cost >= 0.03


def test_reply_written_in_one_piece(sock_dir: Path) -> None:
    """Open Enclave's legacy client reads the body with a single read(): prefix and body must be
    written together, so the first read after the socket turns readable has the whole frame."""
    import select

    path = sock_dir / "aesm.socket"
    with start(path), raw_connect(path) as s:
        for i in range(20):
            s.sendall(quote_frame(report(i), buf_size=5000))
            select.select([s], [], [], 5)
            data = s.recv(1 << 20)
            assert len(data) >= 4 and len(data) == 4 + int.from_bytes(data[:4], "little")


def test_client_that_never_reads_cannot_make_us_buffer_without_bound(sock_dir: Path) -> None:
    path = sock_dir / "aesm.socket"
    with start(path, idle_timeout=30.0, read_timeout=30.0) as d, raw_connect(path) as s:
        s.setblocking(False)
        frame = quote_frame(report(1), buf_size=8192)
        sent = 0
        stuck = 0
        while sent < 3000 and stuck < 50:  # stop when the kernel buffers are full both ways
            try:
                s.sendall(frame)
                sent += 1
                stuck = 0
            except BlockingIOError:
                stuck += 1
                time.sleep(0.01)  # give the server time to (not) read more
        assert d.server is not None
        (conn,) = d.server.connections
        assert conn.transport is not None
        assert sent < 3000  # the server stopped reading: our sends blocked
        assert conn.transport.get_write_buffer_size() < 1 << 20
        # and once we read, it carries on
        s.setblocking(True)
        s.settimeout(5)
        got = 0
        buf = b""
        while got < sent:
            buf += s.recv(1 << 20)
            while len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:4], "little"):
                buf = buf[4 + int.from_bytes(buf[:4], "little") :]
                got += 1
        assert got == sent
