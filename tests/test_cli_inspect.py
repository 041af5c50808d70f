"""`sgx-quote-helper inspect`: JSON keys and values from real quotes; clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from sgx_quote_helper.cli import cli

from .conftest import real_dir

REQUIRED = [
    "version", "tee_type", "qe_svn", "pce_svn", "qe_vendor_id", "mrenclave", "mrsigner", "isv_prod_id",
    "isv_svn", "attributes", "debug", "report_data", "certification_data_type",
]  # fmt: skip
PCK = ["fmspc", "pceid", "pcesvn", "cpusvn", "tcb_components", "sgx_type", "pck_issuer"]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_json_sgx_processor() -> None:
    code, out, _ = run("inspect", str(real_dir("phala-sgx-v3-processor") / "quote.bin"), "--json")
    assert code == 0
    data = json.loads(out)
    for key in REQUIRED + PCK:
        assert key in data, key
    assert data["version"] == 3 and data["tee_type"] == 0
    assert (data["qe_svn"], data["pce_svn"]) == (10, 15)
    assert data["fmspc"] == "00a067110000" and data["pcesvn"] == 13
    assert data["cpusvn"] == "0b0b0202ff0100000000000000000000"
    assert data["tcb_components"][:6] == [11, 11, 2, 2, 255, 1]
    assert data["pck_issuer"] == "Intel SGX PCK Processor CA"
    assert data["debug"] is False and data["certification_data_type"] == 5
    assert bytes.fromhex(data["report_data"]).startswith(b"Hello, world!")
    assert data["qe_vendor_id"] == data["qe_vendor_id"].lower()


def test_json_debug_and_platform_ca() -> None:
    _, out, _ = run("inspect", str(real_dir("automata-sgx-v3-debug") / "quote.bin"), "--json")
    assert json.loads(out)["debug"] is True
    _, out, _ = run("inspect", str(real_dir("oasis-sgx-v3-platform") / "quote.bin"), "--json")
    data = json.loads(out)
    assert data["pck_issuer"] == "Intel SGX PCK Platform CA" and data["sgx_type"] == 1
    assert data["mrenclave"] == "68823bc62f409ee33a32ea270cfe45d4b19a6fb3c8570d7bc186cbe062398e8f"


def test_json_tdx_has_td_fields() -> None:
    _, out, _ = run("inspect", str(real_dir("tdx/phala-tdx-v4") / "quote.bin"), "--json")
    data = json.loads(out)
    assert data["tee_type"] == 0x81 and data["version"] == 4
    assert "mr_td" in data and "rtmr3" in data and "mrenclave" not in data
    assert data["fmspc"] == "b0c06f000000"


def test_json_encrypted_ppid_has_no_pck_fields() -> None:
    _, out, _ = run("inspect", str(real_dir("oasis-sgx-v3-encrypted-ppid") / "quote.bin"), "--json")
    data = json.loads(out)
    assert data["certification_data_type"] == 3 and "pck_issuer" not in data
    assert len(bytes.fromhex(data["encrypted_ppid"])) == 384


def test_human_output() -> None:
    code, out, _ = run("inspect", str(real_dir("phala-sgx-v3-processor") / "quote.bin"))
    assert code == 0 and "PCK certificate chain" in out and "00a067110000" in out


def test_bad_input_exit_2_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x03\x00\x02\x00" + bytes(100))
    code, out, err = run("inspect", str(bad))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error:")
    code, _, err = run("inspect", str(tmp_path / "missing.bin"))
    assert code == 2 and "cannot read" in err
