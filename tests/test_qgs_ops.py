"""The QGS service's operations, shared with the AESM daemon (server/lifecycle.py, gate.py,
admission.py, metrics.py): takeover without a gap and truthful readiness, the handover window,
standby under a newer instance, the impostor put back with an ALERT, metrics, the BUSY-equivalent
under the in-flight cap, the per-uid cap, the deadline, JSON request lines, and the probe itself.
Every server here is real, on a Unix socket under a temporary directory."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sgx_quote_helper.abi import qgs as q
from sgx_quote_helper.cli import cli
from sgx_quote_helper.cli._logs import JsonFormatter
from sgx_quote_helper.engine.tdx_simulated import SimulatedTdxEngine
from sgx_quote_helper.qgs_service import QgsService
from sgx_quote_helper.server.qgs import QgsConfig, QgsListener, QgsServer
from sgx_quote_helper.server.socketpath import PathState, probe_path, probe_qgs_path
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.sim.tdx_module import TdxModule
from sgx_quote_helper.testing.pods import namespaces_available
from sgx_quote_helper.testing.restart import QgsLoad, check_td_quote, run_rollout
from sgx_quote_helper.wire.qgs import QgsServerConnection, encode_frame, probe_request

from ._aesm_helpers import short_dir


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Platform:
    return Platform.init(tmp_path_factory.mktemp("qgsops") / "p")


@pytest.fixture
def root() -> Iterator[Path]:
    with short_dir() as d:
        yield d


class Running:
    """A QgsServer on its own event loop thread; ``reason`` once it stopped."""

    def __init__(self, server: QgsServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.reason: str | None = None
        self.failure: BaseException | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        try:
            await self.server.start()
        except BaseException as exc:
            self.failure = exc
            return
        finally:
            self._ready.set()
        self.reason = await self.server.serve_until_stopped()

    def start(self) -> Running:
        self.thread.start()
        assert self._ready.wait(30)
        if self.failure is not None:
            raise self.failure
        return self

    def call(self, fn: Any, *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        if self.thread.is_alive():
            self.call(self.server.request_stop, "test over")
            self.thread.join(120)  # generous: the machine may be loaded
        assert not self.thread.is_alive(), "the server did not stop"
        self.loop.close()


def make_server(
    platform: Platform,
    path: Path | None,
    *,
    instance: str = "aaaa",
    started: int = 1,
    service: QgsService | None = None,
    listener: dict[str, Any] | None = None,
    **kw: Any,
) -> QgsServer:
    svc = service or QgsService(
        SimulatedTdxEngine(platform),
        version="test",
        instance_id=instance,
        pid=os.getpid(),
        started_ns=started,
    )
    kw.setdefault("path_check_interval", 0.1)
    return QgsServer(svc, QgsConfig(listeners=(QgsListener(path=path, **(listener or {})),), **kw))


@contextmanager
def running(server: QgsServer) -> Iterator[Running]:
    r = Running(server).start()
    try:
        yield r
    finally:
        r.stop()


def exchange(path: Path, data: bytes, timeout: float = 20) -> bytes:
    """Send ``data``, read until the server closes (a server that closed at once: ``b""``)."""
    out = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            s.sendall(data)
            while chunk := s.recv(65536):
                out += chunk
    return out


def quote_frame(platform: Platform, data: bytes = b"ops") -> bytes:
    return encode_frame(q.GetQuoteRequest(TdxModule.open(platform).report(data).to_bytes()).to_bytes())


def wait_for(cond: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def healthcheck(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["qgs", "healthcheck", *args])
    return res.exit_code, res.output + (res.stderr if res.stderr_bytes is not None else "")


def test_probe_on_our_socket_and_on_a_program_that_closes(platform: Platform, root: Path) -> None:
    path = root / "qgs.socket"
    # the probe is answered on a listener that allows GET_QUOTE only and no raw mode
    server = make_server(platform, path, listener={"allowed": frozenset({0}), "allow_raw": False})
    with running(server):
        found = probe_qgs_path(path, 5)
        assert (
            found.state is PathState.OURS and found.instance_id == "aaaa" and found.owner_state == "serving"
        )
        assert found.pid == os.getpid() and found.version == "test"
    other = root / "intel.socket"  # Intel's qgsd reads our probe as raw mode and closes on our EOF
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(str(other))
    lsock.listen(4)

    def qgsd() -> None:  # reads until our EOF (a raw TDREPORT cut short), closes without a word
        c = lsock.accept()[0]
        while c.recv(4096):
            pass
        c.close()

    t = threading.Thread(target=qgsd, daemon=True)
    t.start()
    try:
        found = probe_qgs_path(other, 5)
    finally:
        lsock.close()
    assert found.state is PathState.FOREIGN and "as Intel's qgsd does" in found.detail


def test_a_near_miss_of_the_probe_is_raw_mode_as_intel() -> None:
    almost = bytearray(probe_request())
    almost[-2] ^= 1
    conn = QgsServerConnection(0.0)
    conn.receive_data(bytes(almost) + bytes(1024 - len(almost)))
    event = conn.next_event()
    assert type(event).__name__ == "RawReportReceived"


def test_takeover_without_gap_and_truthful_readiness(platform: Platform, root: Path) -> None:
    path, pa, pb = root / "qgs.socket", root / "a", root / "b"
    a = make_server(platform, path, instance="aaaa", started=1, private_dir=pa)
    with running(a) as ra:
        # before the successor serves: its readiness names the instance that still serves the path
        code, out = healthcheck("--socket", str(path), "--ready", "--private-dir", str(pb), "--timeout", "2")
        assert code == 1 and f"the path {path} is still served by instance aaaa" in out, out
        code, out = healthcheck("--socket", str(path), "--ready", "--private-dir", str(pa))
        assert code == 0 and "ready:" in out and "aaaa" in out, out
        load = QgsLoad(path, platform.state.path, 4)
        load.start()
        try:
            time.sleep(0.3)
            b = make_server(platform, path, instance="bbbb", started=2, private_dir=pb)
            with running(b):
                wait_for(lambda: a.state == "handed-over")
                time.sleep(0.3)  # clients keep quoting through the successor
                load.stop()
                assert b.state == "serving" and probe_qgs_path(path).instance_id == "bbbb"
                code, out = healthcheck("--socket", str(path), "--ready", "--private-dir", str(pb))
                assert code == 0 and "bbbb" in out, out
                code, out = healthcheck("--socket", str(path), "--ready", "--private-dir", str(pa))
                assert code == 1 and "handed-over" in out, out
                # the drained one still quotes through its private socket (liveness passes)
                code, out = healthcheck(
                    "--quote", "--private-dir", str(pa), "--state-dir", str(platform.state.path)
                )
                assert code == 0 and "signature and report checked" in out, out
        finally:
            load.stop()
    total = load.stats
    assert sum(s.failed for s in total) == 0, [e for s in total for e in s.errors]
    assert sum(s.bad_quotes for s in total) == 0
    assert sum(s.ok for s in total) > 0
    assert ra.reason == "test over"  # handed over, it stayed up until stopped


def test_handover_window_serves_until_a_successor_takes_over(platform: Platform, root: Path) -> None:
    path = root / "qgs.socket"
    a = make_server(platform, path, instance="aaaa", started=1, private_dir=root / "a", handover_window=30)
    ra = Running(a).start()
    try:
        ra.call(a.terminate, "signal SIGTERM")
        wait_for(lambda: a.state == "terminating")
        reply = exchange(path, quote_frame(platform, b"window"))  # still serving the path
        assert check_td_quote(q.GetQuoteResponse.from_bytes(reply[4:]).quote, b"window", {}) is None
        b = make_server(platform, path, instance="bbbb", started=2, private_dir=root / "b")
        with running(b):
            ra.thread.join(20)
            assert not ra.thread.is_alive()
            assert ra.reason == "signal SIGTERM (handed over)"
            assert path.exists() and probe_qgs_path(path).instance_id == "bbbb"  # not unlinked
    finally:
        ra.stop()


def test_an_older_instance_stands_by_under_a_newer_one(platform: Platform, root: Path) -> None:
    path = root / "qgs.socket"
    new = make_server(platform, path, instance="nnnn", started=5, private_dir=root / "n")
    old = make_server(platform, path, instance="oooo", started=3, private_dir=root / "o")
    with running(new), running(old):
        assert old.state == "standby"
        assert probe_qgs_path(path).instance_id == "nnnn"
        code, out = healthcheck("--socket", str(path), "--ready", "--private-dir", str(root / "o"))
        assert code == 1 and "standby" in out, out


def test_an_impostor_is_replaced_and_named_in_an_alert(
    platform: Platform, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = root / "qgs.socket"
    a = make_server(platform, path)
    with caplog.at_level(logging.ERROR, logger="sgx_quote_helper.server.qgs"), running(a):
        tmp = root / ".impostor"
        imp = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        imp.bind(str(tmp))
        imp.listen(8)
        stop = threading.Event()

        def close_all() -> None:  # a program that closes on anything (as Intel's qgsd on our probe)
            imp.settimeout(0.1)
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    imp.accept()[0].close()

        t = threading.Thread(target=close_all, daemon=True)
        t.start()
        try:
            os.rename(tmp, path)
            wait_for(lambda: probe_qgs_path(path, 2).state is PathState.OURS)
        finally:
            stop.set()
            t.join(5)
            imp.close()
        assert a.state == "serving"
        assert exchange(path, quote_frame(platform))[4:8]  # our socket answers again
    alerts = [r.getMessage() for r in caplog.records if "ALERT" in r.getMessage()]
    assert alerts and f"pid {os.getpid()}" in alerts[0] and "not sgx-quote-helper" in alerts[0], alerts


def test_metrics_scrape(platform: Platform, root: Path) -> None:
    path = root / "qgs.socket"
    a = make_server(platform, path, metrics_port=0)
    with running(a):
        assert a.metrics_server is not None and a.metrics_server.host == "127.0.0.1"
        exchange(path, quote_frame(platform))
        exchange(path, encode_frame(q.GetPlatformInfoRequest().to_bytes()))
        exchange(path, TdxModule.open(platform).report(b"raw").to_bytes())
        assert exchange(path, b"\x81" + bytes(1023)) == b""  # refused raw report: closed
        url = f"http://127.0.0.1:{a.metrics_server.port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
    lines = set(text.splitlines())
    assert 'sgx_quote_helper_qgs_requests_total{result="SUCCESS",type="GetQuote"} 1.0' in lines
    assert 'sgx_quote_helper_qgs_requests_total{result="SUCCESS",type="GetPlatformInfo"} 1.0' in lines
    assert 'sgx_quote_helper_qgs_requests_total{result="SUCCESS",type="RawQuote"} 1.0' in lines
    assert 'sgx_quote_helper_qgs_requests_total{result="closed",type="RawQuote"} 1.0' in lines
    assert "sgx_quote_helper_qgs_connections_total 4.0" in lines
    assert "sgx_quote_helper_qgs_quote_latency_seconds_count 3.0" in lines
    assert "sgx_quote_helper_qgs_in_flight 0.0" in lines
    assert not any(line.startswith("sgx_quote_helper_requests_total") for line in lines)  # no AESM family


class _Gated:
    """The simulated TDX engine, whose quotes wait for ``go``."""

    def __init__(self, inner: SimulatedTdxEngine) -> None:
        self.inner, self.name = inner, "gated"
        self.go, self.entered = threading.Event(), threading.Event()

    def get_quote(self, report: bytes) -> bytes:
        self.entered.set()
        assert self.go.wait(30)
        return self.inner.get_quote(report)

    def platform_info(self) -> Any:
        return self.inner.platform_info()

    def collateral(self, fmspc: bytes, ca: str) -> Any:
        return self.inner.collateral(fmspc, ca)

    def close(self) -> None:
        self.inner.close()


def test_busy_equivalent_under_the_in_flight_cap(platform: Platform, root: Path) -> None:
    path = root / "qgs.socket"
    engine = _Gated(SimulatedTdxEngine(platform))
    a = make_server(platform, path, service=QgsService(engine), max_in_flight=1, workers=2, metrics_port=0)
    with running(a), contextlib.ExitStack() as stack:
        first: list[bytes] = []
        t = threading.Thread(target=lambda: first.append(exchange(path, quote_frame(platform, b"first"))))
        t.start()
        stack.callback(t.join, 30)
        stack.callback(engine.go.set)
        assert engine.entered.wait(20)
        t0 = time.monotonic()
        busy = exchange(path, quote_frame(platform, b"second"))
        raw = exchange(path, TdxModule.open(platform).report(b"raw").to_bytes())
        assert time.monotonic() - t0 < 10  # at once, not after the quote in flight
        assert q.GetQuoteResponse.from_bytes(busy[4:]).error_code == q.MsgError.UNEXPECTED  # 0x12001
        assert raw == b""  # raw mode has no error form: closed
        assert a.stats.busy == 2 and a.metrics.refused["busy"] == 2
        engine.go.set()
        t.join(30)
        assert check_td_quote(q.GetQuoteResponse.from_bytes(first[0][4:]).quote, b"first", {}) is None
        assert a.in_flight == 0


def test_per_uid_connection_cap(platform: Platform, root: Path) -> None:
    path = root / "qgs.socket"
    a = make_server(platform, path, max_connections_per_uid=1)
    with running(a):
        held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        held.connect(str(path))
        held.sendall(b"\x00\x00")  # a request begun, not finished
        wait_for(lambda: a.per_uid.get(os.getuid()) == 1)
        assert exchange(path, quote_frame(platform)) == b""  # the second one of this uid: closed
        assert a.metrics.refused["max_connections_per_uid"] == 1 and a.stats.refused == 1
        held.close()
        wait_for(lambda: not a.per_uid)
        reply = exchange(path, quote_frame(platform, b"after"))
        assert check_td_quote(q.GetQuoteResponse.from_bytes(reply[4:]).quote, b"after", {}) is None


def test_allow_list_refuses_other_uids(platform: Platform, root: Path) -> None:
    path = root / "qgs.socket"
    a = make_server(platform, path, allow_uids=frozenset({os.getuid() + 4242}))
    with running(a):
        assert exchange(path, quote_frame(platform)) == b""
        assert a.metrics.refused["not_allowed"] == 1
        assert probe_qgs_path(path).state is PathState.FOREIGN  # nobody else gets in, not even a probe


def test_a_request_not_finished_before_the_deadline_is_closed(platform: Platform, root: Path) -> None:
    path = root / "qgs.socket"
    a = make_server(platform, path, timeout=0.4)
    with running(a), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(quote_frame(platform)[:30])
        t0 = time.monotonic()
        assert s.recv(100) == b""  # closed by the sweep, no reply
        assert time.monotonic() - t0 < 5
        wait_for(lambda: a.metrics.refused.get("read_timeout") == 1)


def test_json_request_lines(platform: Platform, root: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = root / "qgs.socket"
    a = make_server(platform, path)
    with caplog.at_level(logging.DEBUG, logger="sgx_quote_helper.server.qgs"), running(a):
        exchange(path, quote_frame(platform))
        wait_for(lambda: any(getattr(r, "request", None) for r in caplog.records))
    (rec,) = [r for r in caplog.records if getattr(r, "request", None)]
    line = json.loads(JsonFormatter().format(rec))
    assert line["service"] == "qgs" and line["request"] == "GetQuote" and line["result"] == "SUCCESS"
    assert line["uid"] == os.getuid() and line["duration_ms"] >= 0 and "report" not in line


def test_an_aesm_daemon_does_not_take_a_qgs_socket(platform: Platform, root: Path) -> None:
    """The AESM probe gets no answer from a QGS (it waits for a raw TDREPORT): another program."""
    path = root / "qgs.socket"
    with running(make_server(platform, path)):
        found = probe_path(path, 0.5)
    assert found.state is PathState.FOREIGN


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.skipif(namespaces_available() is not None, reason="no Linux namespaces here")
def test_qgs_pods_roll_without_losing_a_td_quote(root: Path) -> None:
    """The QGS pod (the manifest's pod with ``qgs serve`` and the ``qgs healthcheck`` probes) rolled
    as the DaemonSet controller does: surge, wait for the new pod's real readiness probe, delete the
    old pod. TD clients (QEMU-style, one connection per GetQuote, no retry) lose nothing."""
    res = run_rollout(root, updates=2, clients=8, qgs=True)
    qemu = res["qemu"]
    assert qemu["failed"] == 0, (qemu["errors"], res["per_client"][:3])
    assert qemu["bad_quotes"] == 0 and qemu["ok"] > 0
    assert res["container_restarts"] == 0, res
    assert res["old_exit_codes"] == [0, 0, 0]


def test_serve_hosts_aesm_and_qgs_in_one_process(platform: Platform, root: Path) -> None:
    """``serve --qgs-socket``: one process, one instance, both protocols, one metrics endpoint."""
    import re
    import signal
    import subprocess
    import sys

    aesm, qgs, private = root / "aesm.socket", root / "qgs.socket", root / "private"
    cmd = [str(Path(sys.executable).parent / "sgx-quote-helper"), "serve", "--socket", str(aesm)]
    cmd += ["--qgs-socket", str(qgs), "--state-dir", str(platform.state.path), "--private-dir", str(private)]
    cmd += ["--handover-window", "0", "--metrics-port", "0", "--no-uvloop"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stderr is not None
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline().decode()
            assert line, "serve exited"
            if found := re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", line):
                port = int(found.group(1))
        assert port is not None
        wait_for(lambda: probe_qgs_path(qgs, 2).state is PathState.OURS, 30)
        a, g = probe_path(aesm, 5), probe_qgs_path(qgs, 5)
        assert a.state is PathState.OURS and a.instance_id == g.instance_id and a.pid == g.pid == proc.pid
        reply = exchange(qgs, quote_frame(platform, b"one process"))
        assert check_td_quote(q.GetQuoteResponse.from_bytes(reply[4:]).quote, b"one process", {}) is None
        code, out = healthcheck("--socket", str(qgs), "--ready", "--private-dir", str(private))
        assert code == 0, out
        # the one probe of both (the chart's combined mode): a real quote through each engine
        both = ["healthcheck", "--socket", str(aesm), "--private-dir", str(private), "--qgs-socket", str(qgs)]
        res = CliRunner().invoke(cli, [*both, "--quote", "--state-dir", str(platform.state.path)])
        assert (
            res.exit_code == 0 and res.output.count("signature and report checked; simulated engine") == 2
        ), res.output + res.stderr
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 'sgx_quote_helper_qgs_requests_total{result="SUCCESS",type="GetQuote"} 2.0' in text
        assert "sgx_quote_helper_in_flight" in text  # the AESM families beside them
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert not aesm.exists() and not qgs.exists()
