"""``sim td-report``, ``sim init --tee-tcb-svn``, ``sim quote --tee tdx``, ``sim collateral --tee tdx``:
the CLI flow a CI system uses, judged by dcap-qvl and ``verify``."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import dcap_qvl
import pytest
from click.testing import CliRunner

from sgx_quote_helper.abi.quote import Quote
from sgx_quote_helper.abi.tdreport import TdReport15
from sgx_quote_helper.abi.tdx_report import TdxReport
from sgx_quote_helper.cli import cli

NOW_S = int(time.time()) + 3600
NOW = dt.datetime.fromtimestamp(NOW_S, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run(*args: str) -> tuple[int, bytes, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout_bytes, result.stderr


def one_error(code: int, err: str, *words: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])


def judge(state: Path, tmp: Path, quote: Path) -> tuple[str, int, str]:
    """(dcap-qvl status, verify exit code, verify output) for a TD quote of ``state``."""
    c, r = tmp / f"{quote.stem}.coll.json", tmp / "root.der"
    assert (
        run("sim", "collateral", "--tee", "tdx", "--state-dir", str(state), "--now", NOW, "--out", str(c))[0]
        == 0
    )
    assert run("sim", "root-ca", "--state-dir", str(state), "--der", "--out", str(r))[0] == 0
    coll = dcap_qvl.QuoteCollateralV3.from_json(c.read_text())
    status = dcap_qvl.verify_with_root_ca(quote.read_bytes(), coll, r.read_bytes(), NOW_S).status
    code, out, _ = run(
        "verify", str(quote), "--collateral", str(c), "--root-ca", str(r), "--now", NOW, "--json"
    )
    return status, code, json.loads(out)["status"]


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("clitdx") / "plat"
    code, out, err = run("sim", "init", "--state-dir", str(d))
    assert code == 0, err
    assert b"TEE_TCB_SVN 04010200000000000000000000000000 (up to date)" in out
    return d


def test_td_report_then_quote_then_verify(state: Path, tmp_path: Path) -> None:
    r, q = tmp_path / "r.bin", tmp_path / "q.bin"
    mr_td, rtmr2 = "ab" * 48, "cd" * 48
    code, _, err = run(
        "sim", "td-report", "--state-dir", str(state), "--report-data", "6e6f6e6365",
        "--mr-td", mr_td, "--rtmr2", rtmr2, "--tdx-version", "1.5", "--out", str(r),
    )  # fmt: skip
    assert code == 0, err
    report = TdxReport.from_bytes(r.read_bytes())
    assert report.report_type.version == 1 and report.td_info.mr_td.hex() == mr_td
    assert report.td_info.rtmr2.hex() == rtmr2 and report.report_data.startswith(b"nonce")
    code, out, err = run(
        "sim", "quote", "--tee", "tdx", "--state-dir", str(state), "--td-report", str(r), "--out", str(q)
    )
    assert code == 0, err
    assert b"TDX quote v5" in out
    body = Quote.from_bytes(q.read_bytes()).body
    assert isinstance(body, TdReport15) and body.mr_td.hex() == mr_td and body.rtmr2.hex() == rtmr2
    assert judge(state, tmp_path, q) == ("UpToDate", 0, "UpToDate")


@pytest.mark.parametrize("version", ["4", "5"])
def test_quote_version_and_td_options(state: Path, tmp_path: Path, version: str) -> None:
    q = tmp_path / f"q{version}.bin"
    code, _, err = run(
        "sim", "quote", "--tee", "tdx", "--quote-version", version, "--state-dir", str(state),
        "--mr-td", "11" * 48, "--rtmr0", "22" * 48, "--rtmr3", "33" * 48, "--out", str(q),
    )  # fmt: skip
    assert code == 0, err
    parsed = Quote.from_bytes(q.read_bytes())
    assert parsed.version == int(version) and parsed.is_tdx
    assert parsed.body.rtmr0 == b"\x22" * 48 and parsed.body.rtmr3 == b"\x33" * 48  # type: ignore[union-attr]
    assert judge(state, tmp_path, q) == ("UpToDate", 0, "UpToDate")


def test_debug_td_attributes(state: Path, tmp_path: Path) -> None:
    q = tmp_path / "dbg.bin"
    assert (
        run(
            "sim",
            "quote",
            "--tee",
            "tdx",
            "--state-dir",
            str(state),
            "--td-attributes",
            "0100001000000000",
            "--out",
            str(q),
        )[0]
        == 0
    )
    assert Quote.from_bytes(q.read_bytes()).body.debug


def test_out_of_date_platform(tmp_path: Path) -> None:
    old = tmp_path / "old"
    code, out, err = run("sim", "init", "--state-dir", str(old), "--tee-tcb-svn", "00" * 16)
    assert code == 0, err
    assert b"not the current level" in out
    q = tmp_path / "old.bin"
    assert run("sim", "quote", "--tee", "tdx", "--state-dir", str(old), "--out", str(q))[0] == 0
    status, code, ours = judge(old, tmp_path, q)
    assert (status, ours) == ("OutOfDate", "OutOfDate") and code != 0


def test_td_report_from_another_platform_is_refused(state: Path, tmp_path: Path) -> None:
    other, r = tmp_path / "other", tmp_path / "r.bin"
    assert run("sim", "td-report", "--state-dir", str(other), "--out", str(r))[0] == 0
    code, _, err = run(
        "sim",
        "quote",
        "--tee",
        "tdx",
        "--state-dir",
        str(state),
        "--td-report",
        str(r),
        "--out",
        str(tmp_path / "q"),
    )
    one_error(code, err, "MAC")


def test_stdout(state: Path) -> None:
    code, out, err = run("sim", "td-report", "--state-dir", str(state), "--out", "-")
    assert code == 0 and len(out) == 1024 and "TDREPORT" in err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["init", "--tee-tcb-svn", "00"], ["--tee-tcb-svn", "16 bytes"]),
        (["td-report", "--out", "r", "--mr-td", "00" * 32], ["--mr-td", "48 bytes"]),
        (["td-report", "--out", "r", "--rtmr1", "zz"], ["--rtmr1", "hex"]),
        (["td-report", "--out", "r", "--report-data", "00" * 65], ["--report-data", "64"]),
        (["td-report", "--out", "r", "--td-attributes", "00"], ["--td-attributes", "8 bytes"]),
        (["td-report"], ["--out"]),
        (["quote", "--tee", "tdx", "--out", "q", "--mrenclave", "00" * 32], ["--mrenclave", "--tee tdx"]),
        (["quote", "--out", "q", "--mr-td", "00" * 48], ["--mr-td", "only apply with --tee tdx"]),
        (["quote", "--out", "q", "--quote-version", "5"], ["--quote-version", "--tee tdx"]),
        (["quote", "--tee", "tdx", "--out", "q", "--quote-version", "3"], ["--quote-version"]),
        (["quote", "--tee", "tdx", "--out", "q", "--td-report", "/nonexistent"], ["cannot read"]),
        (["collateral", "--tee", "sev", "--out", "c"], ["--tee"]),
    ],
)
def test_bad_input_one_line(tmp_path: Path, args: list[str], words: list[str]) -> None:
    code, _, err = run("sim", *args, "--state-dir", str(tmp_path / "s"))
    one_error(code, err, *words)


def test_td_report_option_conflicts(state: Path, tmp_path: Path) -> None:
    r = tmp_path / "r.bin"
    r.write_bytes(b"\x81" + bytes(1023))
    code, _, err = run(
        "sim",
        "quote",
        "--tee",
        "tdx",
        "--state-dir",
        str(state),
        "--td-report",
        str(r),
        "--mr-td",
        "00" * 48,
        "--out",
        "q",
    )
    one_error(code, err, "--mr-td", "--td-report")
    code, _, err = run(
        "sim",
        "quote",
        "--tee",
        "tdx",
        "--state-dir",
        str(state),
        "--td-report",
        str(r),
        "--out",
        str(tmp_path / "q"),
    )
    one_error(code, err, "rejected")
    r.write_bytes(bytes(100))
    code, _, err = run(
        "sim",
        "quote",
        "--tee",
        "tdx",
        "--state-dir",
        str(state),
        "--td-report",
        str(r),
        "--out",
        str(tmp_path / "q"),
    )
    one_error(code, err, "1024")


@pytest.mark.parametrize("sub", ["td-report", "quote", "init", "collateral"])
def test_help_teaches_tdx(sub: str) -> None:
    code, out, _ = run("sim", sub, "--help")
    assert code == 0
    text = out.decode()
    assert "tdx" in text.lower() or "TD" in text
    assert "Example" in text
