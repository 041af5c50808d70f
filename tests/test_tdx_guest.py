"""The TD guest side: ``tdx quote`` / ``client.tdx_guest`` against a fake configfs-tsm tree (with
the kernel's generation/inblob/outblob behaviour), and against the QGS service over a Unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import time
from collections.abc import Iterator
from pathlib import Path

import dcap_qvl
import pytest
from click.testing import CliRunner

from sgx_quote_helper.abi.quote import Quote
from sgx_quote_helper.cli import cli
from sgx_quote_helper.client.qgs import AsyncQgsClient, QgsClient
from sgx_quote_helper.client.tdx_guest import (
    KernelFiles,
    configfs_entry,
    configfs_quote,
    device_td_report,
    get_td_quote,
    vsock_port,
)
from sgx_quote_helper.engine.tdx_simulated import SimulatedTdxEngine
from sgx_quote_helper.errors import BadResponseError, ConfigError, TransportError
from sgx_quote_helper.sim import collateral as sgx_collateral
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.sim.tdx_collateral import tdx_quote_collateral_json
from sgx_quote_helper.sim.tdx_module import TdxModule

from .test_qgs_service import serving

ROOT = Path("/sys/kernel/config/tsm/report")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Platform:
    return Platform.init(tmp_path_factory.mktemp("guest") / "p")


def judge(platform: Platform, quote: bytes) -> str:
    coll = dcap_qvl.QuoteCollateralV3.from_json(
        tdx_quote_collateral_json(platform, __import__("datetime").datetime.now(__import__("datetime").UTC))
    )
    return str(
        dcap_qvl.verify_with_root_ca(
            quote, coll, sgx_collateral.root_ca_der(platform), int(time.time())
        ).status
    )


class FakeTsm:
    """configfs-tsm as the kernel behaves: an entry made by mkdir gets provider/generation/inblob/
    outblob; each inblob write bumps generation; reading outblob has the TDX module make the TDREPORT
    for the written report data and the host's QGS (here its engine) quote it."""

    def __init__(self, platform: Platform, provider: bytes = b"tdx_guest\n", root: Path = ROOT) -> None:
        self.files: dict[Path, bytes] = {}
        self.dirs = {root}
        self.engine = SimulatedTdxEngine(platform)
        self.module = TdxModule.open(platform)
        self.provider = provider
        self.busy = 0  # EBUSY on this many inblob writes
        self.meddle = False  # another process writes inblob right after us
        self.short = False
        self.locked = 0

    def exists(self, path: Path) -> bool:
        return path in self.dirs or path in self.files

    def mkdir(self, path: Path) -> None:
        self.dirs.add(path)
        self.files |= {path / "provider": self.provider, path / "generation": b"0\n", path / "inblob": b""}

    def read(self, path: Path, limit: int) -> bytes:
        if path.name == "outblob":
            if self.short:
                return b"x" * 1020
            report = self.module.report(self.files[path.parent / "inblob"])
            return self.engine.get_quote(report.to_bytes())[:limit]
        if path not in self.files:
            raise FileNotFoundError(errno.ENOENT, "No such file", str(path))
        return self.files[path][:limit]

    def write(self, path: Path, data: bytes) -> None:
        assert path.name == "inblob" and self.locked, "libtdx_attest writes inblob under its flock"
        if self.busy:
            self.busy -= 1
            raise OSError(errno.EBUSY, "Device or resource busy")
        gen = path.parent / "generation"
        self.files[path] = data
        self.files[gen] = b"%d\n" % (int(self.files[gen]) + (2 if self.meddle else 1))

    @contextlib.contextmanager
    def lock(self, path: Path) -> Iterator[None]:
        self.locked += 1
        try:
            yield
        finally:
            self.locked -= 1


def test_configfs_path_makes_a_verifiable_quote(platform: Platform, tmp_path: Path) -> None:
    fs = FakeTsm(platform)
    result = get_td_quote(b"configfs nonce", fs=fs, env={}, attest_conf=tmp_path / "none.conf")
    assert result.source == f"configfs-tsm {ROOT / 'com.intel.dcap'}"
    assert Quote.from_bytes(result.quote).report_data == b"configfs nonce".ljust(64, b"\0")
    assert judge(platform, result.quote) == "UpToDate"
    assert fs.files[ROOT / "com.intel.dcap" / "generation"] == b"1\n"
    # a second request reuses the entry
    get_td_quote(b"again", fs=fs, env={})
    assert fs.files[ROOT / "com.intel.dcap" / "generation"] == b"2\n"


def test_configfs_env_path_and_provider_check(platform: Platform) -> None:
    fs = FakeTsm(platform)
    custom = Path("/sys/kernel/config/tsm/report/mine")
    fs.mkdir(custom)
    assert configfs_entry(ROOT, fs, {"DCAP_TDX_QUOTE_CONFIGFS_PATH": str(custom)}) == custom
    with pytest.raises(ConfigError, match="does not exist"):
        configfs_entry(ROOT, fs, {"DCAP_TDX_QUOTE_CONFIGFS_PATH": "/nonexistent"})
    with pytest.raises(ConfigError, match="not tdx_guest"):
        get_td_quote(b"", fs=FakeTsm(platform, provider=b"sev_guest\n"), env={})


def test_configfs_busy_meddled_and_short(platform: Platform) -> None:
    entry = ROOT / "com.intel.dcap"
    fs = FakeTsm(platform)
    fs.mkdir(entry)
    fs.busy = 2
    waits: list[float] = []
    assert len(configfs_quote(bytes(64), entry, fs, sleep=waits.append)) > 1020
    assert waits == [10.0, 10.0]  # libtdx_attest's 10 s waits
    fs.busy = 3
    with pytest.raises(TransportError, match="EBUSY"):
        configfs_quote(bytes(64), entry, fs, sleep=waits.append)
    fs.meddle = True
    with pytest.raises(TransportError, match="another request"):
        configfs_quote(bytes(64), entry, fs)
    fs.meddle, fs.short = False, True
    with pytest.raises(TransportError, match="not a quote"):
        configfs_quote(bytes(64), entry, fs)


def test_kernel_files_on_a_plain_directory_detect_a_non_kernel(tmp_path: Path) -> None:
    """The real file operations (flock, read, write) on a plain tree: nothing bumps generation, so
    the protocol refuses rather than returning a stale outblob."""
    entry = tmp_path / "com.intel.dcap"
    entry.mkdir()
    for name, data in {
        "provider": b"tdx_guest\n",
        "generation": b"7\n",
        "inblob": b"",
        "outblob": b"old",
    }.items():
        (entry / name).write_bytes(data)
    assert configfs_entry(tmp_path, KernelFiles(), {}) == entry
    with pytest.raises(TransportError, match="7 -> 7"):
        configfs_quote(bytes(64), entry, KernelFiles())
    assert (entry / "inblob").read_bytes() == bytes(64)


@pytest.mark.parametrize(
    ("text", "port"),
    [(" port = 4050\n", 4050), ("port=4051", 4051), ("# port = 1\n", None), ("port = abc", None), ("", None)],
)
def test_attest_conf_port(tmp_path: Path, text: str, port: int | None) -> None:
    conf = tmp_path / "tdx-attest.conf"
    conf.write_text(text)
    assert vsock_port(conf) == port
    assert vsock_port(tmp_path / "missing.conf") is None


def test_no_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--qgs-socket"):
        get_td_quote(b"", configfs_root=tmp_path / "no-configfs", attest_conf=tmp_path / "none", env={})
    with pytest.raises(ConfigError, match="64 bytes"):
        get_td_quote(bytes(65))


def test_vsock_conf_without_a_td_device(tmp_path: Path) -> None:
    conf = tmp_path / "tdx-attest.conf"
    conf.write_text("port = 4050\n")
    with pytest.raises(ConfigError, match="tdx_guest"):
        get_td_quote(
            b"", configfs_root=tmp_path / "none", attest_conf=conf, device=tmp_path / "tdx_guest", env={}
        )
    plain = tmp_path / "not-a-device"
    plain.write_bytes(b"")
    with pytest.raises(ConfigError, match="TDX_CMD_GET_REPORT0"):
        device_td_report(b"", plain)


def test_qgs_socket_path_and_clients(platform: Platform, tmp_path: Path) -> None:
    sock = tmp_path / "qgs.socket"
    report = TdxModule.open(platform).report(b"via socket").to_bytes()
    with serving(platform, sock):
        result = get_td_quote(b"ignored", qgs_socket=sock, td_report=report)
        assert result.source == f"QGS {sock}" and judge(platform, result.quote) == "UpToDate"
        assert judge(platform, asyncio.run(AsyncQgsClient(sock).get_quote(report))) == "UpToDate"
        info = QgsClient(sock).platform_info()
        assert info.platform_id == platform.identity.qe_id
        with pytest.raises(BadResponseError, match="0x12001"):
            QgsClient(sock).get_quote(b"\x81" + bytes(1023))
        r = CliRunner().invoke(
            cli,
            [
                "tdx",
                "quote",
                "--qgs-socket",
                str(sock),
                "--td-report",
                str(_write(tmp_path, report)),
                "--out",
                str(tmp_path / "q.bin"),
            ],
        )
        assert r.exit_code == 0, r.stderr
        assert judge(platform, (tmp_path / "q.bin").read_bytes()) == "UpToDate"
    with pytest.raises(TransportError, match="cannot connect"):
        QgsClient(sock, timeout=2).get_quote(report)
    with pytest.raises(TransportError):
        asyncio.run(AsyncQgsClient(sock, timeout=2).get_quote(report))


def _write(tmp_path: Path, report: bytes) -> Path:
    p = tmp_path / "td-report.bin"
    p.write_bytes(report)
    return p


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--configfs", "/nonexistent", "--attest-conf", "/nonexistent"], 2, "no way to get a TD quote"),
        (["--report-data", "zz"], 2, "--report-data"),
        (["--qgs-socket", "/nonexistent.sock", "--td-report", "/nonexistent.bin"], 2, "cannot read"),
    ],
)
def test_cli_errors(args: list[str], code: int, words: str, tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["tdx", "quote", *args, "--out", str(tmp_path / "q")])
    assert r.exit_code == code
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], r.stderr


def test_cli_socket_down_is_exit_1(tmp_path: Path, platform: Platform) -> None:
    report = _write(tmp_path, TdxModule.open(platform).report(b"").to_bytes())
    r = CliRunner().invoke(
        cli,
        [
            "tdx",
            "quote",
            "--qgs-socket",
            str(tmp_path / "down.sock"),
            "--td-report",
            str(report),
            "--out",
            str(tmp_path / "q"),
        ],
    )
    assert r.exit_code == 1 and "cannot connect" in r.stderr
