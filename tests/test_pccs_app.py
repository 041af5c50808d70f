"""pccs.app and ``pccs serve|refresh``: bad requests get clean 4xx with a JSON body, health and
metrics answer, and the CLI prints its readiness line, serves both modes on loopback, stops on
SIGTERM, and refreshes a cache."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgx_quote_helper.cli import cli
from sgx_quote_helper.pccs.app import make_app
from sgx_quote_helper.pccs.store import SimulatedStore
from sgx_quote_helper.sim.platform import Platform

from .conftest import real_dir
from .pccs_fakes import PHALA_FMSPC, Clock, app_in_thread, fake_pcs_in_thread
from .test_pccs_store import _get

READY = re.compile(r"pccs ready at (http://\S+) \((\w+)\)")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Platform:
    return Platform.init(tmp_path_factory.mktemp("pccs-app") / "p")


@pytest.fixture(scope="module")
def url(platform: Platform) -> Iterator[str]:
    with app_in_thread(make_app(SimulatedStore([platform], Clock(datetime.now(UTC))))) as base:
        yield base


TCB = "/sgx/certification/v4/tcb"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (TCB, 400),
        (f"{TCB}?fmspc=", 400),
        (f"{TCB}?fmspc=00A0671100", 400),
        (f"{TCB}?fmspc=xyzxyzxyzxyz", 400),
        (f"{TCB}?fmspc=00A067110000&fmspc=00A067110000", 400),
        (f"{TCB}?fmspc=00A067110000&update=sometimes", 400),
        ("/sgx/certification/v4/pckcrl?ca=nobody", 400),
        ("/sgx/certification/v4/pckcert?cpusvn=00", 400),
        ("/nothing/here", 404),
        ("/sgx/certification/v9/tcb?fmspc=00A067110000", 404),
        (f"{TCB}?fmspc=00A067110000&pad={'a' * 20000}", 414),
    ],
)
def test_bad_requests_get_json_4xx(url: str, path: str, status: int) -> None:
    got, body, headers = _get(url + path)
    assert got == status
    assert headers["Content-Type"].startswith("application/json")
    obj = json.loads(body)
    assert set(obj) == {"error", "message"}


def test_request_line_beyond_the_parser_limit_is_refused(url: str) -> None:
    got, _, _ = _get(f"{url}{TCB}?fmspc=00A067110000&pad={'a' * 70000}")
    assert got == 400
    assert _get(url + "/healthz")[0] == 200  # and the server carries on


def test_wrong_method_is_405_json(url: str) -> None:
    from urllib.error import HTTPError
    from urllib.request import Request, urlopen

    with pytest.raises(HTTPError) as info:
        urlopen(Request(url + "/healthz", data=b"x", method="POST"), timeout=10)
    assert info.value.code == 405
    assert json.loads(info.value.read())["error"] == "method-not-allowed"


def test_health_and_metrics(url: str, platform: Platform) -> None:
    for path in ("/", "/healthz"):
        status, body, _ = _get(url + path)
        assert status == 200 and json.loads(body) == {"status": "ok", "mode": "simulated"}
    assert _get(f"{url}{TCB}?fmspc={platform.identity.fmspc.hex()}")[0] == 200
    _get(f"{url}{TCB}?fmspc=zz")
    status, text, headers = _get(url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    metrics = text.decode()
    assert re.search(r'pccs_requests_total\{endpoint="sgx/v4/tcb",status="200"\} [1-9]', metrics)
    assert re.search(r'pccs_requests_total\{endpoint="other",status="400"\} [1-9]', metrics)
    assert "pccs_request_duration_seconds_bucket" in metrics


# -- the CLI ---------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _serve(*args: str) -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from sgx_quote_helper.cli import main; main()",
            "pccs",
            "serve",
            "--port",
            "0",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the readiness line (or EOF if it failed)
    m = READY.search(line)
    if m is None:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"no readiness line: {line!r} {err[-2000:]}")
    return proc, m.group(1), m.group(2)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err[-2000:]
    return err


def test_cli_serves_simulated_and_stops_on_sigterm(platform: Platform) -> None:
    proc, base, mode = _serve("--simulated", "--state-dir", str(platform.state.path))
    try:
        assert mode == "simulated"
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base) and not base.endswith(":0")
        assert _get(base + "/healthz")[0] == 200
        assert _get(f"{base}{TCB}?fmspc={platform.identity.fmspc.hex()}")[0] == 200
    finally:
        err = _stop(proc)
    assert '"GET /healthz' in err  # the access log


def test_cli_update_sets_the_default_baseline(platform: Platform) -> None:
    proc, base, _ = _serve("--simulated", "--state-dir", str(platform.state.path), "--update", "early")
    try:
        fmspc = platform.identity.fmspc.hex()
        _, body, _ = _get(f"{base}{TCB}?fmspc={fmspc}")
        assert json.loads(body)["tcbInfo"]["tcbEvaluationDataNumber"] == 18  # early
        _, body, _ = _get(f"{base}{TCB}?fmspc={fmspc}&update=standard")
        assert json.loads(body)["tcbInfo"]["tcbEvaluationDataNumber"] == 17
    finally:
        _stop(proc)


def test_cli_caching_mode_and_refresh(tmp_path: Path) -> None:
    real_dir("phala-sgx-v3-processor")
    db = tmp_path / "pccs.sqlite"
    with fake_pcs_in_thread() as (pcs, upstream):
        proc, base, mode = _serve("--upstream", upstream, "--db", str(db), "--api-key", "k1")
        try:
            assert mode == "caching"
            for path in (f"{TCB}?fmspc={PHALA_FMSPC}", "/sgx/certification/v4/qe/identity"):
                assert _get(base + path)[0] == 200
            assert "pccs_cache_entries 2.0" in _get(base + "/metrics")[1].decode()
        finally:
            _stop(proc)
        assert pcs.api_keys and set(pcs.api_keys) == {"k1"}
        before = len(pcs.hits)
        result = CliRunner().invoke(cli, ["pccs", "refresh", "--db", str(db), "--upstream", upstream])
        assert result.exit_code == 0, result.output
        assert result.output.count("ok") == 2
        assert len(pcs.hits) == before + 2
        result = CliRunner().invoke(
            cli, ["pccs", "refresh", "--db", str(db), "--upstream", upstream, "--due-only"]
        )
        # the real collateral's nextUpdate (2025) is past: every entry is due
        assert result.exit_code == 0 and result.output.count("ok") == 2
        assert len(pcs.hits) == before + 4
        listed = CliRunner().invoke(cli, ["pccs", "list", "--db", str(db), "--json"])
        assert listed.exit_code == 0
        rows = json.loads(listed.output)
        assert len(rows) == 2 and {r["state"] for r in rows} == {"expired"}  # 2025 collateral, 2026 clock
        assert "/sgx/certification/v4/qe/identity?update=standard" in {r["key"] for r in rows}
        assert CliRunner().invoke(cli, ["pccs", "list", "--db", str(tmp_path / "none.sqlite")]).exit_code == 2
        pcs.mode = "500"
        result = CliRunner().invoke(cli, ["pccs", "refresh", "--db", str(db), "--upstream", upstream])
        assert result.exit_code == 1 and "failed" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["pccs", "serve"],
        ["pccs", "serve", "--simulated", "--upstream", "http://127.0.0.1:1"],
        ["pccs", "serve", "--simulated", "--db", "x.sqlite"],
        ["pccs", "serve", "--upstream", "ftp://example"],
        ["pccs", "serve", "--upstream", "http://127.0.0.1:1", "--state-dir", "x"],
        ["pccs", "serve", "--simulated", "--root-ca", __file__],
        ["pccs", "serve", "--upstream", "http://127.0.0.1:1", "--root-ca", __file__],  # not a certificate
        ["pccs", "serve", "--simulated", "--update", "late"],
    ],
)
def test_cli_usage_errors_exit_2(args: list[str], tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "error:" in result.output.lower()  # ours ("error: ...") or click's ("Error: Invalid value")


def test_cli_simulated_without_platform_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["pccs", "serve", "--simulated", "--state-dir", str(tmp_path / "none")])
    assert result.exit_code == 2 and "sim init" in result.output


def test_cli_help_has_examples() -> None:
    for args in (["pccs", "--help"], ["pccs", "serve", "--help"], ["pccs", "refresh", "--help"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0
    assert "Examples:" in CliRunner().invoke(cli, ["pccs", "serve", "--help"]).output


_QUERY_CHARS = st.sampled_from(
    [*"0123456789abcdefABCDEFxyz=&%;+/?#[]@!$'()*,-._~ ", "%ff", "%00", "%zz", "%C3%A9", "%e9"]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from([TCB, "/sgx/certification/v4/pckcrl", "/sgx/certification/v4/pckcert", "/x"]),
    query=st.lists(_QUERY_CHARS, max_size=60).map("".join),
)
def test_fuzz_raw_queries_never_crash_the_server(url: str, path: str, query: str) -> None:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest(
            "GET", path + "?" + query.replace(" ", "%20").replace("#", "%23"), skip_accept_encoding=True
        )
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status in (200, 400, 404, 414), (resp.status, body[:200])
    if resp.status != 200:
        assert json.loads(body)["error"]


def test_head_requests_get_headers_only(url: str, platform: Platform) -> None:
    from urllib.request import Request, urlopen

    tcb = f"{url}{TCB}?fmspc={platform.identity.fmspc.hex()}"
    with urlopen(Request(tcb, method="HEAD"), timeout=10) as resp:
        assert resp.status == 200 and resp.read() == b""
        assert resp.headers["TCB-Info-Issuer-Chain"].startswith("-----BEGIN%20CERTIFICATE-----")
        assert int(resp.headers["Content-Length"]) == len(_get(tcb)[1])
