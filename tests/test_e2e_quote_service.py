"""End to end: `sgx-quote-helper serve --engine simulated` in a temp dir, an app gets a quote through
the socket, and dcap-qvl verifies it against the simulated platform's root and collateral."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sgx_quote_helper.abi.codes import AesmStatus
from sgx_quote_helper.abi.keyid import QeReportInfo
from sgx_quote_helper.abi.report import Report, TargetInfo
from sgx_quote_helper.client import QuoteClient, out_of_process_mode
from sgx_quote_helper.errors import AesmError
from sgx_quote_helper.sim import collateral
from sgx_quote_helper.sim.platform import Platform

from ._aesm_helpers import short_dir

dcap_qvl = pytest.importorskip("dcap_qvl")

CLI = [sys.executable, "-c", "import sys; from sgx_quote_helper.cli import main; sys.exit(main())"]


class Daemon:
    def __init__(self, root: Path) -> None:
        self.socket = root / "aesm.socket"
        self.state = root / "plat"
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--socket", str(self.socket),
             "--state-dir", str(self.state), "--engine", "simulated"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        QuoteClient(self.socket, retry_deadline=60, timeout=60).get_supported_att_key_id_num()

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, err


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with short_dir() as root:
        d = Daemon(root)
        try:
            yield d
        finally:
            if d.proc.poll() is None:
                d.stop()


def verify(platform: Platform, quote: bytes) -> str:
    now = dt.datetime.now(dt.UTC)
    col = dcap_qvl.QuoteCollateralV3.from_json(collateral.quote_collateral_json(platform, now))
    result = dcap_qvl.verify_with_root_ca(quote, col, collateral.root_ca_der(platform), int(now.timestamp()))
    return str(result.status)


def test_out_of_process_quote_verifies_up_to_date(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SGX_AESM_ADDR", "1")
    assert out_of_process_mode().out_of_process
    platform = Platform.open(daemon.state)
    with QuoteClient(daemon.socket) as client:
        assert client.get_supported_att_key_id_num() == 1
        key = client.select_att_key_id(client.get_supported_att_key_ids())
        client.init_quote_ex(key, want_pub_key_id=False)  # libsgx_dcap_ql's size query first
        init = client.init_quote_ex(key)
        report_data = hashlib.sha256(b"e2e").digest()
        app = platform.ereport(init.target_info, report_data, mr_enclave=b"\x11" * 32)
        size = client.get_quote_size_ex(key)
        nonce = os.urandom(16)
        app_ti = TargetInfo(mr_enclave=b"\x11" * 32)
        result = client.get_quote_ex(app, key, size + 64, QeReportInfo(nonce, app_ti))
    assert len(result.quote) == size + 64 and result.quote[size:] == bytes(64)
    quote = result.trimmed()
    assert len(quote) == size
    assert quote[48 + 320 : 48 + 352] == report_data  # the app's report body is inside
    assert verify(platform, result.quote[:size]) == "UpToDate"
    # the QE report comes back to the app: MAC'd for the app and binding nonce || quote
    assert result.qe_report_info is not None and result.qe_report_info.nonce == nonce
    qe_report = Report.from_bytes(result.qe_report_info.qe_report)
    assert qe_report.body.report_data == hashlib.sha256(nonce + quote).digest() + bytes(32)
    assert platform.verify_report_mac(qe_report, app_ti)


def test_report_not_made_for_the_qe_is_refused(daemon: Daemon) -> None:
    platform = Platform.open(daemon.state)
    with QuoteClient(daemon.socket) as client:
        client.init_quote_ex()
        wrong = platform.ereport(TargetInfo(mr_enclave=b"\x22" * 32), b"x")  # targeted elsewhere
        with pytest.raises(AesmError) as err:
            client.get_quote_ex(wrong)
    assert (
        err.value.status == AesmStatus.INVALID_REPORT
    )  # INVALID_REPORT -> SGX_ERROR_MAC_MISMATCH at Intel's client


def test_quote_cli_then_verify(daemon: Daemon) -> None:
    out = daemon.state.parent / "q.bin"
    proc = subprocess.run(
        [*CLI, "quote", "--socket", str(daemon.socket),
         "--state-dir", str(daemon.state), "--report-data", "00112233", "--out", str(out)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    quote = out.read_bytes()
    assert quote[48 + 320 : 48 + 324] == bytes.fromhex("00112233")
    assert verify(Platform.open(daemon.state), quote) == "UpToDate"


def test_sigterm_unlinks_and_exits_zero(daemon: Daemon) -> None:
    code, err = daemon.stop()
    assert code == 0, err
    assert "signal SIGTERM" in err
    deadline = time.monotonic() + 5
    while daemon.socket.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not daemon.socket.exists()
