"""``serve --qgs-socket`` with the hardware engines: ONE process answers SGX enclaves on the AESM
socket (``--engine dcap``, the fake libsgx_qe3_logic.so) and TD guests on the QGS socket (the
QGS's ``tdx`` engine, the fake libsgx_tdx_logic.so.1; tests/fake_dcap), with one instance, one
private directory (both probes) and one metrics endpoint; and the refusals: ``--engine proxy``
has no QGS, ``auto`` names what is missing (exit 2) and never falls back to simulated.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from sgx_quote_helper.abi.report import Report, ReportBody
from sgx_quote_helper.cli import cli
from sgx_quote_helper.client import QuoteClient
from sgx_quote_helper.client.qgs import QgsClient
from sgx_quote_helper.errors import BadResponseError
from sgx_quote_helper.server.socketpath import PathState, probe_path, probe_qgs_path
from tests.conftest import real_dir
from tests.fake_dcap import FakeDcap, FakeTdx, fake_dcap, fake_tdx  # noqa: F401  (fixtures)

from ._aesm_helpers import short_dir

EXE = str(Path(sys.executable).parent / "sgx-quote-helper")
#: the TDREPORT the fake TDQE accepts (any other: TEE_ATT_INVALID_REPORT, i.e. 0x12001)
TD_REPORT = bytes(range(256)) * 4


@pytest.fixture
def root() -> Iterator[Path]:
    with short_dir() as d:
        yield d


def cli_run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.output + (res.stderr if res.stderr_bytes is not None else "")


@pytest.fixture
def combined(
    fake_tdx: FakeTdx,  # noqa: F811
    root: Path,
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, Path], int, bytes]]:
    """``serve --engine dcap --qgs-socket`` (QGS engine: follow -> tdx) on the fakes, Ready."""
    fake = fake_tdx.dcap
    td_quote = (real_dir("tdx/phala-tdx-v4") / "quote.bin").read_bytes()
    (root / "td-quote.bin").write_bytes(td_quote)
    (root / "td-report.bin").write_bytes(TD_REPORT)
    # Intel's QE3 logic library finds libsgx_pce_logic.so.1 on the loader path: so does the fake
    libs = root / "lib"
    libs.mkdir()
    (libs / "libsgx_pce_logic.so.1").symlink_to(fake.pce)
    paths = {"aesm": root / "aesm.socket", "qgs": root / "qgs.socket", "private": root / "private"}
    cmd = [EXE, "serve", "--engine", "dcap", "--dcap-library", str(fake.qe3)]
    cmd += ["--device-root", str(fake.device_root), "--tdx-library", str(fake_tdx.lib)]
    cmd += ["--socket", str(paths["aesm"]), "--qgs-socket", str(paths["qgs"]), "--qgs-workers", "2"]
    cmd += ["--private-dir", str(paths["private"]), "--handover-window", "0", "--metrics-port", "0"]
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "LD_LIBRARY_PATH": f"{libs}:{os.environ.get('LD_LIBRARY_PATH', '')}".rstrip(":"),
        "FAKE_TDX_QUOTE": str(root / "td-quote.bin"),
        "FAKE_TDX_EXPECT_REPORT": str(root / "td-report.bin"),
    }
    proc = subprocess.Popen([*cmd, "--no-uvloop"], stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stderr is not None
        port, seen = None, b""
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            seen += line
            assert line, f"serve exited: {seen.decode()}"
            if found := re.search(rb"metrics on http://127\.0\.0\.1:(\d+)/metrics", line):
                port = int(found.group(1))
        assert port is not None, seen.decode()
        while probe_qgs_path(paths["qgs"], 2).state is not PathState.OURS:
            assert time.monotonic() < deadline and proc.poll() is None, seen.decode()
            time.sleep(0.02)
        yield proc, paths, port, td_quote
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert not paths["aesm"].exists() and not paths["qgs"].exists()


def test_one_process_serves_dcap_aesm_and_tdx_qgs(
    combined: tuple[subprocess.Popen[bytes], dict[str, Path], int, bytes],
    fake_dcap: FakeDcap,  # noqa: F811
) -> None:
    proc, paths, port, td_quote = combined
    a, g = probe_path(paths["aesm"], 5), probe_qgs_path(paths["qgs"], 5)
    assert a.state is PathState.OURS and a.instance_id == g.instance_id and a.pid == g.pid == proc.pid

    # AESM: GetQuoteEx through Intel's QE3 logic library (the fake: the real quote it serves)
    with QuoteClient(paths["aesm"], retry_deadline=0) as client:
        client.init_quote_ex()
        size = client.get_quote_size_ex()
        got = client.get_quote_ex(Report(body=ReportBody(report_data=b"\x42" * 64)), buf_size=size)
    assert size == len(fake_dcap.quote) and got.trimmed() == fake_dcap.quote

    # QGS: GET_QUOTE through Intel's TDX quote library (the fake: the real TD quote it serves)
    qgs = QgsClient(paths["qgs"])
    assert qgs.get_quote(TD_REPORT) == td_quote
    with pytest.raises(BadResponseError, match="0x12001"):
        qgs.get_quote(bytes(1024))  # the TDQE refused a report it did not expect

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'sgx_quote_helper_requests_total{result="SUCCESS",type="GetQuoteEx"} 1.0' in text
    assert 'sgx_quote_helper_qgs_requests_total{result="SUCCESS",type="GetQuote"} 1.0' in text
    assert 'sgx_quote_helper_qgs_requests_total{result="UNEXPECTED",type="GetQuote"} 1.0' in text

    private = str(paths["private"])
    code, out = cli_run("healthcheck", "--socket", str(paths["aesm"]), "--ready", "--private-dir", private)
    assert code == 0 and out.startswith("ready:"), out
    code, out = cli_run(
        "qgs", "healthcheck", "--socket", str(paths["qgs"]), "--ready", "--private-dir", private
    )
    assert code == 0 and out.startswith("ready:"), out
    # the chart's combined probe: one command, both personalities
    both = ("healthcheck", "--socket", str(paths["aesm"]), "--private-dir", private)
    code, out = cli_run(*both, "--ready", "--qgs-socket", str(paths["qgs"]))
    assert code == 0 and out.count("ready:") == 2 and str(paths["qgs"]) in out, out
    code, out = cli_run("qgs", "healthcheck", "--quote", "--private-dir", private)
    assert code == 0 and "refused it (0x12001" in out, out  # the TDX engine checks reports


def test_the_combined_probe_fails_when_the_qgs_is_not_this_daemons(
    combined: tuple[subprocess.Popen[bytes], dict[str, Path], int, bytes], tmp_path: Path
) -> None:
    """``healthcheck --ready --qgs-socket``: a QGS path this daemon does not serve fails the probe,
    although the AESM half passes."""
    _, paths, _, _ = combined
    both = ("healthcheck", "--socket", str(paths["aesm"]), "--private-dir", str(paths["private"]))
    code, out = cli_run(*both, "--ready", "--qgs-socket", str(tmp_path / "none.socket"))
    assert code == 1 and out.startswith("ready:") and "unhealthy: not ready" in out, out


def test_proxy_has_no_qgs(root: Path) -> None:
    code, out = cli_run(
        "serve", "--engine", "proxy", "--upstream-socket", str(root / "up.socket"),
        "--socket", str(root / "aesm.socket"), "--qgs-socket", str(root / "qgs.socket"),
    )  # fmt: skip
    assert code == 2 and "--qgs-socket does not go with --engine proxy" in out, out
    assert not (root / "aesm.socket").exists() and not (root / "qgs.socket").exists()


def test_qgs_options_need_the_qgs_socket(root: Path) -> None:
    code, out = cli_run(
        "serve", "--socket", str(root / "a.socket"), "--qgs-engine", "tdx", "--qgs-workers", "2"
    )
    assert code == 2 and "--qgs-engine and --qgs-workers go with --qgs-socket" in out, out


def test_auto_refuses_to_start_naming_what_is_missing(root: Path) -> None:
    """``--engine auto`` (so the QGS's auto too) with no devices, no library: exit 2 with what is
    missing; nothing simulated, no socket left."""
    args = ["serve", "--engine", "auto", "--device-root", str(root), "--socket", str(root / "aesm.socket")]
    args += ["--qgs-socket", str(root / "qgs.socket"), "--state-dir", str(root / "plat")]
    args += [
        "--dcap-library",
        str(root / "libsgx_qe3_logic.so"),
        "--tdx-library",
        str(root / "libsgx_tdx_logic.so.1"),
    ]
    code, out = cli_run(*args)
    assert code == 2, out
    assert out.startswith("error: ") and "sgx_enclave" in out and "sgx_provision" in out
    assert "libsgx_qe3_logic.so" in out and "never serves simulated quotes" in out
    assert not (root / "aesm.socket").exists() and not (root / "qgs.socket").exists()
    assert not (root / "plat").exists()  # no simulated platform made either


def test_qgs_auto_refusal_after_a_working_aesm_engine(
    fake_dcap: FakeDcap,  # noqa: F811
    root: Path,
) -> None:
    """The AESM engine starts (the fake DCAP library), the QGS's auto does not (no TDX library):
    exit 2 naming the TDX library, in serve's own words (--qgs-engine), and the DCAP engine closed."""
    fake_dcap.reset()
    args = ["serve", "--engine", "dcap", "--qgs-engine", "auto", "--dcap-library", str(fake_dcap.qe3)]
    args += ["--device-root", str(fake_dcap.device_root), "--socket", str(root / "aesm.socket")]
    args += ["--qgs-socket", str(root / "qgs.socket"), "--tdx-library", str(root / "libsgx_tdx_logic.so.1")]
    code, out = cli_run(*args)
    assert code == 2, out
    assert "the TDX quote engine cannot start" in out and "libsgx_tdx_logic.so.1" in out
    assert "--qgs-engine auto" in out and "--qgs-engine simulated" in out, out
    assert "`--engine simulated` runs" not in out  # qgs serve's hint, not serve's
    assert fake_dcap.calls("policy") == 2  # PERSISTENT, then EPHEMERAL: the DCAP engine was closed
    assert not (root / "aesm.socket").exists() and not (root / "qgs.socket").exists()
