"""The Intel-pattern client (``bench quote --client intel``) makes Intel's system calls, in Intel's order.

The reference sequence is read from ``intel/linux-sgx: psw/ae/aesm_service/source/core/ipc/``
(``SocketTransporter::transact``, ``NonBlockingUnixCommunicationSocket::init/writeRaw/readRaw/
partialRead`` and its destructor; ``shared/specs/aesm-protocol.md`` §2). Two checks: a recording
:class:`Syscalls` wrapper driven step by step against a listening socket the test serves by hand
(deterministic: the reply is sent only once the client waits in ``epoll_wait``), and strace of a
real process (slow). No timing is asserted.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sgx_quote_helper.abi.codes import AesmStatus
from sgx_quote_helper.benchmark import intel
from sgx_quote_helper.benchmark.loadgen import run_load
from sgx_quote_helper.benchmark.spec import LoadSpec
from sgx_quote_helper.benchmark.workload import DCAP_QL_GARBAGE_BUF_SIZE, prepare_workload
from sgx_quote_helper.engine.simulated import SimulatedEngine
from sgx_quote_helper.errors import ConfigError
from sgx_quote_helper.server.config import ServerConfig
from sgx_quote_helper.service import AesmService
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.testing.daemon import ServerThread
from sgx_quote_helper.wire import messages as m
from sgx_quote_helper.wire.framing import HEADER

from ._aesm_helpers import short_dir

ET, IN, OUT = select.EPOLLET, select.EPOLLIN, select.EPOLLOUT


class Recording(intel.Syscalls):
    """The real system calls, each recorded as a short token."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def epoll_create(self) -> select.epoll:
        self.log.append("epoll_create")
        return super().epoll_create()

    def pipe(self) -> tuple[int, int]:
        self.log.append("pipe")
        return super().pipe()

    def epoll_ctl_add(self, ep: select.epoll, fd: int, events: int) -> None:
        self.log.append(f"epoll_ctl(ADD,{self._what(fd)},{_mask(events)})")
        super().epoll_ctl_add(ep, fd, events)

    def epoll_ctl_mod(self, ep: select.epoll, fd: int, events: int) -> None:
        self.log.append(f"epoll_ctl(MOD,{self._what(fd)},{_mask(events)})")
        super().epoll_ctl_mod(ep, fd, events)

    def epoll_wait(self, ep: select.epoll, timeout_ms: int) -> list[tuple[int, int]]:
        self.log.append(f"epoll_wait({timeout_ms})")
        return super().epoll_wait(ep, timeout_ms)

    def socket(self) -> socket.socket:
        self.sock = super().socket()
        self.log.append("socket(AF_UNIX,SOCK_STREAM)")
        return self.sock

    def connect(self, sock: socket.socket, path: str) -> None:
        self.log.append("connect")
        super().connect(sock, path)

    def fcntl_getfl(self, fd: int) -> int:
        self.log.append("fcntl(F_GETFL)")
        return super().fcntl_getfl(fd)

    def fcntl_setfl(self, fd: int, flags: int) -> None:
        assert flags & os.O_NONBLOCK
        self.log.append("fcntl(F_SETFL,O_NONBLOCK)")
        super().fcntl_setfl(fd, flags)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        n = super().write(fd, data)
        self.log.append(f"write({len(data)})={n}")
        return n

    def read(self, fd: int, n: int) -> bytes:
        try:
            data = super().read(fd, n)
        except BlockingIOError:
            self.log.append(f"read({n})=EAGAIN")
            raise
        self.log.append(f"read({n})={len(data)}")
        return data

    def close(self, fd: int) -> None:
        self.log.append("close(pipe)")
        super().close(fd)

    def close_epoll(self, ep: select.epoll) -> None:
        self.log.append("close(epoll)")
        super().close_epoll(ep)

    def close_socket(self, sock: socket.socket) -> None:
        self.log.append("close(socket)")
        super().close_socket(sock)

    def _what(self, fd: int) -> str:
        return "sock" if getattr(self, "sock", None) is not None and fd == self.sock.fileno() else "pipe"


def _mask(events: int) -> str:
    names = [n for n, bit in (("IN", IN), ("OUT", OUT)) if events & bit]
    return "|".join([*names, "ET"]) if events & ET else "|".join(names)


def reply_in_pieces_tail(epoll_wait: str) -> list[str]:
    """Intel's client from the length read on, when the 1,280-byte body arrives only after it
    waits: a direct read that finds nothing, epoll_wait, then partialRead's 512-byte reads."""
    return [
        "read(4)=4",
        "epoll_ctl(MOD,sock,ET)",
        # readRaw(size): direct read, EAGAIN, epoll_wait, partialRead in chunks of 512
        "epoll_ctl(MOD,sock,IN|ET)",
        "read(1280)=EAGAIN",
        epoll_wait,
        "read(512)=512",
        "read(512)=512",
        "read(256)=256",
        "epoll_ctl(MOD,sock,ET)",
        "close(epoll)",
        "close(pipe)",
        "close(pipe)",
        "close(socket)",
    ]


def intel_sequence(request_len: int, reply_len: int) -> list[str]:
    """What Intel's client does for one call whose reply arrives while it waits (the usual case
    under load): read from Intel's source, step by step."""
    return [
        # NonBlockingUnixCommunicationSocket::init
        "epoll_create",
        "pipe",
        "epoll_ctl(ADD,pipe,IN|ET)",
        "socket(AF_UNIX,SOCK_STREAM)",
        "connect",
        "epoll_ctl(ADD,sock,ET)",
        "fcntl(F_GETFL)",
        "fcntl(F_SETFL,O_NONBLOCK)",
        # sendMessage: writeRaw(&size, 4), then writeRaw(data, size)
        "write(4)=4",
        "epoll_ctl(MOD,sock,ET)",
        "epoll_ctl(MOD,sock,ET)",
        f"write({request_len})={request_len}",
        "epoll_ctl(MOD,sock,ET)",
        "epoll_ctl(MOD,sock,ET)",
        # receiveMessage: readRaw(4): direct read, EAGAIN, epoll_wait, partialRead
        "epoll_ctl(MOD,sock,IN|ET)",
        "read(4)=EAGAIN",
        "epoll_wait(15000)",
        "read(4)=4",
        "epoll_ctl(MOD,sock,ET)",
        # readRaw(size): the whole body is there, one direct read
        "epoll_ctl(MOD,sock,IN|ET)",
        f"read({reply_len})={reply_len}",
        "epoll_ctl(MOD,sock,ET)",
        # delete communicationSocket: ~NonBlocking... closes epoll and the pipe, then the socket
        "close(epoll)",
        "close(pipe)",
        "close(pipe)",
        "close(socket)",
    ]


@pytest.fixture
def listener() -> Iterator[tuple[str, socket.socket]]:
    with short_dir() as root:
        path = str(root / "aesm.socket")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(4)
        try:
            yield path, srv
        finally:
            srv.close()


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        assert chunk, "the client closed early"
        buf += chunk
    return buf


def test_one_call_is_intels_syscall_sequence(listener: tuple[str, socket.socket]) -> None:
    path, srv = listener
    rec = Recording()
    body = m.encode_request(m.GetSupportedAttKeyIDNumRequest(15000))
    reply = m.encode_response(m.GetSupportedAttKeyIDNumResponse(AesmStatus.SUCCESS, 1))
    call = intel.transact(path, body, sys=rec)
    wait = next(call)  # connected (the backlog holds it), both writes done, waiting for the length
    assert isinstance(wait, intel.Wait) and wait.timeout_ms == 15000
    conn, _ = srv.accept()
    with conn:
        assert _recv_exactly(conn, 4) == HEADER.pack(len(body))
        assert _recv_exactly(conn, len(body)) == body
        conn.sendall(HEADER.pack(len(reply)) + reply)
    with pytest.raises(StopIteration) as done:
        call.send(rec.epoll_wait(wait.ep, 15000))
    assert done.value.value == reply
    assert rec.log == intel_sequence(len(body), len(reply))


def test_reply_in_pieces_is_read_in_512_byte_chunks(listener: tuple[str, socket.socket]) -> None:
    path, srv = listener
    rec = Recording()
    reply = bytes(range(256)) * 5  # 1280 bytes: the body arrives only after the length
    call = intel.transact(path, b"\x01\x02", sys=rec)
    wait = next(call)
    conn, _ = srv.accept()
    with conn:
        _recv_exactly(conn, 6)
        conn.sendall(HEADER.pack(len(reply)))
        wait = call.send(rec.epoll_wait(wait.ep, 1000))  # length read; the body is not there yet
        conn.sendall(reply)
    with pytest.raises(StopIteration) as done:
        call.send(rec.epoll_wait(wait.ep, 1000))
    assert done.value.value == reply
    tail = rec.log[rec.log.index("read(4)=4") :]
    assert tail == reply_in_pieces_tail("epoll_wait(1000)")


def test_failures_map_to_intels_statuses(listener: tuple[str, socket.socket], tmp_path: Path) -> None:
    with pytest.raises(intel.ServiceUnavailable):
        intel.call_blocking(str(tmp_path / "absent.sock"), b"\x00")
    path, srv = listener
    call = intel.transact(path, b"\x00\x01", sys=Recording())
    wait = next(call)
    conn, _ = srv.accept()
    conn.close()  # EOF before any reply byte
    with pytest.raises(intel.Unexpected):
        while True:
            wait = call.send(intel.SYSCALLS.epoll_wait(wait.ep, 1000))
    rec = Recording()
    with pytest.raises(intel.ServiceTimeout):
        intel.call_blocking(path, b"\x00\x01", timeout_ms=100, sys=rec)  # accepted by nobody
    assert rec.log[-4:] == ["close(socket)", "close(epoll)", "close(pipe)", "close(pipe)"]
    srv.accept()[0].close()


class Served:
    def __init__(self, root: Path) -> None:
        self.state = root / "plat"
        self.socket = root / "aesm.socket"
        self.platform = Platform.init(self.state)
        self.thread = ServerThread(
            AesmService(SimulatedEngine(self.platform)), ServerConfig(socket_path=self.socket)
        )


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with short_dir() as root:
        s = Served(root)
        with s.thread:
            yield s


def test_against_the_daemon_every_call_follows_the_sequence(served: Served) -> None:
    workload = prepare_workload(served.socket, "quote", state_dir=served.state, sequence="dcap-ql")
    assert workload.sequence == "dcap-ql" and len(workload.prelude) == 3
    size_query = m.decode_request(workload.prelude[0][0])
    assert isinstance(size_query, m.InitQuoteExRequest)
    assert not size_query.b_pub_key_id and size_query.buf_size == DCAP_QL_GARBAGE_BUF_SIZE
    for body, judge in [*workload.prelude, (workload.body, workload.judge)]:
        rec = Recording()
        reply = intel.call_blocking(str(served.socket), body, sys=rec)
        assert judge(reply) == "ok"
        log = rec.log
        if "read(4)=EAGAIN" not in log:  # the reply was already there: a direct read, no epoll_wait
            i = log.index("read(4)=4")
            log = [*log[:i], "read(4)=EAGAIN", "epoll_wait(15000)", *log[i:]]
        assert log == intel_sequence(len(body), len(reply))


def test_load_with_intel_clients(served: Served) -> None:
    for sequence in ("get-quote", "dcap-ql"):
        workload = prepare_workload(served.socket, "quote", state_dir=served.state, sequence=sequence)  # type: ignore[arg-type]
        result = run_load(
            LoadSpec(str(served.socket), workload, clients=3, warmup=0.0, style="intel", total_requests=30)
        )
        assert result.ok == 30 and result.errors == {}
        out = result.to_dict()
        assert out["style"] == "intel" and out["sequence"] == sequence
        assert out["calls_per_request"] == (4 if sequence == "dcap-ql" else 1)


def test_the_sequence_needs_a_get_quote(served: Served) -> None:
    with pytest.raises(ConfigError, match="dcap-ql"):
        prepare_workload(served.socket, "size", sequence="dcap-ql")


def _strace_calls(output: str, fd: int) -> list[str]:
    """The socket's own calls from strace's lines, as tokens."""
    calls: list[str] = []
    for line in output.splitlines():
        line = re.sub(r"^(\[pid\s+\d+\]|\d+)\s+", "", line)
        mm = re.match(r"(\w+)\((\d+)(.*)\)\s+=\s+(-?\d+|\?)", line)
        if not mm or int(mm.group(2)) != fd:
            continue
        name, rest, ret = mm.group(1), mm.group(3), mm.group(4)
        if name in ("write", "read"):
            size = rest.rsplit(",", 1)[-1].strip()
            calls.append(f"{name}({size})={ret}")
        elif name in ("connect", "close"):
            calls.append(name)
    return calls


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_strace_of_a_real_call(served: Served, tmp_path: Path) -> None:
    script = tmp_path / "one.py"
    script.write_text(
        "import sys\n"
        "from sgx_quote_helper.benchmark import intel\n"
        "from sgx_quote_helper.wire import messages as m\n"
        "body = m.encode_request(m.GetSupportedAttKeyIDNumRequest(15000))\n"
        "print('FD', intel.call_blocking(sys.argv[1], body).hex(), flush=True)\n"
    )
    trace = tmp_path / "trace.txt"
    proc = subprocess.run(
        ["strace", "-f", "-o", str(trace), "-e", "trace=network,read,write,close",
         sys.executable, str(script), str(served.socket)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if proc.returncode != 0 and "ptrace" in proc.stderr:
        pytest.skip(f"strace cannot trace here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    text = trace.read_text()
    sock_lines = [ln for ln in text.splitlines() if "socket(AF_UNIX, SOCK_STREAM" in ln]
    fd = int(sock_lines[-1].rsplit("=", 1)[1])
    calls = _strace_calls(text[text.index(sock_lines[-1]) :], fd)
    body_len = len(m.encode_request(m.GetSupportedAttKeyIDNumRequest(15000)))
    reply_len = len(m.encode_response(m.GetSupportedAttKeyIDNumResponse(AesmStatus.SUCCESS, 1)))
    reads = [c for c in calls if c.startswith("read(")]
    assert calls[:4] == ["connect", "write(4)=4", f"write({body_len})={body_len}", reads[0]]
    assert [c for c in reads if not c.endswith("=-1")] == ["read(4)=4", f"read({reply_len})={reply_len}"]
    assert all(c == "read(4)=-1" for c in reads if c.endswith("=-1"))  # EAGAIN only before the length
    assert calls[-1] == "close"


def test_intel_clients_of_a_silent_service_end_as_timeouts(
    served: Served, listener: tuple[str, socket.socket]
) -> None:
    """A service that accepts (the backlog) and never answers: every client is still waiting at the
    end of the grace period, and each is counted as a timeout with its descriptors closed."""
    import gc
    import time

    from sgx_quote_helper.benchmark.worker import _IntelWorker

    path, _srv = listener
    workload = prepare_workload(served.socket, "quote", state_dir=served.state)
    spec = LoadSpec(path, workload, clients=3, duration=0.2, warmup=0.0, style="intel", grace=0.3)

    class Pipe:
        def __init__(self) -> None:
            self.sent: list[tuple[object, ...]] = []

        def send(self, msg: tuple[object, ...]) -> None:
            self.sent.append(msg)

    gc.collect()  # a socket of an earlier client left to the garbage collector must not close mid-count
    # the daemon thread closes its end of prepare_workload's connection when it gets to it: wait
    # for that, or the count below moves for a reason that is not the worker's
    daemon = served.thread.server
    deadline = time.monotonic() + 10
    while daemon is not None and daemon.connections and time.monotonic() < deadline:
        time.sleep(0.01)
    fds_before = len(os.listdir("/proc/self/fd"))
    pipe = Pipe()
    worker = _IntelWorker(spec, 3, None, time.monotonic_ns(), pipe)  # type: ignore[arg-type]
    worker.run()
    assert dict(worker.counts) == {"timeout": 3}
    assert len(os.listdir("/proc/self/fd")) <= fds_before  # every call's epoll, pipe and socket closed
    assert pipe.sent and all(msg[0] == "progress" for msg in pipe.sent)
    result = run_load(
        LoadSpec(path, workload, clients=2, duration=0.2, warmup=0.0, style="intel", grace=0.3, processes=1)
    )
    assert result.ok == 0 and result.errors == {"timeout": 2}
