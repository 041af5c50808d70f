"""doctor's TDX checks: the guest side against fake configfs-tsm / /dev / /etc trees, the host side
against a real `qgs serve --engine simulated` on a Unix socket in a temp dir (and small hostile
servers: one that closes, one that answers garbage, a stale socket)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from sgx_quote_helper.cli import cli
from sgx_quote_helper.doctor import DoctorOptions, Probes, Status, run_checks
from sgx_quote_helper.doctor.tdx_checks import GUEST_NAMES, HOST_NAMES
from sgx_quote_helper.sim.platform import Platform

from ._aesm_helpers import short_dir

TSM = Path("kernel/config/tsm/report")


def options(tmp: Path, **kw: object) -> DoctorOptions:
    """Every root in ``tmp``: nothing of the real machine is looked at."""
    base: dict[str, object] = {
        "environ": {},
        "default_socket": tmp / "nonexistent" / "aesm.socket",
        "dev_root": tmp / "dev",
        "sysfs_root": tmp / "sys",
        "etc_root": tmp / "etc",
        "qcnl_conf": tmp / "qcnl.conf",
        "lib_dirs": (tmp / "lib",),
        "default_qgs_socket": tmp / "run" / "tdx-qgs" / "qgs.socket",
        "timeout": 5.0,
        "http_timeout": 2.0,
    }
    base.update(kw)
    return DoctorOptions(**base)  # type: ignore[arg-type]


def checks(opts: DoctorOptions, probes: Probes | None = None) -> dict[str, tuple[str, str, str]]:
    report = run_checks(opts, probes)
    return {c.name: (c.status.value, c.detail, c.fix) for c in report.checks}


def status(found: dict[str, tuple[str, str, str]], *names: str) -> list[str]:
    return [found[n][0] for n in names]


# ------------------------------------------------------------------ fake guest trees


def configfs(tmp: Path, provider: str | None = "tdx_guest", entry: str = "com.intel.dcap") -> Path:
    root = tmp / "sys" / TSM
    root.mkdir(parents=True)
    if provider is not None:
        (root / entry).mkdir()
        (root / entry / "provider").write_text(provider + "\n")
    return root


def tdx_guest_device(tmp: Path) -> Path:
    """A character device at <dev>/tdx_guest (a link to /dev/null: no mknod needed)."""
    dev = tmp / "dev"
    dev.mkdir(exist_ok=True)
    (dev / "tdx_guest").symlink_to("/dev/null")
    return dev / "tdx_guest"


def attest_conf(tmp: Path, text: str) -> None:
    (tmp / "etc").mkdir(exist_ok=True)
    (tmp / "etc" / "tdx-attest.conf").write_text(text)


class Vsock:
    """An injected vsock connect: records what was dialled, fails with ``error`` when set."""

    def __init__(self, error: int | None = None) -> None:
        self.error = error
        self.calls: list[tuple[int, int]] = []

    def __call__(self, cid: int, port: int, timeout: float) -> None:
        self.calls.append((cid, port))
        if self.error is not None:
            raise OSError(self.error, os.strerror(self.error))


def test_not_tdx_anywhere_skips_every_tdx_check(tmp_path: Path) -> None:
    found = checks(options(tmp_path))
    assert status(found, *GUEST_NAMES, *HOST_NAMES) == ["skip"] * (len(GUEST_NAMES) + len(HOST_NAMES))
    assert "not a TDX host" in found["qgs-socket"][1]


def test_configfs_tsm_guest(tmp_path: Path) -> None:
    configfs(tmp_path)
    found = checks(options(tmp_path))
    assert status(found, *GUEST_NAMES) == ["pass", "skip", "skip", "pass"]
    assert "provider tdx_guest" in found["tdx-configfs"][1]
    assert "not needed" in found["tdx-guest-device"][1]
    assert "configfs-tsm" in found["tdx-quote-path"][1]
    assert run_checks(options(tmp_path)).ok


def test_configfs_provider_of_another_tee(tmp_path: Path) -> None:
    configfs(tmp_path, provider="sev_guest")
    tdx_guest_device(tmp_path)  # a TD guest by its device: the SEV provider is then an error
    found = checks(options(tmp_path))
    assert found["tdx-configfs"][0] == "fail" and "'sev_guest'" in found["tdx-configfs"][1]
    # the device is there, but its ioctl path is the legacy one
    assert found["tdx-quote-path"][0] == "warn" and "TDX_CMD_GET_QUOTE" in found["tdx-quote-path"][1]


def test_configfs_without_entries_makes_one_and_removes_it(tmp_path: Path) -> None:
    root = configfs(tmp_path, provider=None)
    found = checks(options(tmp_path))
    # a plain directory does not fill a new entry as the kernel does: no provider driver
    assert found["tdx-configfs"][0] == "skip" and "no provider file" in found["tdx-configfs"][1]
    assert list(root.iterdir()) == []  # the probe entry is gone again
    attest_conf(tmp_path, "# nothing\n")  # now this claims to be a guest
    found = checks(options(tmp_path))
    assert found["tdx-configfs"][0] == "fail" and "modprobe tdx_guest" in found["tdx-configfs"][2]


def test_configfs_env_entry_that_does_not_exist(tmp_path: Path) -> None:
    configfs(tmp_path)
    tdx_guest_device(tmp_path)
    opts = options(tmp_path, environ={"DCAP_TDX_QUOTE_CONFIGFS_PATH": str(tmp_path / "missing")})
    found = checks(opts)
    assert found["tdx-configfs"][0] == "fail" and "DCAP_TDX_QUOTE_CONFIGFS_PATH" in found["tdx-configfs"][1]


def test_vsock_port_with_a_listening_host(tmp_path: Path) -> None:
    tdx_guest_device(tmp_path)
    attest_conf(tmp_path, "# libtdx_attest\n  port = 4050\n")
    vsock = Vsock()
    found = checks(options(tmp_path), Probes(vsock_connect=vsock))
    assert vsock.calls == [(2, 4050)]  # VMADDR_CID_HOST
    assert status(found, *GUEST_NAMES) == ["warn", "pass", "pass", "pass"]
    assert "vsock 2:4050" in found["tdx-quote-path"][1]
    assert "mount -t configfs" in found["tdx-configfs"][2]


def test_vsock_port_nobody_listens_does_not_fall_back(tmp_path: Path) -> None:
    configfs(tmp_path)  # configfs-tsm would work, but libtdx_attest never gets there
    tdx_guest_device(tmp_path)
    attest_conf(tmp_path, "port = 4050\n")
    found = checks(options(tmp_path), Probes(vsock_connect=Vsock(errno.ECONNRESET)))
    assert found["tdx-attest-conf"][0] == "fail"
    assert "does not fall back" in found["tdx-attest-conf"][1]
    assert "--vsock-port 4050" in found["tdx-attest-conf"][2]
    assert found["tdx-quote-path"][0] == "fail" and "remove the port line" in found["tdx-quote-path"][2]
    assert not run_checks(options(tmp_path), Probes(vsock_connect=Vsock(errno.ECONNRESET))).ok


def test_vsock_port_without_the_device(tmp_path: Path) -> None:
    attest_conf(tmp_path, "port = 4050\n")
    found = checks(options(tmp_path), Probes(vsock_connect=Vsock()))
    assert found["tdx-guest-device"][0] == "fail" and "TDX_CMD_GET_REPORT0" in found["tdx-guest-device"][1]
    assert found["tdx-quote-path"][0] == "fail"


@pytest.mark.parametrize("line", ["port=abc", "port = 0", "PORT = 99999999999", "port: 4050"])
def test_unreadable_port_line_is_a_warning(tmp_path: Path, line: str) -> None:
    configfs(tmp_path)
    attest_conf(tmp_path, line + "\n")
    vsock = Vsock()
    found = checks(options(tmp_path), Probes(vsock_connect=vsock))
    assert found["tdx-attest-conf"][0] == "warn" and "port = 4050" in found["tdx-attest-conf"][2]
    assert vsock.calls == []
    assert found["tdx-quote-path"][0] == "pass"  # configfs-tsm, as libtdx_attest then does


def test_guest_device_not_usable(tmp_path: Path) -> None:
    tdx_guest_device(tmp_path)
    attest_conf(tmp_path, "port = 4050\n")
    found = checks(options(tmp_path), Probes(access=lambda p, m: False, vsock_connect=Vsock()))
    assert (
        found["tdx-guest-device"][0] == "fail" and "not readable and writable" in found["tdx-guest-device"][1]
    )
    assert found["tdx-quote-path"][0] == "fail"


def test_guest_device_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "dev" / "tdx_guest").mkdir(parents=True)
    found = checks(options(tmp_path))
    assert found["tdx-guest-device"][0] == "fail" and "directory" in found["tdx-guest-device"][1]


def test_guest_with_no_quote_path(tmp_path: Path) -> None:
    attest_conf(tmp_path, "# no port\n")
    found = checks(options(tmp_path))
    assert status(found, *GUEST_NAMES) == ["warn", "fail", "skip", "fail"]
    assert "no way to a TD quote" in found["tdx-quote-path"][1]


# ------------------------------------------------------------------ a real QGS


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("qgs-doctor") / "plat"
    Platform.init(state)
    return state


class Qgs:
    def __init__(self, proc: subprocess.Popen[bytes], path: Path) -> None:
        self.proc, self.path = proc, path


def _serve(platform: Path, directory: Path, *extra: str) -> Iterator[Qgs]:
    path = directory / "qgs.socket"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "sgx_quote_helper", "qgs", "serve", "--engine", "simulated"),
            *("--state-dir", str(platform), "--socket", str(path), "--socket-group", str(os.getgid())),
            *("--handover-window", "0"),  # no successor is coming: stop at once
            *extra,
        ],
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert b"QGS ready" in line, line
        yield Qgs(proc, path)
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def qgs(platform: Path) -> Iterator[Qgs]:
    with short_dir() as d:
        os.chmod(d, 0o755)
        yield from _serve(platform, d)


@pytest.fixture(scope="module")
def qgs_vmm_only(platform: Path) -> Iterator[Qgs]:
    """A socket for a VMM: GET_QUOTE only, no raw mode."""
    with short_dir() as d:
        os.chmod(d, 0o755)
        yield from _serve(platform, d, "--allow", "get-quote", "--no-raw")


def test_live_qgs(qgs: Qgs, tmp_path: Path) -> None:
    opts = options(tmp_path, qgs_socket=qgs.path, qemu_gid=os.getgid())
    found = checks(opts)
    assert status(found, "qgs-socket", "qgs-answers", "qgs-access") == ["pass"] * 3
    st = qgs.path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == os.getgid()
    assert "mode 0660" in found["qgs-socket"][1]
    assert "GET_PLATFORM_INFO" in found["qgs-answers"][1] and "TDQE ISVSVN" in found["qgs-answers"][1]
    assert f"group {os.getgid()}" in found["qgs-access"][1]
    # no kvm_intel tdx parameter in the fake sysfs, no SGX devices in the fake /dev
    assert found["tdx-host"][0] == "warn" and found["qgs-tdqe-devices"][0] == "warn"
    assert run_checks(opts).ok


def test_live_qgs_found_at_the_default_path(qgs: Qgs, tmp_path: Path) -> None:
    found = checks(options(tmp_path, default_qgs_socket=qgs.path))
    assert found["qgs-answers"][0] == "pass"
    assert "--qemu-group checks a group" in found["qgs-access"][1]


def test_qemu_in_another_group_cannot_reach_it(qgs: Qgs, tmp_path: Path) -> None:
    other = os.getgid() + 4242
    found = checks(options(tmp_path, qgs_socket=qgs.path, qemu_gid=other))
    verdict, detail, fix = found["qgs-access"]
    assert verdict == "fail" and "the socket (needs group" in detail
    assert f"--socket-group {other}" in fix and f"qgs.socketGid={other}" in fix


def test_directory_on_the_way_blocks_the_group(platform: Path, tmp_path: Path) -> None:
    with short_dir() as d:
        os.chmod(d, 0o700)  # the socket is 0660 with the right group, its directory is not searchable
        for server in _serve(platform, d):
            found = checks(options(tmp_path, qgs_socket=server.path, qemu_gid=os.getgid() + 1))
            assert found["qgs-access"][0] == "fail"
            assert f"directory {d}" in found["qgs-access"][1]


def test_vmm_only_socket_answers_the_quote_probe(qgs_vmm_only: Qgs, tmp_path: Path) -> None:
    found = checks(options(tmp_path, qgs_socket=qgs_vmm_only.path))
    verdict, detail, _ = found["qgs-answers"]
    assert verdict == "pass"
    assert "closed GET_PLATFORM_INFO unanswered" in detail and "refused a dummy all-zero TDREPORT" in detail


def test_cli_against_a_live_qgs(qgs: Qgs, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "doctor",
            "--json",
            "--qgs-socket",
            str(qgs.path),
            "--qemu-group",
            str(os.getgid()),
            "--dev-root",
            str(tmp_path / "dev"),
            "--sysfs-root",
            str(tmp_path / "sys"),
            "--etc-root",
            str(tmp_path / "etc"),
            "--qcnl-conf",
            str(tmp_path / "qcnl.conf"),
            "--socket",
            str(tmp_path / "none" / "aesm.socket"),
        ],
    )
    data = json.loads(result.output)
    by_name = {c["name"]: c for c in data["checks"]}
    assert by_name["qgs-answers"]["status"] == "pass"
    assert by_name["qgs-access"]["status"] == "pass"
    assert by_name["tdx-quote-path"]["status"] == "skip"
    # the AESM socket given but missing fails the run: exit 1 (a check failed), not 2
    assert by_name["socket-path"]["status"] == "fail" and result.exit_code == 1


def test_cli_unknown_qemu_group_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["doctor", "--qemu-group", "no-such-group-here"])
    assert result.exit_code == 2 and "no group named" in result.output


def test_cli_help_lists_the_tdx_checks() -> None:
    result = CliRunner().invoke(cli, ["doctor", "--help"])
    assert result.exit_code == 0
    for name in (*GUEST_NAMES, *HOST_NAMES, "--qgs-socket", "--qemu-group", "--etc-root"):
        assert name in result.output


# ------------------------------------------------------------------ broken QGS sockets


class OneShotServer:
    """A Unix listener that handles each connection with ``handle`` (a thread, loopback only)."""

    def __init__(self, path: Path, handle: object) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.handle = handle
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):  # the doctor's bare connect closes at once
                self.handle(conn)  # type: ignore[operator]

    def close(self) -> None:
        self.sock.close()


def _read_some(conn: socket.socket) -> None:
    conn.settimeout(2)
    with contextlib.suppress(OSError):
        conn.recv(65536)


def test_server_that_closes_without_answering(tmp_path: Path) -> None:
    with short_dir() as d:
        server = OneShotServer(d / "qgs.socket", _read_some)
        try:
            found = checks(options(tmp_path, qgs_socket=d / "qgs.socket"))
        finally:
            server.close()
    verdict, detail, fix = found["qgs-answers"]
    assert verdict == "warn" and "may well be live" in detail and "tdx quote" in fix


def test_server_that_answers_garbage(tmp_path: Path) -> None:
    def garbage(conn: socket.socket) -> None:
        _read_some(conn)
        conn.sendall(b"\x00\x00\x00\x08HTTP/1.1")

    with short_dir() as d:
        server = OneShotServer(d / "qgs.socket", garbage)
        try:
            found = checks(options(tmp_path, qgs_socket=d / "qgs.socket"))
        finally:
            server.close()
    assert found["qgs-answers"][0] == "fail" and "not in the QGS protocol" in found["qgs-answers"][1]


def test_stale_socket(tmp_path: Path) -> None:
    with short_dir() as d:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(d / "qgs.socket"))
        sock.close()  # bound, never listened: connect() is refused
        found = checks(options(tmp_path, qgs_socket=d / "qgs.socket"))
    assert found["qgs-socket"][0] == "pass"
    assert found["qgs-answers"][0] == "fail" and "connection refused" in found["qgs-answers"][1]


def test_permission_denied_is_explained(qgs: Qgs, tmp_path: Path) -> None:
    def denied(path: str, timeout: float) -> None:
        raise OSError(errno.EACCES, "Permission denied")

    found = checks(options(tmp_path, qgs_socket=qgs.path), Probes(connect=denied))
    assert found["qgs-answers"][0] == "fail" and "permission denied" in found["qgs-answers"][1]
    assert "socket's group" in found["qgs-answers"][2]


def test_world_writable_socket_is_a_warning(platform: Path, tmp_path: Path) -> None:
    with short_dir() as d:
        os.chmod(d, 0o755)
        for server in _serve(platform, d, "--socket-mode", "0666"):
            found = checks(options(tmp_path, qgs_socket=server.path))
            assert found["qgs-access"][0] == "warn" and "any local user" in found["qgs-access"][1]
            assert "--socket-mode 0660" in found["qgs-access"][2]


def test_socket_path_problems(tmp_path: Path) -> None:
    missing = tmp_path / "run" / "qgs.socket"
    found = checks(options(tmp_path, qgs_socket=missing))
    assert found["qgs-socket"][0] == "fail" and "qgs.enabled=true" in found["qgs-socket"][2]
    assert status(found, "qgs-answers", "qgs-access") == ["skip", "skip"]
    plain = tmp_path / "file.socket"
    plain.write_text("")
    found = checks(options(tmp_path, qgs_socket=plain))
    assert found["qgs-socket"][0] == "fail" and "not a socket" in found["qgs-socket"][1]


def kvm_tdx(tmp: Path, value: str) -> None:
    param = tmp / "sys" / "module" / "kvm_intel" / "parameters"
    param.mkdir(parents=True)
    (param / "tdx").write_text(value + "\n")


def test_tdx_host_without_a_qgs(tmp_path: Path) -> None:
    kvm_tdx(tmp_path, "Y")
    found = checks(options(tmp_path))
    assert found["tdx-host"][0] == "pass"
    # the default path is not there: perhaps a vsock-only qgsd; a warning, not a failure
    assert found["qgs-socket"][0] == "warn" and "port = 4050" in found["qgs-socket"][2]


def test_tdx_off_in_kvm(qgs: Qgs, tmp_path: Path) -> None:
    kvm_tdx(tmp_path, "N")
    found = checks(options(tmp_path, qgs_socket=qgs.path))
    assert found["tdx-host"][0] == "fail" and "kvm_intel.tdx=1" in found["tdx-host"][2]


def test_tdqe_devices(qgs: Qgs, tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "sgx_enclave").symlink_to("/dev/null")
    found = checks(options(tmp_path, qgs_socket=qgs.path))
    assert found["qgs-tdqe-devices"][0] == "fail" and "sgx_provision" in found["qgs-tdqe-devices"][1]
    (dev / "sgx_provision").symlink_to("/dev/null")
    found = checks(options(tmp_path, qgs_socket=qgs.path))
    assert found["qgs-tdqe-devices"][0] == "pass"
    assert "/dev/sgx_enclave" in found["qgs-tdqe-devices"][1]


def test_every_tdx_check_that_does_not_pass_says_how_to_fix_it(tmp_path: Path) -> None:
    configfs(tmp_path, provider="sev_guest")
    tdx_guest_device(tmp_path)
    attest_conf(tmp_path, "port = 4050\n")
    kvm_tdx(tmp_path, "N")
    found = checks(
        options(tmp_path, qgs_socket=tmp_path / "x.socket"), Probes(vsock_connect=Vsock(errno.ENODEV))
    )
    bad = {n: v for n, v in found.items() if n in (*GUEST_NAMES, *HOST_NAMES) and v[0] in ("fail", "warn")}
    assert len(bad) >= 5
    assert all(fix for _, _, fix in bad.values()), bad
    assert Status.FAIL.value in {v[0] for v in bad.values()}


def _reply(request_type_to_body: dict[int, bytes]) -> object:
    """A handler answering each framed request type with a fixed message (unknown: close)."""

    def handle(conn: socket.socket) -> None:
        conn.settimeout(2)
        data = conn.recv(65536)
        if len(data) >= 12:
            body = request_type_to_body.get(int.from_bytes(data[8:12], "little"))
            if body is not None:
                conn.sendall(len(body).to_bytes(4, "big") + body)

    return handle


def _answers(tmp_path: Path, handler: object) -> tuple[str, str, str]:
    with short_dir() as d:
        server = OneShotServer(d / "qgs.socket", handler)
        try:
            return checks(options(tmp_path, qgs_socket=d / "qgs.socket"))["qgs-answers"]
        finally:
            server.close()


def test_platform_info_error_code(tmp_path: Path) -> None:
    """An error-coded GET_PLATFORM_INFO in the form our client reads: the protocol is spoken, but
    the TDQE or PCE did not load."""
    from sgx_quote_helper.abi import qgs as q

    body = bytearray(q.GetPlatformInfoResponse(error_code=0x12001).to_bytes())
    body[8:12] = (32).to_bytes(4, "little")  # header size as the fields count it
    body += bytes(4)
    verdict, detail, fix = _answers(tmp_path, _reply({4: bytes(body)}))
    assert verdict == "warn" and "0x12001" in detail and "qgs-tdqe-devices" in fix


def test_intel_error_form_platform_info_falls_back_to_the_quote_probe(tmp_path: Path) -> None:
    """Intel's error-form GET_PLATFORM_INFO reply does not inflate (its own client rejects it with
    0x12006); the GET_QUOTE probe then shows a live QGS."""
    from sgx_quote_helper.abi import qgs as q

    replies = {
        4: q.GetPlatformInfoResponse(error_code=0x12001).to_bytes(),
        0: q.GetQuoteResponse(error_code=0x12001).to_bytes(),
    }
    verdict, detail, _ = _answers(tmp_path, _reply(replies))
    assert verdict == "pass" and "GET_PLATFORM_INFO:" in detail and "refused a dummy" in detail
