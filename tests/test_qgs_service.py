"""The QGS service end to end over a real Unix socket: a simulated TD asks the way QEMU forwards
it (and the way an unwrapping VMM does, raw mode), dcap-qvl and ``verify`` judge the quotes."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import dcap_qvl
import pytest

from sgx_quote_helper.abi import qgs as q
from sgx_quote_helper.engine.tdx_simulated import SimulatedTdxEngine
from sgx_quote_helper.errors import ConfigError
from sgx_quote_helper.qgs_service import QgsService
from sgx_quote_helper.server.qgs import QgsConfig, QgsListener, QgsServer, vsock_available
from sgx_quote_helper.sim import collateral as sgx_collateral
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.sim.tdx_collateral import tdx_quote_collateral_json
from sgx_quote_helper.sim.tdx_module import TdIdentity, TdxModule
from sgx_quote_helper.wire.qgs import QgsClientConnection, ResponseReceived, encode_frame

from .test_qgs_protocol import qemu_reply, qemu_request

NOW = dt.datetime.now(dt.UTC)
TD = TdIdentity(mr_td=b"\x5a" * 48, rtmr0=b"\x01" * 48)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Platform:
    return Platform.init(tmp_path_factory.mktemp("qgs") / "p")


@contextmanager
def serving(platform: Platform, path: Path, *, engine: object = None, **kw: object) -> Iterator[QgsServer]:
    """A QgsServer on ``path`` in a thread, with ``engine`` (default: the platform's simulated one)."""
    listener_kw = {k: kw.pop(k) for k in ("allowed", "allow_raw", "mode", "group", "vsock_port") if k in kw}
    listener = QgsListener(path=path, **listener_kw)  # type: ignore[arg-type]
    service = QgsService(engine or SimulatedTdxEngine(platform))  # type: ignore[arg-type]
    server = QgsServer(service, QgsConfig(listeners=(listener,), **kw))  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    ready, stop = threading.Event(), asyncio.Event()
    failure: list[BaseException] = []

    async def main() -> None:
        try:
            await server.start()
        except BaseException as exc:
            failure.append(exc)
            return
        finally:
            ready.set()
        await stop.wait()
        await server.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),))
    thread.start()
    ready.wait(30)
    try:
        if failure:
            raise failure[0]
        yield server
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def exchange(path: Path, data: bytes) -> bytes:
    """Write ``data`` in one piece (as QEMU and libtdx_attest do), read until the server closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(str(path))
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def judge(platform: Platform, quote: bytes) -> str:
    coll = dcap_qvl.QuoteCollateralV3.from_json(tdx_quote_collateral_json(platform, NOW))
    now = int(time.time())
    return str(dcap_qvl.verify_with_root_ca(quote, coll, sgx_collateral.root_ca_der(platform), now).status)


@pytest.mark.parametrize("version", [0, 1])
def test_qemu_path_end_to_end(platform: Platform, tmp_path: Path, version: int) -> None:
    module = TdxModule.open(platform)
    report = module.report(b"qemu-forwarded", TD, version=version).to_bytes()
    sock = tmp_path / "qgs.socket"
    with serving(platform, sock):
        reply = exchange(sock, qemu_request(report))
    quote = qemu_reply(reply)  # every rule QEMU checks
    assert quote[:2] == (b"\x04\x00" if version == 0 else b"\x05\x00")
    assert judge(platform, quote) == "UpToDate"


def test_raw_mode_end_to_end(platform: Platform, tmp_path: Path) -> None:
    module = TdxModule.open(platform)
    report = module.report(b"raw", TD).to_bytes()
    sock = tmp_path / "qgs.socket"
    with serving(platform, sock):
        quote = exchange(sock, report)
        assert judge(platform, quote) == "UpToDate"  # the bare quote, no prefix or header
        tampered = report[:600] + bytes([report[600] ^ 1]) + report[601:]
        assert exchange(sock, tampered) == b""  # refused: closed with no data
        assert exchange(sock, b"\x81" + bytes(1023)) == b""  # Intel test_client's zeroed report
        # a framed request with a refused report: Intel's error response 0x12001
        bad = q.GetQuoteResponse.from_bytes(exchange(sock, qemu_request(tampered))[4:])
        assert bad.error_code == q.MsgError.UNEXPECTED


def test_platform_info_and_collateral(platform: Platform, tmp_path: Path) -> None:
    sock = tmp_path / "qgs.socket"
    with serving(platform, sock):
        for req, want in [
            (q.GetPlatformInfoRequest(), q.GetPlatformInfoResponse),
            (q.GetCollateralRequest(platform.identity.fmspc, b"processor\0"), q.GetCollateralResponse),
        ]:
            client = QgsClientConnection()
            client.receive_data(exchange(sock, client.send(req)))
            event = client.next_event()
            assert isinstance(event, ResponseReceived) and isinstance(event.response, want)
            resp = event.response
            if isinstance(resp, q.GetPlatformInfoResponse):
                assert resp.platform_id == platform.identity.qe_id and resp.cpusvn == platform.identity.cpusvn
            else:
                assert isinstance(resp, q.GetCollateralResponse) and (resp.major, resp.minor) == (3, 1)
                tcb = json.loads(resp.blob("tcb_info").rstrip(b"\0"))
                assert tcb["tcbInfo"]["id"] == "TDX"
                assert json.loads(resp.blob("qe_identity").rstrip(b"\0"))["enclaveIdentity"]["id"] == "TD_QE"
        # another FMSPC: Intel's error response
        client = QgsClientConnection()
        client.receive_data(exchange(sock, client.send(q.GetCollateralRequest(b"\x01" * 6, b"processor\0"))))
        event = client.next_event()
        assert isinstance(event, ResponseReceived) and event.response.error_code == 0x12001


def test_vmm_listener_allow_list(platform: Platform, tmp_path: Path) -> None:
    sock = tmp_path / "vmm.socket"
    module = TdxModule.open(platform)
    with serving(platform, sock, allowed=frozenset({q.MsgType.GET_QUOTE_REQ}), allow_raw=False):
        assert exchange(sock, encode_frame(q.GetPlatformInfoRequest().to_bytes())) == b""
        assert exchange(sock, module.report(b"raw").to_bytes()) == b""
        assert (
            judge(platform, qemu_reply(exchange(sock, qemu_request(module.report(b"ok", TD).to_bytes()))))
            == "UpToDate"
        )


def test_socket_mode_group_and_takeover_rules(platform: Platform, tmp_path: Path) -> None:
    sock = tmp_path / "run" / "qgs.socket"
    gid = os.getgid()
    with serving(platform, sock, mode=0o660, group=gid):
        st = os.stat(sock)
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == gid
    assert not sock.exists()  # removed at stop
    # a live program that is not ours (it closes on our probe, as Intel's qgsd): refused
    sock.parent.mkdir(exist_ok=True)
    foreign = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    foreign.bind(str(sock))
    foreign.listen(8)
    closer = threading.Thread(target=lambda: [foreign.accept()[0].close() for _ in range(2)], daemon=True)
    closer.start()
    try:
        with pytest.raises(ConfigError, match="refusing to take it over"), serving(platform, sock):
            pass
    finally:
        foreign.close()
        sock.unlink()
    # a stale socket (nobody answers) is replaced
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()
    with serving(platform, sock):
        assert exchange(sock, encode_frame(q.GetPlatformInfoRequest().to_bytes()))


def test_sixteen_parallel_requests_like_one_td(platform: Platform, tmp_path: Path) -> None:
    """QEMU allows 16 GetQuote requests in flight per TD: all answered, all verifiable."""
    module = TdxModule.open(platform)
    sock = tmp_path / "qgs.socket"
    reports = [module.report(bytes([i]) * 64, TD).to_bytes() for i in range(16)]
    with serving(platform, sock, workers=4), ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda r: exchange(sock, qemu_request(r)), reports))
    for i, reply in enumerate(replies):
        quote = qemu_reply(reply)
        assert quote[48 + 520 : 48 + 584] == bytes([i]) * 64  # report_data of TD report 1.0
    assert judge(platform, qemu_reply(replies[0])) == "UpToDate"


def test_busy_is_an_immediate_error(platform: Platform, tmp_path: Path) -> None:
    sock = tmp_path / "qgs.socket"
    module = TdxModule.open(platform)
    with serving(platform, sock, max_in_flight=1, workers=1) as server:
        server.in_flight = 1  # as if a quote were running
        reply = exchange(sock, qemu_request(module.report(b"", TD).to_bytes()))
        server.in_flight = 0
    assert q.GetQuoteResponse.from_bytes(reply[4:]).error_code == 0x12001
    assert server.stats.busy == 1


def test_peer_not_allowed_is_closed(platform: Platform, tmp_path: Path) -> None:
    sock = tmp_path / "qgs.socket"
    # closed before the request is read: an EOF or, with the request unread, a reset
    with (
        serving(platform, sock, allow_uids=frozenset({os.getuid() + 12345})) as server,
        contextlib.suppress(ConnectionResetError, BrokenPipeError),
    ):
        assert exchange(sock, encode_frame(q.GetPlatformInfoRequest().to_bytes())) == b""
    assert server.stats.refused == 1


@pytest.mark.skipif(not vsock_available(), reason="this kernel has no AF_VSOCK")
def test_vsock_bind(platform: Platform) -> None:
    with serving(platform, None, vsock_port=0xFFFF0000 - 7) as server:  # type: ignore[arg-type]
        assert server.vsock_ports


def test_vsock_refused_clearly_without_af_vsock(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    import sgx_quote_helper.server.qgs as srv

    monkeypatch.setattr(srv, "vsock_available", lambda: False)
    with pytest.raises(ConfigError, match="AF_VSOCK"), serving(platform, None, vsock_port=4050):  # type: ignore[arg-type]
        pass


def test_cli_qgs_serve(platform: Platform, tmp_path: Path) -> None:
    sock = tmp_path / "cli.socket"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "sgx-quote-helper"),
            "qgs",
            "serve",
            "--state-dir",
            str(platform.state.path),
            "--socket",
            str(sock),
            *("--handover-window", "0"),  # no successor is coming: stop at once
        ],
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # "QGS ready" once the socket is published
        assert b"QGS ready" in line, line
        report = TdxModule.open(platform).report(b"cli", TD).to_bytes()
        assert judge(platform, qemu_reply(exchange(sock, qemu_request(report)))) == "UpToDate"
    finally:
        proc.terminate()
        proc.wait(20)
    assert proc.returncode == 0 and not sock.exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--socket", "none"], "--vsock-port"),
        (["--socket-mode", "9z"], "mode"),
        (["--allow", "get-nothing"], "--allow"),
    ],
)
def test_cli_bad_input(tmp_path: Path, args: list[str], words: str) -> None:
    from click.testing import CliRunner

    from sgx_quote_helper.cli import cli

    result = CliRunner().invoke(cli, ["qgs", "serve", "--state-dir", str(tmp_path / "p"), *args])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error:") or "Error" in result.stderr, result.stderr
    assert words in result.stderr
