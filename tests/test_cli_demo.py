"""`sgx-quote-helper demo` (README line 1): runs end to end and leaves verifiable artifacts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import dcap_qvl
import pytest


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sgx_quote_helper", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_demo_runs_the_out_of_process_flow(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli("demo", "--out-dir", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    for phrase in (
        "SIMULATED Intel SGX Root CA",
        "out-of-process",
        "GetQuoteEx",
        "UpToDate",
        "rejected at step",
        "checked by the relying party (JWKS, then claims)",
        "claim check: x-ms-runtime is the app's runtime data: yes",
    ):
        assert phrase in text, phrase
    assert "yes; binds" in text and "NO" not in text.replace("NOT", "")

    # the artifacts verify with our verifier (explicit root) ...
    verify = run_cli(
        "verify", str(out / "quote.bin"), "--collateral", str(out / "collateral.json"),
        "--root-ca", str(out / "root-ca.der"), "--json",
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["status"] == "UpToDate"
    # ... and with an independent verifier
    collateral = dcap_qvl.QuoteCollateralV3.from_json((out / "collateral.json").read_text())
    result = dcap_qvl.verify_with_root_ca(
        (out / "quote.bin").read_bytes(), collateral, (out / "root-ca.der").read_bytes(), int(time.time())
    )
    assert result.status == "UpToDate"
    # ... and never without it
    rejected = run_cli("verify", str(out / "quote.bin"), "--collateral", str(out / "collateral.json"))
    assert rejected.returncode == 1
