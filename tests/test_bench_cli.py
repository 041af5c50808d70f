"""``sgx-quote-helper bench`` (quote, verify) and the benchmark suite's smoke run.

The quote benchmark loads a real daemon (our server on a simulated platform in a background
thread; the load generator's worker processes connect to its socket) for about a second. Only
behaviour is asserted (counts, zero errors, ordered percentiles, verdicts), never speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from sgx_quote_helper.abi.codes import AesmStatus
from sgx_quote_helper.benchmark.loadgen import run_load
from sgx_quote_helper.benchmark.spec import LoadSpec
from sgx_quote_helper.benchmark.timing import LatencySamples, percentile
from sgx_quote_helper.benchmark.workload import prepare_workload
from sgx_quote_helper.cli.bench import bench
from sgx_quote_helper.engine.simulated import SimulatedEngine
from sgx_quote_helper.server.config import ServerConfig
from sgx_quote_helper.service import AesmService
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.testing.daemon import ServerThread
from sgx_quote_helper.wire import messages as m

from ._aesm_helpers import short_dir
from .conftest import ROOT, load_expected, real_dir


class Served:
    def __init__(self, root: Path) -> None:
        self.state = root / "plat"
        self.socket = root / "aesm.socket"
        self.platform = Platform.init(self.state)
        self.thread = ServerThread(
            AesmService(SimulatedEngine(self.platform)), ServerConfig(socket_path=self.socket)
        )


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with short_dir() as root:
        s = Served(root)
        with s.thread:
            yield s


def _percentiles_ordered(lat: dict[str, float]) -> None:
    assert 0 < lat["min_us"] <= lat["p50_us"] <= lat["p90_us"] <= lat["p99_us"] <= lat["max_us"]


@pytest.mark.slow
def test_bench_quote_json(served: Served) -> None:
    args = ["quote", "--socket", str(served.socket), "--state-dir", str(served.state), "--clients", "4",
            "--duration", "1", "--warmup", "0.2", "--json"]  # fmt: skip
    res = CliRunner().invoke(bench, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["request"] == "quote" and out["style"] == "aesmd" and out["clients"] == 4
    assert out["ok"] > 0 and out["requests"] == out["ok"] + out["error_count"]
    assert out["error_count"] == 0 and out["errors"] == {}
    assert out["quotes_per_s"] == out["ok_per_s"] > 0
    assert out["latency_us"]["count"] == out["requests"]
    _percentiles_ordered(out["latency_us"])
    assert out["machine"]["nproc"] >= 1 and "cryptography" in out["machine"]["libraries"]


def test_bench_quote_with_a_report_file(served: Served, tmp_path: Path) -> None:
    from sgx_quote_helper.client import QuoteClient

    target = QuoteClient(served.socket).init_quote_ex().target_info
    report = tmp_path / "report.bin"
    report.write_bytes(served.platform.ereport(target, b"from an enclave").to_bytes())
    args = ["quote", "--socket", str(served.socket), "--report", str(report), "--clients", "1",
            "--duration", "0.2", "--warmup", "0", "--json"]  # fmt: skip
    res = CliRunner().invoke(bench, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["ok"] > 0 and out["errors"] == {}
    assert out["service"].startswith("sgx-quote-helper")
    report.write_bytes(b"short")
    res = CliRunner().invoke(bench, args)
    assert res.exit_code == 2 and "432 bytes" in res.stderr


def test_bench_quote_human_output_and_keepalive(served: Served) -> None:
    args = ["quote", "--socket", str(served.socket), "--request", "size", "--style", "keepalive",
            "--clients", "2", "--duration", "0.3", "--warmup", "0"]  # fmt: skip
    res = CliRunner().invoke(bench, args)
    assert res.exit_code == 0, res.output
    assert "GetQuoteSizeEx, keepalive style, 2 clients" in res.stdout
    assert "service: sgx-quote-helper" in res.stdout
    assert "errors: none" in res.stdout


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["quote-dummy", "key-ids"])
def test_request_kinds_needing_no_enclave(served: Served, kind: str) -> None:
    workload = prepare_workload(served.socket, kind)  # type: ignore[arg-type]
    result = run_load(
        LoadSpec(str(served.socket), workload, clients=2, duration=0.3, warmup=0.0, processes=2)
    )
    assert result.processes == 2
    assert result.ok > 0 and result.errors == {}
    _percentiles_ordered(result.latency.to_dict())
    assert result.to_dict()["quotes_per_s"] is None


def test_total_requests_ends_the_run(served: Served) -> None:
    workload = prepare_workload(served.socket, "quote", state_dir=served.state)
    result = run_load(LoadSpec(str(served.socket), workload, clients=3, warmup=0.0, total_requests=50))
    assert result.ok == 50 and result.errors == {}
    assert result.window_s > 0


def test_judge_labels_wrong_answers(served: Served) -> None:
    workload = prepare_workload(served.socket, "quote", state_dir=served.state)
    busy = m.encode_response(m.GetQuoteExResponse(AesmStatus.BUSY))
    assert workload.judge(busy) == "BUSY(18)"
    assert (
        workload.judge(m.encode_response(m.GetQuoteExResponse(AesmStatus.SUCCESS, b"\0" * 10)))
        == "bad_response"
    )
    assert (
        workload.judge(m.encode_response(m.GetQuoteSizeExResponse(AesmStatus.SUCCESS, 10))) == "bad_response"
    )
    assert workload.judge(b"\xff\xff\xff") == "bad_response"
    assert (
        workload.judge(
            m.encode_response(m.GetQuoteExResponse(AesmStatus.SUCCESS, b"\0" * workload.expect_len))
        )
        == "ok"
    )  # type: ignore[operator]


def test_bench_quote_refused_report_and_missing_service(served: Served, tmp_path: Path) -> None:
    other = Platform.init(tmp_path / "other")  # a different platform: its REPORTs fail the QE's MAC check
    res = CliRunner().invoke(bench, ["quote", "--socket", str(served.socket), "--state-dir", str(other.state.path),
                                     "--duration", "0.1"])  # fmt: skip
    assert res.exit_code == 1
    assert "INVALID_REPORT" in res.stderr and "--state-dir" in res.stderr
    res = CliRunner().invoke(bench, ["quote", "--socket", str(tmp_path / "none.sock"), "--request", "size"])
    assert res.exit_code == 2 and "cannot reach a quote service" in res.stderr
    res = CliRunner().invoke(
        bench, ["quote", "--socket", str(served.socket), "--state-dir", str(tmp_path / "x")]
    )
    assert res.exit_code == 2 and "no simulated platform" in res.stderr


def test_bench_verify_real_vector() -> None:
    folder = real_dir("phala-sgx-v3-processor")
    case = next(
        c for c in load_expected(folder)["cases"] if c["collateral"] == "collateral-2025-06.dcap-qvl.json"
    )
    args = ["verify", "--quote", str(folder / "quote.bin"), "--collateral", str(folder / case["collateral"]),
            "--now", str(case["now_unix"]), "--seconds", "0.05", "--json"]  # fmt: skip
    res = CliRunner().invoke(bench, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["cold_per_s"] > 0 and out["warm_per_s"] > 0
    assert out["iterations"]["cold"] > 0 and out["iterations"]["warm"] > 0
    assert out["status"] == case["dcap_qvl_0_7_0"]["status"]
    assert out["tee"] == "SGX"


def test_bench_verify_refuses_a_quote_that_does_not_verify() -> None:
    folder = real_dir("phala-sgx-v3-processor")
    args = ["verify", "--quote", str(folder / "quote.bin"), "--collateral",
            str(folder / "collateral-2025-06.dcap-qvl.json"), "--now", "2040-01-01T00:00:00Z", "--seconds", "0.05"]  # fmt: skip
    res = CliRunner().invoke(bench, args)
    assert res.exit_code == 1
    assert "does not verify" in res.stderr


def test_latency_samples_merge_and_percentiles() -> None:
    a = LatencySamples([5_000, 1_000, 3_000])
    b = LatencySamples.from_bytes(LatencySamples([2_000, 4_000]).to_bytes())
    a.merge(b)
    s = a.summary()
    assert (s.count, s.min_us, s.p50_us, s.max_us, s.mean_us) == (5, 1.0, 3.0, 5.0, 3.0)
    assert percentile(list(range(1, 101)), 0.99) == 99 and percentile([], 0.5) == 0
    assert LatencySamples().summary().count == 0


@pytest.mark.slow
def test_suite_dry_run(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "bench" / "run_suite.py"), "--dry-run", "--out", str(tmp_path)]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        cmd.append("--no-chart")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    [result] = tmp_path.glob("*-dry-run.json")
    doc = json.loads(result.read_text())
    assert doc["profile"] == "dry-run"
    for key in ("machine", "ceilings", "startup", "service", "one_client", "verifier", "memory", "targets"):
        assert key in doc
    assert {lv["clients"] for lv in doc["service"]["uvloop"]["levels"]} == {1, 16, 64}
    assert all(lv["errors"] == 0 and lv["quotes_per_s"] > 0 for lv in doc["service"]["asyncio"]["levels"])
    assert doc["machine"]["load_average_before"] and doc["machine"]["load_average_after"]
    assert all(set(t) == {"value", "target", "met"} for t in doc["targets"].values())
    assert "| what | result |" in result.with_suffix(".md").read_text()
