"""server/limits.py and the access control of the daemon: allow-list by peer uid/gid, per-peer rate
and in-flight limits (BUSY 18), max connections, socket group; each refusal logged once."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from sgx_quote_helper.abi.codes import AesmStatus
from sgx_quote_helper.cli import cli
from sgx_quote_helper.server.config import ServerConfig
from sgx_quote_helper.server.limits import PeerPolicy, RefusalLog
from sgx_quote_helper.service import AesmService
from sgx_quote_helper.testing.daemon import ServerThread
from sgx_quote_helper.testing.fakes import FakeEngine
from sgx_quote_helper.wire import messages as m
from sgx_quote_helper.wire.framing import encode_frame

from ._aesm_helpers import quote_frame, raw_connect, read_frame, report, short_dir, transact_raw

FAST = {"idle_timeout": 2.0, "read_timeout": 2.0, "path_check_interval": 0.05, "probe_timeout": 1.0}


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with short_dir() as d:
        yield d


def start(path: Path, engine: FakeEngine | None = None, **kw: object) -> ServerThread:
    cfg = ServerConfig(socket_path=path, **{**FAST, **kw})  # type: ignore[arg-type]
    return ServerThread(AesmService(engine or FakeEngine(initialised=True), version="t"), cfg).start()


def refusal_lines(caplog: pytest.LogCaptureFixture, reason: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if f"({reason})" in r.getMessage()]


def key_num(s: socket.socket) -> m.Response | None:
    """One GetSupportedAttKeyIDNum on a connected raw socket."""
    s.sendall(encode_frame(m.encode_request(m.GetSupportedAttKeyIDNumRequest(1000))))
    body = read_frame(s)
    return None if body is None else m.decode_response(body)


# -- units
def test_token_bucket_refills_at_the_rate() -> None:
    p = PeerPolicy(rate=10.0, burst=2)
    assert p.admit(7, 0.0) is None and p.admit(7, 0.0) is None
    assert p.admit(7, 0.0) == "rate"
    p.release(7)
    p.release(7)
    assert p.admit(7, 0.05) == "rate"  # half a token
    assert p.admit(7, 0.1) is None  # one token after 0.1 s at 10/s
    assert p.admit(8, 0.1) is None  # other peers have their own bucket


def test_in_flight_per_peer_and_release() -> None:
    p = PeerPolicy(max_in_flight_per_peer=2)
    assert p.admit(1, 0) is None and p.admit(1, 0) is None
    assert p.admit(1, 0) == "peer_in_flight"
    p.release(1)
    assert p.admit(1, 0) is None


def test_allow_list() -> None:
    assert PeerPolicy().allowed(5, 5)
    p = PeerPolicy(allow_uids=frozenset({1}), allow_gids=frozenset({2}))
    assert p.allowed(1, 9) and p.allowed(9, 2) and not p.allowed(9, 9)


def test_refusal_log_folds_repeats(caplog: pytest.LogCaptureFixture) -> None:
    rl = RefusalLog(logging.getLogger("t.access"), quiet_seconds=1.0)
    with caplog.at_level(logging.INFO):
        assert rl.refused("rate", 1, 2, "x", 0.0)
        assert not rl.refused("rate", 1, 2, "x", 0.5)
        assert not rl.refused("rate", 1, 2, "x", 0.6)
        assert rl.refused("rate", 1, 2, "x", 1.5)
    assert len(caplog.records) == 2 and "(2 more since the last line)" in caplog.records[1].getMessage()


# -- the daemon
def test_peer_not_in_allow_list_is_closed_and_logged(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = sock_dir / "s"
    with caplog.at_level(logging.INFO), start(path, allow_uids=frozenset({os.getuid() + 1})) as d:
        with raw_connect(path) as s:
            with contextlib.suppress(BrokenPipeError):  # closed before we finished sending
                s.sendall(quote_frame(report(1)))
            assert read_frame(s) is None  # closed, no reply
        assert d.server is not None and d.server.metrics.refused == {"not_allowed": 1}
    lines = refusal_lines(caplog, "not_allowed")
    assert len(lines) == 1 and f"uid={os.getuid()}" in lines[0]


def test_peer_in_allow_list_is_served(sock_dir: Path) -> None:
    path = sock_dir / "s"
    with start(path, allow_uids=frozenset({12345}), allow_gids=frozenset({os.getgid()})):
        resp = transact_raw(path, quote_frame(report(1)))
        assert isinstance(resp, m.GetQuoteExResponse) and resp.error_code == AesmStatus.SUCCESS


def test_rate_limit_answers_busy_and_logs_once(sock_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = sock_dir / "s"
    with (
        caplog.at_level(logging.INFO),
        start(path, rate_limit=0.01, rate_burst=2) as d,
        raw_connect(path) as s,
    ):
        codes = []
        for _ in range(5):
            resp = key_num(s)
            assert isinstance(resp, m.GetSupportedAttKeyIDNumResponse)
            codes.append(resp.error_code)
        assert codes == [
            AesmStatus.SUCCESS,
            AesmStatus.SUCCESS,
            AesmStatus.BUSY,
            AesmStatus.BUSY,
            AesmStatus.BUSY,
        ]
        # the takeover probe is never rate limited
        probe = transact_raw(path, encode_frame(m.encode_request(m.HelperProbeRequest())))
        assert isinstance(probe, m.HelperProbeResponse) and probe.error_code == AesmStatus.SUCCESS
        assert d.server is not None and d.server.metrics.refused == {"rate": 3}
    assert len(refusal_lines(caplog, "rate")) == 1


def test_in_flight_per_peer_answers_busy(sock_dir: Path) -> None:
    path = sock_dir / "s"
    gate = threading.Event()
    eng = FakeEngine(initialised=True, gate=gate)
    with start(path, eng, max_in_flight_per_peer=1, inline_engine_below=0.0) as d:
        held = raw_connect(path)
        held.sendall(quote_frame(report(1)))
        deadline = time.monotonic() + 5
        while eng.calls["get_quote"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert transact_raw(path, quote_frame(report(2))) == m.GetQuoteExResponse(AesmStatus.BUSY)
        gate.set()
        first = m.decode_response(read_frame(held) or b"")
        assert isinstance(first, m.GetQuoteExResponse) and first.error_code == AesmStatus.SUCCESS
        held.close()
        resp = transact_raw(path, quote_frame(report(3)))  # the slot was released
        assert isinstance(resp, m.GetQuoteExResponse) and resp.error_code == AesmStatus.SUCCESS
        assert d.server is not None and d.server.metrics.refused == {"peer_in_flight": 1}


def test_max_connections(sock_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = sock_dir / "s"
    with caplog.at_level(logging.INFO), start(path, max_connections=3) as d:
        held = [raw_connect(path) for _ in range(3)]
        assert key_num(held[0]) is not None  # all three accepted and registered
        extra = raw_connect(path)
        assert extra.recv(10) == b""  # closed at once
        extra.close()
        for s in held:
            s.close()
        deadline = time.monotonic() + 5
        while d.server is not None and d.server.connections and time.monotonic() < deadline:
            time.sleep(0.01)
        resp = transact_raw(path, quote_frame(report(1)))  # room again
        assert isinstance(resp, m.GetQuoteExResponse) and resp.error_code == AesmStatus.SUCCESS
        assert d.server is not None and d.server.metrics.refused == {"max_connections": 1}
    assert len(refusal_lines(caplog, "max_connections")) == 1


def test_socket_group(sock_dir: Path) -> None:
    path = sock_dir / "s"
    gid = 1 if os.getuid() == 0 else os.getgid()  # only root may give the socket another group
    with start(path, socket_group=gid, socket_mode=0o660):
        st = path.stat()
        assert st.st_gid == gid and (st.st_mode & 0o777) == 0o660


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate-limit", "fast"], "rate must look like 50/s"),
        (["--socket-group", "no-such-group-xyz"], "no group named"),
        (["--allow-gid", "no-such-group-xyz"], "no group named"),
        (["--metrics-port", "70000"], "70000"),
    ],
)
def test_serve_rejects_bad_limits(args: list[str], message: str) -> None:
    res = CliRunner().invoke(cli, ["serve", "--socket", "/tmp/sq-unused/s", *args])
    assert res.exit_code == 2 and message in res.output


def test_proxy_applies_the_peer_limits_and_counts(sock_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    from sgx_quote_helper.server.proxy import ProxyServer, Upstream
    from tests.daemon_thread import running

    upstream = sock_dir / "up"
    front = sock_dir / "front"
    with start(upstream), caplog.at_level(logging.INFO):
        cfg = ServerConfig(socket_path=front, use_uvloop=False, rate_limit=0.01, rate_burst=1)
        with running(ProxyServer(Upstream(upstream, timeout=5.0), cfg)) as srv, raw_connect(front) as s:
            codes = []
            for _ in range(3):
                resp = key_num(s)
                assert isinstance(resp, m.GetSupportedAttKeyIDNumResponse)
                codes.append(resp.error_code)
            assert codes == [AesmStatus.SUCCESS, AesmStatus.BUSY, AesmStatus.BUSY]
            assert srv.metrics.refused == {"rate": 2}
            assert srv.metrics.requests == {(m.GetSupportedAttKeyIDNumRequest, AesmStatus.SUCCESS): 1}
        cfg = ServerConfig(socket_path=front, use_uvloop=False, allow_uids=frozenset({os.getuid() + 1}))
        with running(ProxyServer(Upstream(upstream, timeout=5.0), cfg)) as srv, raw_connect(front) as s:
            with contextlib.suppress(BrokenPipeError):
                s.sendall(quote_frame(report(1)))
            assert read_frame(s) is None
            assert srv.metrics.refused == {"not_allowed": 1}
    assert len(refusal_lines(caplog, "rate")) == 1


def test_busy_past_the_global_bound_is_logged_once(sock_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = sock_dir / "s"
    gate = threading.Event()
    eng = FakeEngine(initialised=True, gate=gate)
    with caplog.at_level(logging.INFO), start(path, eng, max_in_flight=1, inline_engine_below=0.0) as d:
        held = raw_connect(path)
        held.sendall(quote_frame(report(1)))
        deadline = time.monotonic() + 5
        while eng.calls["get_quote"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        for tag in (2, 3, 4):
            assert transact_raw(path, quote_frame(report(tag))) == m.GetQuoteExResponse(AesmStatus.BUSY)
        gate.set()
        assert read_frame(held) is not None
        held.close()
        assert d.server is not None and d.server.metrics.refused == {"busy": 3}
    lines = refusal_lines(caplog, "busy")
    assert len(lines) == 1 and "1 requests in flight" in lines[0]
