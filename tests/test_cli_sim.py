"""`sgx-quote-helper sim`: init / report / quote / collateral / root-ca, and one-line errors (exit 2)."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import dcap_qvl
import pytest
from click.testing import CliRunner
from cryptography import x509

from sgx_quote_helper.abi.quote import Quote
from sgx_quote_helper.abi.report import Report, TargetInfo
from sgx_quote_helper.cli import cli
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.sim.qe import QE_TARGET_INFO

# the platform is created at the current time by `sim init`; verify a little later
NOW_S = int(time.time()) + 3600
NOW = dt.datetime.fromtimestamp(NOW_S, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.stdout_bytes, result.stderr


def assert_one_error_line(code: int, err: str, *words: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0]


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli") / "plat"
    code, out, err = run("sim", "init", "--state-dir", str(d))
    assert code == 0, err
    assert b"created a simulated SGX platform" in out
    return d


def test_init_options(tmp_path: Path) -> None:
    d = tmp_path / "p"
    args = ["sim", "init", "--state-dir", str(d), "--fmspc", "00606A000000", "--cpusvn", "0d" * 2 + "00" * 14]
    code, _out, err = run(
        *args, "--pcesvn", "11", "--qe-svn", "6", "--ca", "platform", "--cert-data", "encrypted-ppid"
    )
    assert code == 0, err
    ident = Platform.open(d).identity
    assert ident.fmspc == bytes.fromhex("00606A000000") and ident.cpusvn[:2] == b"\x0d\x0d"
    assert (ident.pcesvn, ident.qe_svn, ident.ca, ident.cert_data) == (11, 6, "platform", "encrypted-ppid")


def test_init_refuses_then_force(state: Path, tmp_path: Path) -> None:
    code, _, err = run("sim", "init", "--state-dir", str(state))
    assert_one_error_line(code, err, "already holds a platform", "--force")
    d = tmp_path / "f"
    assert run("sim", "init", "--state-dir", str(d))[0] == 0
    before = Platform.open(d).identity.ppid
    assert run("sim", "init", "--state-dir", str(d), "--force")[0] == 0
    assert Platform.open(d).identity.ppid != before


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["init", "--fmspc", "0011"], ["--fmspc", "6 bytes"]),
        (["init", "--cpusvn", "xyz"], ["--cpusvn", "hex"]),
        (["init", "--pcesvn", "70000"], ["--pcesvn"]),
        (["init", "--ca", "root"], ["--ca"]),
        (["quote", "--out", "q.bin", "--report-data", "00" * 65], ["--report-data", "64"]),
        (["quote", "--out", "q.bin", "--mrenclave", "00"], ["--mrenclave", "32 bytes"]),
        (["quote"], ["--out"]),
        (["report", "--out", "r.bin", "--target-info", "/nonexistent/ti.bin"], ["cannot read"]),
        (["collateral", "--out", "c.json", "--now", "yesterday"], ["--now"]),
        (["bogus"], ["bogus"]),
    ],
)
def test_bad_input_one_line(tmp_path: Path, args: list[str], words: list[str]) -> None:
    cmd = ["sim", *args]
    if args[0] != "bogus":
        cmd += ["--state-dir", str(tmp_path / "s")]
    code, _, err = run(*cmd)
    assert_one_error_line(code, err, *words)


def test_corrupt_state_dir_reported(state: Path, tmp_path: Path) -> None:
    d = tmp_path / "corrupt"
    d.mkdir()
    for f in state.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    (d / "pck.pem").write_bytes(b"junk")
    code, _, err = run("sim", "quote", "--state-dir", str(d), "--out", str(tmp_path / "q.bin"))
    assert_one_error_line(code, err, "pck.pem")
    assert (d / "pck.pem").read_bytes() == b"junk"


def test_state_dir_from_environment(tmp_path: Path) -> None:
    d = tmp_path / "env-plat"
    code, _, err = run(
        "sim", "root-ca", "--out", str(tmp_path / "r.pem"), env={"SGX_QUOTE_HELPER_STATE": str(d)}
    )
    assert code == 0, err
    assert (d / "manifest.json").exists()


def test_report_for_target(state: Path, tmp_path: Path) -> None:
    ti = tmp_path / "ti.bin"
    ti.write_bytes(QE_TARGET_INFO.to_bytes())
    out = tmp_path / "r.bin"
    args = [
        "--report-data",
        "c0ffee",
        "--mrenclave",
        "ab" * 32,
        "--mrsigner",
        "cd" * 32,
        "--isv-prod-id",
        "5",
    ]
    code, _, err = run(
        "sim", "report", "--state-dir", str(state), "--target-info", str(ti), "--out", str(out), *args
    )
    assert code == 0, err
    report = Report.from_bytes(out.read_bytes())
    assert report.body.report_data == b"\xc0\xff\xee" + bytes(61)
    assert (report.body.mr_enclave, report.body.isv_prod_id, report.body.debug) == (b"\xab" * 32, 5, False)
    platform = Platform.open(state)
    assert platform.verify_report_mac(report, QE_TARGET_INFO)
    assert not platform.verify_report_mac(report, TargetInfo())


def test_report_bad_target_info(state: Path, tmp_path: Path) -> None:
    ti = tmp_path / "ti.bin"
    ti.write_bytes(bytes(100))
    code, _, err = run("sim", "report", "--state-dir", str(state), "--target-info", str(ti), "--out", "-")
    assert_one_error_line(code, err, "not a target info")


def test_quote_to_stdout_with_debug(state: Path) -> None:
    code, out, err = run("sim", "quote", "--state-dir", str(state), "--out", "-", "--debug", "--isv-svn", "3")
    assert code == 0, err
    q = Quote.from_bytes(out)
    assert q.body.debug and q.body.isv_svn == 3  # type: ignore[union-attr]
    assert "wrote a" in err


def test_full_cli_flow_verifies_with_dcap_qvl(state: Path, tmp_path: Path) -> None:
    q, c, r = tmp_path / "q.bin", tmp_path / "c.json", tmp_path / "r.der"
    sd = ["--state-dir", str(state)]
    assert (
        run("sim", "quote", *sd, "--out", str(q), "--report-data", "48656c6c6f", "--mrenclave", "11" * 32)[0]
        == 0
    )
    assert run("sim", "collateral", *sd, "--out", str(c), "--now", NOW)[0] == 0
    assert run("sim", "root-ca", *sd, "--der", "--out", str(r))[0] == 0
    assert set(json.loads(c.read_text())) >= {"tcb_info", "qe_identity", "root_ca_crl", "pck_crl"}
    coll = dcap_qvl.QuoteCollateralV3.from_json(c.read_text())
    res = dcap_qvl.verify_with_root_ca(q.read_bytes(), coll, r.read_bytes(), NOW_S)
    assert res.status == "UpToDate"
    # --now as unix seconds gives the same dates
    c2 = tmp_path / "c2.json"
    assert run("sim", "collateral", *sd, "--out", str(c2), "--now", str(NOW_S))[0] == 0
    assert json.loads(c2.read_text())["tcb_info"] == json.loads(c.read_text())["tcb_info"]


def test_root_ca_pem_and_der(state: Path, tmp_path: Path) -> None:
    pem, der = tmp_path / "r.pem", tmp_path / "r.der"
    assert run("sim", "root-ca", "--state-dir", str(state), "--out", str(pem))[0] == 0
    assert run("sim", "root-ca", "--state-dir", str(state), "--der", "--out", str(der))[0] == 0
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    assert cert == x509.load_der_x509_certificate(der.read_bytes())
    assert "SIMULATED Intel SGX Root CA" in cert.subject.rfc4514_string()


@pytest.mark.parametrize("sub", ["init", "report", "quote", "collateral", "root-ca"])
def test_help_has_examples_and_state_dir(sub: str) -> None:
    code, out, _ = run("sim", sub, "--help")
    assert code == 0
    text = out.decode()
    assert "Example" in text and "--state-dir" in text and "sgx-quote-helper sim" in text


def test_init_pki_from(state: Path, tmp_path: Path) -> None:
    d = tmp_path / "node2"
    code, _, err = run("sim", "init", "--state-dir", str(d), "--pki-from", str(state))
    assert code == 0, err
    assert Platform.open(d).certs["root"] == Platform.open(state).certs["root"]
    code, _, err = run(
        "sim", "init", "--state-dir", str(tmp_path / "n3"), "--pki-from", str(tmp_path / "none")
    )
    assert_one_error_line(code, err, "no simulated platform")


def test_init_keep_existing(state: Path, tmp_path: Path) -> None:
    """What the chart's init container runs on every pod start: create once, then keep."""
    d = tmp_path / "node"
    args = ["sim", "init", "--state-dir", str(d), "--pki-from", str(state), "--keep-existing"]
    code, out, err = run(*args)
    assert code == 0 and b"created" in out, err
    ppid = Platform.open(d).identity.ppid
    code, out, err = run(*args)
    assert code == 0 and b"kept the simulated SGX platform" in out, err
    assert Platform.open(d).identity.ppid == ppid
    assert Platform.open(d).certs["root"] == Platform.open(state).certs["root"]
    # a platform under another SIMULATED root is not silently kept
    other = tmp_path / "other"
    assert run("sim", "init", "--state-dir", str(other))[0] == 0
    code, _, err = run("sim", "init", "--state-dir", str(other), "--pki-from", str(state), "--keep-existing")
    assert_one_error_line(code, err, "another SIMULATED PKI", "root")
    assert run("sim", "init", "--state-dir", str(other), "--keep-existing")[0] == 0
