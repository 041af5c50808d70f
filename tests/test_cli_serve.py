"""cli: serve (start-up refusals, options), healthcheck (exit codes, one line) and quote errors."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from sgx_quote_helper.cli import cli
from sgx_quote_helper.server.config import ServerConfig
from sgx_quote_helper.service import AesmService
from sgx_quote_helper.testing.daemon import ServerThread
from sgx_quote_helper.testing.fakes import FakeEngine

from ._aesm_helpers import short_dir

CLI = [sys.executable, "-c", "import sys; from sgx_quote_helper.cli import main; sys.exit(main())"]


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with short_dir() as d:
        yield d


@pytest.mark.parametrize("cmd", ["serve", "quote", "healthcheck"])
def test_help_has_examples(cmd: str) -> None:
    res = CliRunner().invoke(cli, [cmd, "--help"])
    assert res.exit_code == 0
    assert "Examples:" in res.output and f"sgx-quote-helper {cmd}" in res.output


def test_healthcheck_ok(sock_dir: Path) -> None:
    path = sock_dir / "s"
    with ServerThread(AesmService(FakeEngine()), ServerConfig(socket_path=path)):
        res = CliRunner().invoke(cli, ["healthcheck", "--socket", str(path)])
    assert res.exit_code == 0
    assert res.output.startswith("ok:") and "1 attestation key id" in res.output


def test_healthcheck_no_key_ids_is_unhealthy(sock_dir: Path) -> None:
    path = sock_dir / "s"
    with ServerThread(AesmService(FakeEngine(key_ids=[])), ServerConfig(socket_path=path)):
        res = CliRunner().invoke(cli, ["healthcheck", "--socket", str(path)])
    assert res.exit_code == 1
    assert "SERVICE_UNAVAILABLE" in res.output and len(res.output.strip().splitlines()) == 1


def test_healthcheck_no_daemon(sock_dir: Path) -> None:
    res = CliRunner().invoke(cli, ["healthcheck", "--socket", str(sock_dir / "none"), "--timeout", "1"])
    assert res.exit_code == 1
    assert res.output.startswith("unhealthy:") and len(res.output.strip().splitlines()) == 1


def test_healthcheck_foreign_daemon_that_closes(sock_dir: Path) -> None:
    path = sock_dir / "s"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    # nobody accepts: the connection sits in the backlog and the probe times out
    res = CliRunner().invoke(cli, ["healthcheck", "--socket", str(path), "--timeout", "0.3"])
    srv.close()
    assert res.exit_code == 1 and "within" in res.output


@pytest.mark.slow
def test_serve_refuses_a_foreign_socket(sock_dir: Path) -> None:
    path = sock_dir / "aesm.socket"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    try:
        proc = subprocess.run(
            [*CLI, "serve", "--socket", str(path), "--state-dir", str(sock_dir / "p")],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        srv.close()
    assert proc.returncode == 2
    assert "--replace" in proc.stderr and "error:" in proc.stderr


def test_serve_bad_socket_mode() -> None:
    res = CliRunner().invoke(cli, ["serve", "--socket-mode", "rw"])
    assert res.exit_code == 2 and "octal" in res.output


def test_serve_socket_path_too_long() -> None:
    res = CliRunner().invoke(cli, ["serve", "--socket", "/tmp/" + "x" * 120, "--state-dir", "/nonexistent/p"])
    assert res.exit_code == 2 and "too long" in res.output


def test_quote_needs_a_platform(sock_dir: Path) -> None:
    res = CliRunner().invoke(cli, ["quote", "--socket", str(sock_dir / "s"), "--state-dir", str(sock_dir / "none"),
                                   "--out", str(sock_dir / "q")])  # fmt: skip
    assert res.exit_code == 2 and "no simulated platform" in res.output


def test_quote_bad_report_data(sock_dir: Path) -> None:
    res = CliRunner().invoke(cli, ["quote", "--out", str(sock_dir / "q"), "--report-data", "00" * 65])
    assert res.exit_code == 2 and "64 bytes" in res.output
