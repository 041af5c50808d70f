"""doctor: every check against real sockets, a real daemon, fake /dev and sysfs trees, a fake
aesmd, a loopback PCCS; the CLI's JSON shape and exit codes."""

from __future__ import annotations

import errno
import http.server
import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from sgx_quote_helper.abi.codes import QuoteLibStatus
from sgx_quote_helper.cli import cli
from sgx_quote_helper.doctor import DoctorOptions, Probes, Status, run_checks
from sgx_quote_helper.doctor.explain import explain
from sgx_quote_helper.doctor.qcnl import parse_qcnl, strip_json_comments
from sgx_quote_helper.doctor.socket_checks import check_connect
from sgx_quote_helper.errors import ConfigError, EngineError
from sgx_quote_helper.server.config import ServerConfig
from sgx_quote_helper.server.socketpath import Listener
from sgx_quote_helper.service import AesmService
from sgx_quote_helper.sim.qe import QE_TARGET_INFO
from sgx_quote_helper.testing.daemon import ServerThread
from sgx_quote_helper.testing.fakes import FakeEngine
from sgx_quote_helper.wire import messages as m
from sgx_quote_helper.wire.framing import FrameDecoder, encode_frame

from ._aesm_helpers import short_dir

APP = {"SGX_AESM_ADDR": "1"}


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with short_dir() as d:
        os.chmod(d, 0o755)
        yield d


def daemon(path: Path, engine: FakeEngine | None = None, **kw: object) -> ServerThread:
    cfg = ServerConfig(socket_path=path, **kw)  # type: ignore[arg-type]
    return ServerThread(
        AesmService(engine or FakeEngine(), version="9.9-test", instance_id="abcd"), cfg
    ).start()


def options(tmp: Path, **kw: object) -> DoctorOptions:
    """Options pointing every path into ``tmp`` (nothing of the real machine is looked at)."""
    base: dict[str, object] = {
        "environ": {},
        "default_socket": tmp / "nonexistent" / "aesm.socket",
        "dev_root": tmp / "dev",
        "sysfs_root": tmp / "sys",
        "qcnl_conf": tmp / "qcnl.conf",
        "lib_dirs": (tmp / "lib",),
        "etc_root": tmp / "etc",
        "default_qgs_socket": tmp / "nonexistent" / "qgs.socket",
        "timeout": 2.0,
        "http_timeout": 2.0,
    }
    base.update(kw)
    return DoctorOptions(**base)  # type: ignore[arg-type]


def statuses(report: object) -> dict[str, str]:
    return {c.name: c.status.value for c in report.checks}  # type: ignore[attr-defined]


# ------------------------------------------------------------------ the daemon side


def test_live_daemon_every_socket_check_passes(sock_dir: Path, tmp_path: Path) -> None:
    path = sock_dir / "aesm.socket"
    engine = FakeEngine()
    with daemon(path, engine):
        report = run_checks(options(tmp_path, environ=APP, default_socket=path))
    s = statuses(report)
    assert [
        s[n] for n in ("aesm-addr-env", "socket-path", "socket-connect", "daemon", "key-ids", "test-quote")
    ] == ["pass"] * 6
    assert "sgx-quote-helper 9.9-test" in report.by_name("daemon").detail
    assert "INVALID_REPORT (47)" in report.by_name("test-quote").detail
    assert engine.calls["init_quote"] == 1 and engine.calls["get_quote"] == 1
    # an app container without SGX devices is a failure (its enclave needs /dev/sgx_enclave) ...
    assert s["sgx-devices"] == "fail" and not report.ok
    assert s["quote-provider"] == "skip"  # the daemon quotes; the app needs no provider


def test_simulated_engine_makes_missing_devices_a_skip(sock_dir: Path, tmp_path: Path) -> None:
    path = sock_dir / "aesm.socket"
    engine = FakeEngine()
    engine.target_info = QE_TARGET_INFO  # what the simulated engine's InitQuoteEx returns
    with daemon(path, engine):
        report = run_checks(options(tmp_path, environ=APP, default_socket=path))
    assert report.by_name("sgx-devices").status is Status.SKIP
    assert "simulated engine" in report.by_name("test-quote").detail
    assert report.ok


def test_socket_checks_apply_only_when_wanted(sock_dir: Path, tmp_path: Path) -> None:
    report = run_checks(options(tmp_path))
    assert report.by_name("aesm-addr-env").status is Status.WARN
    for name in ("socket-path", "socket-connect", "daemon", "key-ids", "test-quote"):
        assert report.by_name(name).status is Status.SKIP
    assert report.ok
    # the default socket exists: checked even without SGX_AESM_ADDR (a node)
    path = sock_dir / "aesm.socket"
    with daemon(path):
        report = run_checks(options(tmp_path, default_socket=path))
    assert report.by_name("test-quote").status is Status.PASS


def test_aesm_addr_is_not_an_address(tmp_path: Path) -> None:
    check = run_checks(options(tmp_path, environ={"SGX_AESM_ADDR": "/tmp/x.sock"})).by_name("aesm-addr-env")
    assert check.status is Status.WARN and "never used as an address" in check.detail
    check = run_checks(options(tmp_path, environ={"SGX_AESM_ADDR": ""})).by_name("aesm-addr-env")
    assert check.status is Status.PASS and "empty string" in check.detail


def test_wrong_socket_name(sock_dir: Path, tmp_path: Path) -> None:
    good = sock_dir / "aesm.socket"
    with daemon(good):
        report = run_checks(options(tmp_path, socket_path=sock_dir / "aesm.sock", default_socket=good))
    check = report.by_name("socket-path")
    assert check.status is Status.FAIL and "typo" in check.detail and "exists" in check.detail
    assert "aesm.socket" in check.fix
    assert report.by_name("socket-connect").status is Status.SKIP and not report.ok


def test_differently_named_socket_in_the_directory(sock_dir: Path, tmp_path: Path) -> None:
    other = sock_dir / "quote.sock"
    with daemon(other):
        report = run_checks(options(tmp_path, environ=APP, default_socket=sock_dir / "aesm.socket"))
    check = report.by_name("socket-path")
    assert check.status is Status.FAIL and "quote.sock" in check.detail


def test_missing_directory_and_empty_directory(sock_dir: Path, tmp_path: Path) -> None:
    check = run_checks(options(tmp_path, environ=APP)).by_name("socket-path")
    assert check.status is Status.FAIL and "not mounted" in check.detail and "hostPath" in check.fix
    check = run_checks(options(tmp_path, environ=APP, default_socket=sock_dir / "aesm.socket")).by_name(
        "socket-path"
    )
    assert check.status is Status.FAIL and "holds no socket" in check.detail


def test_not_a_socket(sock_dir: Path, tmp_path: Path) -> None:
    path = sock_dir / "aesm.socket"
    path.write_text("hello")
    check = run_checks(options(tmp_path, socket_path=path)).by_name("socket-path")
    assert check.status is Status.FAIL and "not a socket" in check.detail
    path.unlink()
    path.mkdir()
    check = run_checks(options(tmp_path, socket_path=path)).by_name("socket-path")
    assert check.status is Status.FAIL and "is a directory" in check.detail


def test_stale_socket_is_connection_refused(sock_dir: Path, tmp_path: Path) -> None:
    path = sock_dir / "aesm.socket"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))  # bound, never listening: what a dead daemon leaves
    s.close()
    report = run_checks(options(tmp_path, socket_path=path))
    check = report.by_name("socket-connect")
    assert check.status is Status.FAIL and "connection refused" in check.detail
    assert report.by_name("daemon").status is Status.SKIP


def test_permission_denied_through_injected_connect(sock_dir: Path, tmp_path: Path) -> None:
    path = sock_dir / "aesm.socket"
    with daemon(path, socket_mode=0o000):
        assert stat.S_IMODE(path.stat().st_mode) == 0
        seen: list[str] = []

        def refuse(p: str, timeout: float) -> None:
            seen.append(p)
            raise PermissionError(errno.EACCES, "Permission denied")

        report = run_checks(options(tmp_path, socket_path=path), Probes(connect=refuse))
    check = report.by_name("socket-connect")
    assert seen == [str(path)]
    assert check.status is Status.FAIL and "permission denied" in check.detail and "mode 0000" in check.detail
    assert "--socket-mode" in check.fix and "supplementalGroups" in check.fix


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another uid")
def test_permission_denied_for_real_as_another_user(sock_dir: Path) -> None:
    path = sock_dir / "aesm.socket"
    with daemon(path, socket_mode=0o000):
        check = _check_connect_as(65534, path)
    assert (
        check["status"] == "fail"
        and "permission denied" in check["detail"]
        and "uid 65534" in check["detail"]
    )
    # root itself is not refused (root bypasses the mode): the injected test above covers the logic
    with daemon(path, socket_mode=0o000):
        assert run_checks(options(sock_dir, socket_path=path)).by_name("socket-connect").status is Status.PASS


def _check_connect_as(uid: int, path: Path) -> dict[str, str]:
    """Run check_connect in a forked child that dropped root (the venv is not executable by nobody)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.write(write_end, json.dumps(check_connect(path, Probes(), 2.0).to_dict()).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and data
    result: dict[str, str] = json.loads(data)
    return result


class FakeAesmd:
    """Intel's aesmd as seen by a client: answers quote-ex requests, closes on anything unknown."""

    def __init__(self, path: Path, answer: bool = True) -> None:
        self.service = AesmService(FakeEngine())
        self.answer = answer
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                decoder = FrameDecoder()
                frames: list[bytes] = []
                while not frames:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    frames = decoder.feed(chunk)
                if not frames or not self.answer:
                    if not self.answer:
                        conn.recv(1)  # hold the connection until the client gives up
                    continue
                request = m.decode_request(frames[0])
                if isinstance(request, m.HelperProbeRequest):
                    continue  # aesmd: unknown request -> close without a reply
                response = self.service.handle(request)
                assert response is not None
                conn.sendall(encode_frame(m.encode_response(response)))

    def close(self) -> None:
        self.sock.close()


def test_fake_aesmd_closes_on_the_probe(sock_dir: Path, tmp_path: Path) -> None:
    path = sock_dir / "aesm.socket"
    fake = FakeAesmd(path)
    aesmd = Listener(4321, 0, 0, "/opt/intel/sgx-aesm-service/aesm/aesm_service --no-daemon")
    try:
        report = run_checks(
            options(tmp_path, environ=APP, default_socket=path), Probes(listener=lambda p, t: aesmd)
        )
    finally:
        fake.close()
    check = report.by_name("daemon")
    assert check.status is Status.PASS and "not sgx-quote-helper" in check.detail
    assert "Intel's aesm_service (pid 4321" in check.detail
    assert report.by_name("key-ids").status is Status.PASS
    assert report.by_name("test-quote").status is Status.PASS


def test_foreign_server_on_the_path_is_reported_by_name(sock_dir: Path, tmp_path: Path) -> None:
    """Neither sgx-quote-helper nor aesm_service listens there (here: this test process): a WARN
    naming the listener from SO_PEERCRED."""
    path = sock_dir / "aesm.socket"
    fake = FakeAesmd(path)
    try:
        report = run_checks(options(tmp_path, environ=APP, default_socket=path))
    finally:
        fake.close()
    check = report.by_name("daemon")
    assert check.status is Status.WARN
    assert "a foreign server serves" in check.detail and f"pid {os.getpid()}" in check.detail
    assert "impostor" in check.fix


def test_daemon_that_never_answers(sock_dir: Path, tmp_path: Path) -> None:
    path = sock_dir / "aesm.socket"
    fake = FakeAesmd(path, answer=False)
    try:
        report = run_checks(options(tmp_path, socket_path=path, timeout=0.3))
    finally:
        fake.close()
    assert report.by_name("daemon").status is Status.FAIL
    assert "did not answer" in report.by_name("daemon").detail
    assert report.by_name("key-ids").status is Status.SKIP


@pytest.mark.parametrize(
    ("failure", "where", "code", "words"),
    [
        ("init_quote", QuoteLibStatus.ENCLAVE_LOAD_ERROR, 48, "sgx_provision"),
        ("init_quote", QuoteLibStatus.NO_PLATFORM_CERT_DATA, 44, "PCCS"),
        ("get_quote", QuoteLibStatus.ATT_KEY_NOT_INITIALIZED, 42, "not initialised"),
    ],
)
def test_quote_failures_are_explained(
    sock_dir: Path, tmp_path: Path, failure: str, where: QuoteLibStatus, code: int, words: str
) -> None:
    path = sock_dir / "aesm.socket"
    engine = FakeEngine()
    engine.fail[failure] = EngineError(where)
    with daemon(path, engine):
        check = run_checks(options(tmp_path, socket_path=path)).by_name("test-quote")
    assert check.status is Status.FAIL and f"({code})" in check.detail
    assert words in check.detail + check.fix


def test_quoting_a_zero_report_is_a_warning(sock_dir: Path, tmp_path: Path) -> None:
    path = sock_dir / "aesm.socket"
    with daemon(path, FakeEngine(accept_report=lambda r: True)):
        check = run_checks(options(tmp_path, socket_path=path)).by_name("test-quote")
    assert check.status is Status.WARN and "does not check report" in check.detail


def test_explain_knows_the_common_codes() -> None:
    for code in (30, 42, 47, 48, 12, 41):
        meaning, fix = explain(code)
        assert f"({code})" in meaning and fix
    assert "UNKNOWN_200" in explain(200)[0]


# ------------------------------------------------------------------ devices, EPC, quote provider


def chardev(path: Path, mode: int = 0o666) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, stat.S_IFCHR | mode, os.makedev(10, 125))


def test_devices_in_kernel_layout(tmp_path: Path) -> None:
    try:
        chardev(tmp_path / "dev" / "sgx_enclave")
    except PermissionError:
        pytest.skip("mknod not permitted here")
    chardev(tmp_path / "dev" / "sgx_provision", 0o660)
    check = run_checks(options(tmp_path)).by_name("sgx-devices")
    assert (
        check.status is Status.PASS and "in-kernel" in check.detail and "/dev/sgx_provision" in check.detail
    )
    # an app container lacking the provision node is fine; a node lacking it is warned about
    (tmp_path / "dev" / "sgx_provision").unlink()
    assert run_checks(options(tmp_path, environ=APP)).by_name("sgx-devices").status is Status.PASS
    assert run_checks(options(tmp_path)).by_name("sgx-devices").status is Status.WARN


def test_devices_not_usable(tmp_path: Path) -> None:
    try:
        chardev(tmp_path / "dev" / "sgx" / "enclave", 0o600)
    except PermissionError:
        pytest.skip("mknod not permitted here")
    denied = Probes(access=lambda p, mode: False)
    check = run_checks(options(tmp_path, environ=APP), denied).by_name("sgx-devices")
    assert check.status is Status.FAIL and "dcap-legacy" in check.detail and "mode 0600" in check.detail
    assert "not readable and writable" in check.detail


def test_device_path_that_is_not_a_device(tmp_path: Path) -> None:
    (tmp_path / "dev" / "sgx_enclave").mkdir(parents=True)  # what a hostPath mount makes
    check = run_checks(options(tmp_path, environ=APP)).by_name("sgx-devices")
    assert check.status is Status.FAIL and "is a directory" in check.detail
    assert "sgx_epc_mem_in_MiB" in check.fix


def sysfs_epc(tmp: Path, values: dict[int, str]) -> None:
    for node, value in values.items():
        d = tmp / "sys" / "devices" / "system" / "node" / f"node{node}" / "x86"
        d.mkdir(parents=True)
        (d / "sgx_total_bytes").write_text(value)


def test_epc_size(tmp_path: Path) -> None:
    assert run_checks(options(tmp_path)).by_name("epc-size").status is Status.SKIP
    sysfs_epc(tmp_path, {0: str(64 << 20), 1: str(32 << 20)})
    check = run_checks(options(tmp_path)).by_name("epc-size")
    assert check.status is Status.PASS and "96 MiB" in check.detail and "node 1: 32 MiB" in check.detail


@pytest.mark.parametrize(("value", "words"), [("0", "0 bytes"), ("lots", "expected a byte count")])
def test_epc_size_failures(tmp_path: Path, value: str, words: str) -> None:
    sysfs_epc(tmp_path, {0: value})
    check = run_checks(options(tmp_path)).by_name("epc-size")
    assert check.status is Status.FAIL and words in check.detail


def test_quote_provider(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "isgx").write_text("")  # out-of-tree layout present: hardware here
    check = run_checks(options(tmp_path)).by_name("quote-provider")
    assert check.status is Status.FAIL and "libsgx-dcap-default-qpl" in check.fix
    assert run_checks(options(tmp_path, environ=APP)).by_name("quote-provider").status is Status.SKIP
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "libdcap_quoteprov.so").write_text("")
    check = run_checks(options(tmp_path)).by_name("quote-provider")
    assert check.status is Status.PASS and "az-dcap-client" in check.detail
    other = tmp_path / "ld"
    other.mkdir()
    (other / "libdcap_quoteprov.so.1").write_text("")
    check = run_checks(options(tmp_path, environ={"LD_LIBRARY_PATH": str(other)})).by_name("quote-provider")
    assert "Intel's quote provider" in check.detail


# ------------------------------------------------------------------ PCCS


class _Handler(http.server.BaseHTTPRequestHandler):
    paths: list[str] = []  # noqa: RUF012

    def do_GET(self) -> None:
        self.paths.append(self.path)
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def pccs() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/sgx/certification/v4/"
    finally:
        server.shutdown()
        server.server_close()


def test_pccs_from_the_command_line(tmp_path: Path, pccs: str) -> None:
    check = run_checks(options(tmp_path, pccs_url=pccs)).by_name("pccs")
    assert check.status is Status.PASS and "HTTP 404" in check.detail and "--pccs-url" in check.detail
    assert "/sgx/certification/v4/" in _Handler.paths


def test_pccs_from_json_qcnl_with_comments(tmp_path: Path, pccs: str) -> None:
    (tmp_path / "qcnl.conf").write_text(
        '{\n  // PCCS server address\n  "pccs_url": "' + pccs + '",\n'
        '  /* self-signed */ "use_secure_cert": false,\n  "retry_times": 6\n}\n'
    )
    check = run_checks(options(tmp_path)).by_name("pccs")
    assert check.status is Status.PASS and "(json)" in check.detail and "verification off" in check.detail


def test_pccs_from_key_value_qcnl(tmp_path: Path, pccs: str) -> None:
    (tmp_path / "qcnl.conf").write_text(f"# old format\nPCCS_URL={pccs}\nUSE_SECURE_CERT=FALSE\n")
    check = run_checks(options(tmp_path)).by_name("pccs")
    assert check.status is Status.PASS and "key=value" in check.detail


def test_pccs_unreachable_and_bad_config(tmp_path: Path) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    check = run_checks(options(tmp_path, pccs_url=f"http://127.0.0.1:{port}/")).by_name("pccs")
    assert check.status is Status.FAIL and "not reachable" in check.detail and "egress" in check.fix
    (tmp_path / "qcnl.conf").write_text('{"pccs_url": ')
    check = run_checks(options(tmp_path)).by_name("pccs")
    assert check.status is Status.FAIL and "does not parse" in check.detail
    assert run_checks(options(tmp_path / "none")).by_name("pccs").status is Status.SKIP


def test_qcnl_parsing() -> None:
    assert strip_json_comments('{"a": "http://x//y" // c\n}') == '{"a": "http://x//y" \n}'
    conf = parse_qcnl('{"pccs_url": "https://h:8081/sgx/certification/v4/", "collateral_service": "x"}')
    assert conf.pccs_url == "https://h:8081/sgx/certification/v4/" and conf.use_secure_cert
    assert conf.collateral_service == "x"
    assert parse_qcnl("USE_SECURE_CERT=TRUE\n").pccs_url is None
    with pytest.raises(ConfigError):
        parse_qcnl("this is not a config")
    with pytest.raises(ConfigError):
        parse_qcnl("[1, 2]")


# ------------------------------------------------------------------ CLI


def test_cli_json_shape_and_exit_codes(sock_dir: Path, tmp_path: Path) -> None:
    path = sock_dir / "aesm.socket"
    args = ["doctor", "--json", "--dev-root", str(tmp_path / "dev"), "--sysfs-root", str(tmp_path / "sys")]
    args += ["--qcnl-conf", str(tmp_path / "qcnl.conf"), "--socket", str(path)]
    runner = CliRunner()
    with daemon(path):
        result = runner.invoke(cli, args, env={"SGX_AESM_ADDR": None})
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == {"checks", "ok"} and data["ok"] is True
    assert all(set(c) == {"name", "status", "detail", "fix"} for c in data["checks"])
    assert {c["status"] for c in data["checks"]} <= {"pass", "fail", "skip", "warn"}
    assert [c["name"] for c in data["checks"]][:6] == [
        "aesm-addr-env",
        "socket-path",
        "socket-connect",
        "daemon",
        "key-ids",
        "test-quote",
    ]
    # no daemon any more: exit 1, human output names the failure and its fix
    result = runner.invoke(cli, [a for a in args if a != "--json"], env={"SGX_AESM_ADDR": "1"})
    assert result.exit_code == 1
    assert "FAIL" in result.output and "socket-path" in result.output and "fix:" in result.output


def test_cli_help_teaches() -> None:
    result = CliRunner().invoke(cli, ["doctor", "--help"])
    assert result.exit_code == 0
    for words in ("INVALID_REPORT (47)", "SKIP", "Examples", "aesm.sock"):
        assert words in result.output
