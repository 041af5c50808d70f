"""The native Intel-pattern load generator (``bench quote --client intel --loadgen native``).

Built with ``cc`` and run against a real ``serve --engine simulated`` (a subprocess), against
sockets whose server misbehaves (garbage, an early close, an absurd length prefix: counted as
errors, never a crash or a hang), and under ``strace -f``: one native call is the same system
calls in the same order as the Python Intel-pattern client's (the expectations of
``tests/test_bench_intel.py``). No timing is asserted.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from sgx_quote_helper.benchmark import intel, native
from sgx_quote_helper.benchmark.daemon import DaemonProcess
from sgx_quote_helper.benchmark.loadgen import Progress, run_load
from sgx_quote_helper.benchmark.spec import LoadSpec
from sgx_quote_helper.benchmark.workload import Workload, prepare_workload
from sgx_quote_helper.cli.bench import bench
from sgx_quote_helper.errors import ConfigError
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.wire import messages as m
from sgx_quote_helper.wire.framing import HEADER

from ._aesm_helpers import short_dir
from .test_bench_intel import intel_sequence, reply_in_pieces_tail

needs_cc = pytest.mark.skipif(
    shutil.which("cc") is None, reason="no C compiler (`cc`): the native load generator cannot be built"
)
pytestmark = needs_cc


class Daemon:
    def __init__(self, root: Path) -> None:
        self.state = root / "plat"
        Platform.init(self.state)
        self.proc = DaemonProcess(root / "aesm.socket", self.state)
        self.socket = root / "aesm.socket"


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with short_dir() as root:
        d = Daemon(root)
        d.proc.start()
        try:
            yield d
        finally:
            d.proc.stop()


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Builds go to a temporary cache, not the user's."""
    import os

    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    try:
        yield Path(os.environ["XDG_CACHE_HOME"])
    finally:
        if old is None:
            del os.environ["XDG_CACHE_HOME"]
        else:
            os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="module")
def exe(cache: Path) -> Path:
    path = native.build()
    assert path.parent == cache / "sgx-quote-helper" and native.build() == path  # cached
    return path


def test_reply_check_covers_the_error_code_and_the_quote_length() -> None:
    ok = m.encode_response(m.GetQuoteExResponse(0, b"\x07" * 300))
    length, prefix = native.reply_check(ok)
    assert length == len(ok)
    busy = m.encode_response(m.GetQuoteExResponse(18, b"\x07" * 300))
    assert len(busy) == len(ok) and not busy.startswith(prefix)  # same size, another code: caught
    short = m.encode_response(m.GetQuoteExResponse(0, b"\x07" * 299))
    assert not short.startswith(prefix)  # another quote length: caught by the prefix too
    assert ok[len(prefix) :] == b"\x07" * 300  # only the quote itself is left unchecked
    with pytest.raises(ConfigError):
        native.reply_check(b"\x08\x00")  # not an envelope


def test_native_load_against_the_daemon(daemon: Daemon) -> None:
    for sequence in ("get-quote", "dcap-ql"):
        workload = prepare_workload(daemon.socket, "quote", state_dir=daemon.state, sequence=sequence)  # type: ignore[arg-type]
        spec = LoadSpec(
            str(daemon.socket), workload, clients=4, duration=1.0, warmup=0.2, style="intel", loadgen="native"
        )
        seen: list[tuple[int, int]] = []

        def on_progress(p: Progress, seen: list[tuple[int, int]] = seen) -> None:
            seen.append((p.ok, p.errors))

        result = run_load(spec, on_progress)
        out = result.to_dict()
        assert result.ok > 10 and result.errors == {}, out
        assert out["loadgen"] == "native" and out["event_loop"] == "epoll (native)"
        per = 4 if sequence == "dcap-ql" else 1  # a request's first calls may precede the window
        assert (result.ok - spec.clients) * per <= out["calls_in_window"] <= (result.ok + spec.clients) * per
        assert out["latency_us"]["count"] == result.ok
        lat = out["latency_us"]
        assert 0 < lat["min_us"] <= lat["p50_us"] <= lat["p90_us"] <= lat["p99_us"] <= lat["max_us"]
        assert out["load_generator_cpu_s"] > 0 and out["load_generator_cpu_us_per_request"] > 0
        assert seen and seen[-1][0] >= result.ok  # progress was reported (the warm-up counted too)


def test_a_fixed_number_of_requests(daemon: Daemon) -> None:
    workload = prepare_workload(daemon.socket, "size")
    spec = LoadSpec(
        str(daemon.socket),
        workload,
        clients=3,
        warmup=0.0,
        style="intel",
        loadgen="native",
        total_requests=25,
    )
    result = run_load(spec)
    assert result.ok == 25 and result.errors == {}


def _serve(path: str, answer: Callable[[socket.socket], None]) -> tuple[socket.socket, threading.Event]:
    """A server on ``path`` whose every connection gets ``answer`` (in a thread)."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(64)
    stop = threading.Event()

    def loop() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    answer(conn)

    threading.Thread(target=loop, daemon=True).start()
    return srv, stop


def _read_request(conn: socket.socket) -> bytes:
    buf = b""
    while len(buf) < 4 or len(buf) < 4 + HEADER.unpack(buf[:4])[0]:
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def _busy(conn: socket.socket) -> None:
    _read_request(conn)
    body = m.encode_response(m.GetQuoteSizeExResponse(18, 0))  # AESM_BUSY
    conn.sendall(HEADER.pack(len(body)) + body)


def _garbage(conn: socket.socket) -> None:
    _read_request(conn)
    conn.sendall(HEADER.pack(20) + b"\xff" * 20)


def _close(conn: socket.socket) -> None:
    _read_request(conn)


def _huge(conn: socket.socket) -> None:
    _read_request(conn)
    conn.sendall(HEADER.pack(64 << 20))


def _half(conn: socket.socket) -> None:
    _read_request(conn)
    conn.sendall(HEADER.pack(100) + b"\x00" * 10)  # then the server closes: EOF mid-body


@pytest.mark.parametrize(
    ("answer", "label", "first_bad"),
    [
        (_busy, "bad_response", "BUSY(18)"),
        (_garbage, "bad_response", "bad_response"),
        (_close, "transport", None),
        (_huge, "bad_length", None),
        (_half, "transport", None),
    ],
)
def test_bad_services_are_counted_as_errors(
    daemon: Daemon, answer: Callable[[socket.socket], None], label: str, first_bad: str | None
) -> None:
    workload: Workload = prepare_workload(daemon.socket, "size")
    calls = native.calls_file(LoadSpec(str(daemon.socket), workload, style="intel", loadgen="native"))
    with short_dir() as root:
        path = str(root / "bad.socket")
        srv, stop = _serve(path, answer)
        try:
            # the calls file was made against the real daemon; the run goes to the bad one
            spec = LoadSpec(
                path,
                workload,
                clients=4,
                duration=0.5,
                warmup=0.0,
                style="intel",
                loadgen="native",
                grace=2.0,
            )
            out = _run_with_calls(spec, calls)
        finally:
            stop.set()
            srv.close()
    assert out["counts"].get("ok", 0) == 0
    assert out["counts"].get(label, 0) > 0 and set(out["counts"]) == {label}, out
    assert out.get("first_bad_response") == first_bad


def _run_with_calls(spec: LoadSpec, calls: bytes) -> dict[str, object]:
    """:func:`native.run_native` with a calls file made elsewhere (the set-up call would fail here)."""
    original = native.calls_file
    native.calls_file = lambda _spec: calls  # type: ignore[assignment]
    try:
        return native.run_native(spec)
    finally:
        native.calls_file = original  # type: ignore[assignment]


def test_a_service_that_never_answers_ends_in_timeouts(daemon: Daemon, exe: Path) -> None:
    """Accepted by the backlog, never answered: the run still ends, each client counted."""
    workload = prepare_workload(daemon.socket, "size")
    calls = native.calls_file(LoadSpec(str(daemon.socket), workload, style="intel", loadgen="native"))
    with short_dir() as root:
        path = str(root / "silent.socket")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(16)
        try:
            spec = LoadSpec(
                path,
                workload,
                clients=3,
                duration=0.2,
                warmup=0.0,
                style="intel",
                loadgen="native",
                grace=0.3,
            )
            out = _run_with_calls(spec, calls)
        finally:
            srv.close()
    assert out["counts"] == {"timeout": 3}


def test_no_compiler_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, daemon: Daemon) -> None:
    monkeypatch.setenv("CC", "no-such-cc-here")
    with pytest.raises(native.NativeUnavailable, match="no-such-cc-here"):
        native.build()
    monkeypatch.setenv("CC", "")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(native.NativeUnavailable, match="`cc`"):
        native.compiler()
    result = CliRunner().invoke(
        bench,
        ["quote", "--socket", str(daemon.socket), "--request", "size", "--client", "intel",
         "--loadgen", "native", "--duration", "0.2", "--json"],
    )  # fmt: skip
    assert result.exit_code == 2 and "`cc`" in result.output


def test_native_needs_the_intel_client(daemon: Daemon) -> None:
    result = CliRunner().invoke(
        bench,
        ["quote", "--socket", str(daemon.socket), "--request", "size", "--loadgen", "native"],
    )
    assert result.exit_code == 2 and "--client intel" in result.output


def test_cli_runs_the_native_generator(daemon: Daemon) -> None:
    import json

    result = CliRunner().invoke(
        bench,
        ["quote", "--socket", str(daemon.socket), "--state-dir", str(daemon.state), "--client",
         "intel", "--loadgen", "native", "--clients", "2", "--duration", "0.3", "--warmup", "0", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["loadgen"] == "native" and out["ok"] > 0 and out["errors"] == {}


# -- strace: one native call is Intel's sequence ------------------------------------------------


def _tokens(trace: str) -> list[str]:
    """The first call's system calls from ``strace -f`` output, as test_bench_intel's tokens."""
    master = ep = sock = -1
    pipe: tuple[int, int] = (-1, -1)
    out: list[str] = []

    def what(fd: int) -> str:
        return "sock" if fd == sock else "pipe" if fd in pipe else f"fd{fd}"

    for raw in trace.splitlines():
        line = re.sub(r"^(\[pid\s+\d+\]|\d+)\s+", "", raw)
        mm = re.match(r"(\w+)\((.*)\)\s+=\s+(-?\d+|0x[0-9a-f]+)(.*)$", line)
        if not mm:
            continue
        name, args, ret, tail = mm.groups()
        first = args.split(",", 1)[0].strip()
        fd = int(first) if first.isdigit() else -1
        if name == "epoll_create1":
            if master < 0:
                master = int(ret)
            elif ep < 0:
                ep = int(ret)
                out.append("epoll_create")
        elif ep < 0:
            continue
        elif name == "pipe2" and pipe == (-1, -1):
            a, b = re.findall(r"\d+", args)[:2]
            pipe = (int(a), int(b))
            out.append("pipe")
        elif name in ("epoll_ctl",) and fd == ep:
            parts = [p.strip() for p in args.split(",")]
            op = parts[1].removeprefix("EPOLL_CTL_")
            events = re.search(r"events=([A-Z|]+)", args)
            names = events.group(1).split("|") if events else []
            mask = "|".join(
                [n for n in ("IN", "OUT") if f"EPOLL{n}" in names] + (["ET"] if "EPOLLET" in names else [])
            )
            out.append(f"epoll_ctl({op},{what(int(parts[2]))},{mask})")
        elif name == "socket" and "AF_UNIX" in args and sock < 0:
            sock = int(ret)
            out.append("socket(AF_UNIX,SOCK_STREAM)")
        elif name == "connect" and fd == sock:
            out.append("connect")
        elif name == "fcntl" and fd == sock:
            out.append("fcntl(F_GETFL)" if "F_GETFL" in args else "fcntl(F_SETFL,O_NONBLOCK)")
            if "F_SETFL" in args:
                assert "O_NONBLOCK" in args
        elif name in ("write", "read") and fd == sock:
            size = args.rsplit(",", 1)[-1].strip()
            result = "EAGAIN" if ret == "-1" and "EAGAIN" in tail else ret
            out.append(f"{name}({size})={result}")
        elif name in ("epoll_wait", "epoll_pwait") and fd == ep:
            parts = [p.strip() for p in args.rsplit(",", 2 if name == "epoll_wait" else 4)]
            assert int(parts[1]) == 12  # MAX_EVENTS
            out.append("epoll_wait")
        elif name == "close" and fd in (ep, sock, *pipe):
            out.append({ep: "close(epoll)", sock: "close(socket)"}.get(fd, "close(pipe)"))
            if fd == sock:
                break
    return out


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_strace_of_one_native_call_is_intels_sequence(daemon: Daemon, exe: Path, tmp_path: Path) -> None:
    workload = prepare_workload(daemon.socket, "key-ids")
    calls = tmp_path / "calls.bin"
    calls.write_bytes(
        native.calls_file(LoadSpec(str(daemon.socket), workload, style="intel", loadgen="native"))
    )
    trace = tmp_path / "trace.txt"
    proc = subprocess.run(
        ["strace", "-f", "-o", str(trace), "-e",
         "trace=epoll_create1,pipe2,epoll_ctl,socket,connect,fcntl,write,read,epoll_wait,epoll_pwait,close",
         str(exe), str(daemon.socket), str(calls), "1", "1", "0", "5", "1", "-"],
        input=b"go\n", capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    if proc.returncode != 0 and b"ptrace" in proc.stderr:
        pytest.skip(f"strace cannot trace here: {proc.stderr.decode(errors='replace').strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    assert b'"counts": {"ok": 1}' in proc.stdout
    log = _tokens(trace.read_text())
    if "read(4)=EAGAIN" not in log:  # the reply was already there: a direct read, no epoll_wait
        i = log.index("read(4)=4")
        log = [*log[:i], "read(4)=EAGAIN", "epoll_wait", *log[i:]]
    reply = intel.call_blocking(str(daemon.socket), workload.body)
    expected = [
        "epoll_wait" if t.startswith("epoll_wait") else t
        for t in intel_sequence(len(workload.body), len(reply))
    ]
    assert log == expected


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_strace_reply_in_pieces_is_read_in_512_byte_chunks(exe: Path, tmp_path: Path) -> None:
    """The body arrives after the length: epoll_wait, then partialRead's reads of at most 512 bytes
    (test_bench_intel's test of the same name, for the Python client)."""
    import struct
    import time

    reply = bytes(range(256)) * 5  # 1280 bytes; no prefix asked: the length is the check
    body = b"\x01\x02"
    calls = tmp_path / "calls.bin"
    calls.write_bytes(struct.pack(">I", 1) + HEADER.pack(len(body)) + struct.pack(">I", 2) + body
                      + struct.pack(">II", len(reply), 0))  # fmt: skip

    def slow(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(HEADER.pack(len(reply)))
        time.sleep(0.3)
        conn.sendall(reply)
        time.sleep(0.1)

    with short_dir() as root:
        path = str(root / "slow.socket")
        srv, stop = _serve(path, slow)
        trace = tmp_path / "trace.txt"
        try:
            proc = subprocess.run(
                ["strace", "-f", "-o", str(trace), "-e",
                 "trace=epoll_create1,pipe2,epoll_ctl,socket,connect,fcntl,write,read,epoll_wait,epoll_pwait,close",
                 str(exe), path, str(calls), "1", "1", "0", "5", "1", "-"],
                input=b"go\n", capture_output=True, timeout=60, check=False,
            )  # fmt: skip
        finally:
            stop.set()
            srv.close()
    if proc.returncode != 0 and b"ptrace" in proc.stderr:
        pytest.skip(f"strace cannot trace here: {proc.stderr.decode(errors='replace').strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    assert b'"counts": {"ok": 1}' in proc.stdout
    log = _tokens(trace.read_text())
    assert log[log.index("read(4)=4") :] == reply_in_pieces_tail("epoll_wait")
