"""``sgx-quote-helper bench qgs``: a short run against `qgs serve` (a child process on a simulated
platform), the JSON it prints and writes, zero errors; how replies are judged; clear refusals.
Only behaviour is asserted (counts, shape, ordered percentiles), never speed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from sgx_quote_helper.abi.qgs import GetPlatformInfoResponse, GetQuoteResponse
from sgx_quote_helper.benchmark.qgs import QgsReply, QgsWorkload, bench_td_report, prepare_qgs_workload
from sgx_quote_helper.benchmark.spec import LoadSpec
from sgx_quote_helper.cli.bench import bench
from sgx_quote_helper.client.qgs import QgsClient
from sgx_quote_helper.errors import TransportError
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.wire.qgs import encode_frame

from ._aesm_helpers import short_dir


@dataclass
class Qgs:
    state: Path
    socket: Path


def _start(cmd: list[str], ready: Callable[[], object]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "sgx_quote_helper", *cmd], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            ready()
            return proc
        except TransportError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.1)


@pytest.fixture(scope="module")
def qgs() -> Iterator[Qgs]:
    with short_dir() as root:
        Platform.init(root / "plat")
        q = Qgs(root / "plat", root / "qgs.sock")
        proc = _start(
            [
                "qgs",
                "serve",
                "--state-dir",
                str(q.state),
                "--socket",
                str(q.socket),
                "--handover-window",
                "0",
            ],
            lambda: QgsClient(q.socket, timeout=5).platform_info(),
        )
        try:
            yield q
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)


def _ordered(lat: dict[str, float]) -> None:
    assert 0 < lat["min_us"] <= lat["p50_us"] <= lat["p90_us"] <= lat["p99_us"] <= lat["max_us"]


def test_bench_qgs_short_run_json(qgs: Qgs, tmp_path: Path) -> None:
    out = tmp_path / "qgs.json"
    args = ["qgs", "--socket", str(qgs.socket), "--state-dir", str(qgs.state), "--clients", "2",
            "--mode", "framed,raw", "--duration", "0.3", "--warmup", "0", "--processes", "1",
            "--out", str(out), "--json"]  # fmt: skip
    res = CliRunner().invoke(bench, args)
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result == json.loads(out.read_text())
    assert result["benchmark"] == "qgs" and result["error_count"] == 0
    assert len(result["load_average_before"]) == len(result["load_average_after"]) == 3
    assert result["machine"]["nproc"] >= 1
    assert [(r["service"], r["mode"], r["clients"]) for r in result["runs"]] == [
        ("qgs framed", "framed", 2),
        ("qgs raw", "raw", 2),
    ]
    for run in result["runs"]:
        assert run["style"] == "qgs" and run["sequence"] == f"qgs-{run['mode']}"
        assert run["ok"] > 0 and run["requests"] == run["ok"] and run["errors"] == {}
        assert run["quotes_per_s"] == run["ok_per_s"] > 0
        assert run["latency_us"]["count"] == run["requests"]
        assert len(run["load_average"]) == 3
        _ordered(run["latency_us"])
    assert "qgs framed, 2 client(s)" in res.stderr and "errors none" in res.stderr


@pytest.mark.slow
def test_bench_qgs_next_to_an_aesm_service(qgs: Qgs) -> None:
    aesm = qgs.socket.parent / "aesm.sock"
    from sgx_quote_helper.client import QuoteClient

    proc = _start(
        [
            *("serve", "--engine", "simulated", "--quiet", "--handover-window", "0"),
            *("--state-dir", str(qgs.state), "--socket", str(aesm)),
        ],
        lambda: QuoteClient(aesm, timeout=5, retry_deadline=0).get_supported_att_key_id_num(),
    )
    try:
        args = ["qgs", "--socket", str(qgs.socket), "--state-dir", str(qgs.state), "--aesm-socket", str(aesm),
                "--clients", "1,3", "--mode", "framed", "--duration", "0.3", "--warmup", "0"]  # fmt: skip
        res = CliRunner().invoke(bench, args)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert res.exit_code == 0, res.output
    rows = [line.split() for line in res.stdout.splitlines()[1:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("qgs", "framed", "1"), ("aesm", "quote", "1"), ("qgs", "framed", "3"), ("aesm", "quote", "3"),
    ]  # fmt: skip
    assert all(r[-1] == "0" and float(r[3].replace(",", "")) > 0 for r in rows)


def test_replies_are_judged(qgs: Qgs) -> None:
    framed = prepare_qgs_workload(qgs.socket, "framed", state_dir=qgs.state)
    raw = prepare_qgs_workload(qgs.socket, "raw", state_dir=qgs.state)
    n = framed.quote_size
    assert raw.quote_size == n > 1020 and raw.frame == framed.td_report and len(framed.frame) == 1052
    good = encode_frame(GetQuoteResponse(b"q" * n).to_bytes())
    assert framed.judge(good) == "ok"
    assert framed.judge(good[:-1]) == "transport"  # closed inside the reply
    assert framed.judge(b"") == "transport"
    assert framed.judge(encode_frame(GetQuoteResponse(b"q" * (n - 1)).to_bytes())) == "bad_response"
    assert framed.judge(encode_frame(GetQuoteResponse(error_code=0x12001).to_bytes())) == "qgs_error(0x12001)"
    other = encode_frame(GetPlatformInfoResponse(4, 13, b"\x01" * 16, b"\x02" * 16).to_bytes())
    assert framed.judge(other) == "bad_response"
    assert raw.judge(b"q" * n) == "ok"
    assert raw.judge(b"q" * (n + 1)) == "bad_response"
    assert raw.judge(b"") == "transport"  # raw mode refuses by closing
    # the reader stops at a complete framed reply (as QEMU/libtdx_attest), raw reads to the close
    reader = framed.reply()
    assert reader.feed(good[:10]) is None and reader.feed(good[10:]) == "ok"
    reader = raw.reply()
    assert reader.feed(b"q" * n) is None and reader.feed(b"") == "ok"
    assert isinstance(reader, QgsReply)


def test_a_qgs_workload_runs_only_in_the_qgs_style() -> None:
    w = QgsWorkload("raw", bytes(1024), bytes(1024), 5000)
    with pytest.raises(ValueError, match="qgs style"):
        LoadSpec("/x", w, style="aesmd")


def test_bench_qgs_refusals(qgs: Qgs, tmp_path: Path) -> None:
    base = ["qgs", "--socket", str(qgs.socket), "--duration", "0.1"]
    other = Platform.init(tmp_path / "other")  # its TDREPORTs fail this QGS's MAC check
    res = CliRunner().invoke(bench, [*base, "--state-dir", str(other.state.path), "--mode", "framed"])
    assert res.exit_code == 1 and "refused the TDREPORT" in res.stderr and "0x12001" in res.stderr
    res = CliRunner().invoke(bench, [*base, "--state-dir", str(other.state.path), "--mode", "raw"])
    assert res.exit_code == 2 and "closed with no data" in res.stderr
    (tmp_path / "short.bin").write_bytes(bytes(100))
    res = CliRunner().invoke(bench, [*base, "--td-report", str(tmp_path / "short.bin")])
    assert res.exit_code == 2 and "a TDREPORT is 1024 bytes, got 100" in res.stderr
    (tmp_path / "good.bin").write_bytes(bench_td_report(qgs.state))
    res = CliRunner().invoke(bench, [*base, "--td-report", str(tmp_path / "good.bin"), "--clients", "1",
                                     "--mode", "raw", "--warmup", "0", "--processes", "1", "--json"])  # fmt: skip
    assert res.exit_code == 0 and json.loads(res.stdout)["runs"][0]["ok"] > 0
    res = CliRunner().invoke(
        bench, ["qgs", "--socket", str(tmp_path / "none.sock"), "--state-dir", str(qgs.state)]
    )
    assert res.exit_code == 2 and "cannot get a quote from the QGS" in res.stderr
    res = CliRunner().invoke(bench, [*base, "--state-dir", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "no simulated platform" in res.stderr
    for bad in (["--clients", "0"], ["--clients", "x"], ["--mode", "vsock"]):
        res = CliRunner().invoke(bench, [*base, *bad])
        assert res.exit_code == 2 and "takes" in res.stderr
