"""`sgx-quote-helper demo --tee tdx`: the steps it shows, its exit code, artifacts that verify, and a
failure (exit 1, the reason) when any step is tampered with: the TDREPORT in transit, its MAC, the
quote on its way back, the report data, the QGS itself."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dcap_qvl
import pytest
from click.testing import CliRunner, Result

from sgx_quote_helper.cli import demo_tdx
from sgx_quote_helper.cli.demo import demo
from sgx_quote_helper.sim.tdx_module import TdxModule

STEPS = (
    "1. A simulated TDX platform",
    "2. The Quote Generation Service (one per host)",
    "3. A TD asks for a quote (configfs-tsm, TDG.MR.REPORT)",
    "4. QEMU forwards it to the QGS (quote-generation-socket)",
    "5. Who signed what",
    "6. The relying party verifies the TD quote",
)


def run_demo(monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    monkeypatch.setenv("COLUMNS", "400")  # rich: one line per sentence
    return CliRunner().invoke(demo, ["--tee", "tdx", *args])


def test_demo_tdx_shows_every_step_and_ends_up_to_date(monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_demo(monkeypatch)
    assert result.exit_code == 0, result.output
    text = result.output
    positions = [text.index(step) for step in STEPS]
    assert positions == sorted(positions)
    for phrase in (
        "a TD's quote through the QGS on a simulated TDX platform",
        "sgx-quote-helper qgs serve (pid",
        "answered GET_PLATFORM_INFO",
        "MAC under the CPU's key (only this platform's TDQE can check it): yes",
        "GET_QUOTE_REQ v1.1 with report_size 1024, id_list_size 0 (1052 bytes in one write",
        "QEMU's checks on the reply passed",
        "the QGS stopped cleanly on SIGTERM (exit 0); socket removed: True",
        "collateral from `pccs serve --simulated` at http://127.0.0.1:",
        "GET /tdx/certification/v4/tcb?fmspc=00A0A5510000 (TCB Info id TDX)",
        "with the SIMULATED root passed explicitly: UpToDate (platform UpToDate, TDQE UpToDate, TDX module UpToDate), accepted: True",
        "report data bound: the quote's report_data is the TD's SHA-512(runtime data): yes; MRTD is the TD's: yes",
        "with Intel's production root (the default): rejected at step 2",
        "Done.",
    ):
        assert phrase in text, phrase
    assert "NO" not in text


def _failed(result: Result, reason: str) -> None:
    assert result.exit_code == 1, result.output
    assert "demo failed:" in result.output and reason in result.output, result.output
    assert "Done." not in result.output


def _in_transit(
    monkeypatch: pytest.MonkeyPatch,
    report: Callable[[bytes], bytes] = lambda b: b,
    quote: Callable[[bytes], bytes] = lambda b: b,
) -> None:
    """Change the TDREPORT on its way to the QGS and/or the quote on its way back."""
    real = demo_tdx.forward_as_qemu

    def forward(socket_path: Path, td_report: bytes, timeout: float = 30.0) -> tuple[bytes, bytes]:
        sent, got = real(socket_path, report(td_report), timeout)
        return sent, quote(got)

    monkeypatch.setattr(demo_tdx, "forward_as_qemu", forward)


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


def test_a_tdreport_altered_in_transit_is_refused_by_the_qgs(monkeypatch: pytest.MonkeyPatch) -> None:
    # MRTD (TDINFO @512+16) changed after the MAC: the TDQE's hash check fails, the QGS answers
    # 0x12001, and QEMU refuses the reply (the guest would see GET_QUOTE_ERROR)
    _in_transit(monkeypatch, report=lambda r: _flip(r, 512 + 16))
    _failed(run_demo(monkeypatch), "QEMU refuses the QGS reply: QGS message error code 0x12001")


@pytest.mark.slow
def test_a_quote_altered_on_the_way_back_does_not_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    # a byte of the TD report body (report_data @ 48 + 520) changed: the attestation key's signature fails
    _in_transit(monkeypatch, quote=lambda q: _flip(q, 48 + 520))
    result = run_demo(monkeypatch)
    _failed(result, "step 11: quote-bad-signature")
    assert "UpToDate" not in result.output


@pytest.mark.slow
def test_a_report_with_a_bad_mac_stops_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TdxModule, "verify_mac", lambda self, report: False)
    _failed(run_demo(monkeypatch), "does not carry its own MAC")


@pytest.mark.slow
def test_a_quote_for_other_report_data_is_not_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    real = TdxModule.report

    def report(self: TdxModule, report_data: bytes = b"", td: object = None, **kw: object) -> object:
        return real(self, b"someone else's nonce", td, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(TdxModule, "report", report)
    result = run_demo(monkeypatch)
    _failed(result, "the quote does not carry the TD's report data and MRTD")
    assert "SHA-512(runtime data): NO" in result.output


@pytest.mark.slow
def test_a_qgs_that_does_not_start_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        demo_tdx,
        "_qgs_command",
        lambda sock, state: [sys.executable, "-c", "print('qgs: no engine'); raise SystemExit(3)"],
    )
    result = run_demo(monkeypatch)
    _failed(result, "cannot connect to the QGS")
    assert "qgs: no engine" in result.output  # the service log is shown


@pytest.mark.slow
def test_a_pccs_that_does_not_start_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        demo_tdx,
        "_pccs_command",
        lambda state: [sys.executable, "-c", "import sys; sys.stderr.write('pccs: port busy')"],
    )
    result = run_demo(monkeypatch)
    _failed(result, "pccs serve --simulated did not start")
    assert "pccs: port busy" in result.output and "UpToDate" not in result.output


@pytest.mark.slow
def test_demo_tdx_cli_artifacts_verify(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "sgx_quote_helper", "demo", "--tee", "tdx", "--out-dir", str(out)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    quote = (out / "td-quote.bin").read_bytes()
    verify = subprocess.run(
        [sys.executable, "-m", "sgx_quote_helper", "verify", str(out / "td-quote.bin"), "--collateral",
         str(out / "collateral.json"), "--root-ca", str(out / "root-ca.der"), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["status"] == "UpToDate"
    collateral = dcap_qvl.QuoteCollateralV3.from_json((out / "collateral.json").read_text())
    result = dcap_qvl.verify_with_root_ca(
        quote, collateral, (out / "root-ca.der").read_bytes(), int(time.time())
    )
    assert result.status == "UpToDate"
    assert quote[48 + 520 : 48 + 584] == hashlib.sha512(demo_tdx.RUNTIME_DATA).digest()
    assert len((out / "td-report.bin").read_bytes()) == 1024
