"""The ``attest`` commands as a user runs them: a simulated PCCS, ``attest serve --pccs`` over TLS
(ready line, collateral fetched once then cached), the ``attest QUOTE`` client, ``keys rotate``."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from sgx_quote_helper.cli import cli

from .attest_helpers import tls_files

CMD = [sys.executable, "-m", "sgx_quote_helper"]


@contextmanager
def daemon(args: list[str], ready_prefix: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen([*CMD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith(ready_prefix):
            proc.kill()
            raise AssertionError(f"no ready line: {line!r} {proc.stderr.read() if proc.stderr else ''}")
        yield proc, line.split(" at ", 1)[1].split()[0]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_serve_with_pccs_and_the_client(tmp_path: Path) -> None:
    plat = tmp_path / "plat"
    assert run("sim", "init", "--state-dir", str(plat)).returncode == 0
    assert (
        run(
            "sim", "root-ca", "--state-dir", str(plat), "--der", "--out", str(tmp_path / "root.der")
        ).returncode
        == 0
    )
    runtime = b'{"pub": "runtime-secret-7f3a"}'
    (tmp_path / "rt.json").write_bytes(runtime)
    import hashlib

    rd = hashlib.sha256(runtime).hexdigest()
    q = run("sim", "quote", "--state-dir", str(plat), "--report-data", rd, "--mrenclave", "ab" * 32,
            "--isv-svn", "5", "--out", str(tmp_path / "q.bin"))  # fmt: skip
    assert q.returncode == 0, q.stderr
    cert, key = tls_files(tmp_path / "tls")
    with daemon(
        ["pccs", "serve", "--simulated", "--state-dir", str(plat), "--port", "0"], "pccs ready at "
    ) as (_, pccs):
        serve = ["attest", "serve", "--key-dir", str(tmp_path / "keys"), "--pccs", pccs, "--port", "0",
                 "--root-ca", str(tmp_path / "root.der"), "--tls-cert", str(cert), "--tls-key", str(key),
                 "--log-format", "json", "--update", "standard"]  # fmt: skip
        with daemon(serve, "attest ready at https://127.0.0.1:") as (proc, url):
            for _ in range(3):
                out = run("attest", str(tmp_path / "q.bin"), "--url", url, "--ca", str(cert),
                          "--runtime-data", str(tmp_path / "rt.json"), "--runtime-json", "--json")  # fmt: skip
                assert out.returncode == 0, out.stderr
            token = json.loads(out.stdout)
            human = run("attest", "client", str(tmp_path / "q.bin"), "--url", url, "--ca", str(cert),
                        "--runtime-data", str(tmp_path / "rt.json"))  # fmt: skip
            refused = run(
                "attest", str(tmp_path / "q.bin"), "--url", url, "--ca", str(cert)
            )  # fine: no runtime data
            wrong = run(
                "attest",
                str(tmp_path / "q.bin"),
                "--url",
                url,
                "--ca",
                str(cert),
                "--runtime-data",
                str(cert),
            )
            import ssl

            ctx = ssl.create_default_context(cafile=str(cert))
            with urllib.request.urlopen(f"{url}/metrics", context=ctx, timeout=30) as resp:
                metrics = resp.read().decode()
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
    assert token["header"]["alg"] == "RS256" and token["claims"]["x-ms-sgx-mrenclave"] == "ab" * 32
    assert token["claims"]["x-ms-sgx-svn"] == 5 and token["claims"]["x-ms-runtime"] == {
        "pub": "runtime-secret-7f3a"
    }
    assert token["claims"]["iss"] == url
    assert (
        human.returncode == 0
        and "token OK" in human.stdout
        and "x-ms-sgx-mrenclave: " + "ab" * 32 in human.stdout
    )
    assert refused.returncode == 0
    assert wrong.returncode == 1 and "InvalidParameter" in wrong.stderr
    # the PCCS was asked once: the other attestations used the cache (the warm path)
    assert 'attest_collateral_fetches_total{outcome="ok"} 1.0' in metrics
    # JSON logs, and never the quote or the runtime data
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(r.get("result") == "issued" and r.get("route") == "SgxEnclave" for r in lines)
    quote_b64 = __import__("base64").urlsafe_b64encode((tmp_path / "q.bin").read_bytes()[:48]).decode()[:40]
    assert quote_b64 not in stderr and "runtime-secret-7f3a" not in stderr
    assert stat.S_IMODE(os.stat(tmp_path / "keys" / "signing-0001.key").st_mode) == 0o600


def test_serve_refuses_unsafe_or_incomplete_settings(tmp_path: Path) -> None:
    r = CliRunner()
    no_source = r.invoke(cli, ["attest", "serve", "--key-dir", str(tmp_path / "k")])
    assert no_source.exit_code == 2 and "exactly one of --pccs URL or --collateral FILE" in no_source.output
    public = r.invoke(
        cli, ["attest", "serve", "--key-dir", str(tmp_path / "k"), "--pccs", "http://x", "--host", "0.0.0.0"]
    )
    assert public.exit_code == 2 and "plain HTTP" in public.output
    (tmp_path / "bad.policy").write_text("version=1.0;\nauthorizationrules { => permit() };")
    bad = r.invoke(
        cli,
        [
            "attest",
            "serve",
            "--key-dir",
            str(tmp_path / "k"),
            "--pccs",
            "http://x",
            "--policy",
            str(tmp_path / "bad.policy"),
        ],
    )
    assert bad.exit_code == 2 and "line 2, column 34" in bad.output
    baseline = r.invoke(
        cli, ["attest", "serve", "--key-dir", "k", "--collateral", "c.json", "--update", "early"]
    )
    assert baseline.exit_code == 2 and "need --pccs URL" in baseline.output
    lifetime = r.invoke(
        cli, ["attest", "serve", "--key-dir", "k", "--pccs", "http://x", "--token-lifetime", "soon"]
    )
    assert lifetime.exit_code == 2 and "duration" in lifetime.output


def test_keys_rotate_and_list(tmp_path: Path) -> None:
    r = CliRunner()
    first = r.invoke(cli, ["attest", "keys", "rotate", "--key-dir", str(tmp_path / "k")])
    second = r.invoke(cli, ["attest", "keys", "rotate", "--key-dir", str(tmp_path / "k")])
    assert first.exit_code == 0 and "added signing key 1" in first.output
    assert second.exit_code == 0 and "added signing key 2" in second.output
    listing = r.invoke(cli, ["attest", "keys", "list", "--key-dir", str(tmp_path / "k")])
    lines = listing.output.splitlines()
    assert "signing" in lines[0] and "next (signs from" in lines[1]  # published 5 min before it signs


def test_help_teaches() -> None:
    r = CliRunner()
    top = r.invoke(cli, ["attest", "--help"])
    assert top.exit_code == 0 and "Azure Attestation" in top.output and "attest quote.bin --url" in top.output
    serve = r.invoke(cli, ["attest", "serve", "--help"])
    assert (
        "/attest/SgxEnclave" in serve.output and "--root-ca" in serve.output and "2020-10-01" in serve.output
    )
    assert "Azure Attestation" in r.invoke(cli, ["--help"]).output
