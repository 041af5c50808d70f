"""server/metrics.py and the request log: the Prometheus endpoint (requests by type and result,
latency histogram, in flight, connections, refusals, engine errors), the per-request debug line and
its JSON form, and that no report data or quote bytes reach the logs."""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sgx_quote_helper.abi.codes import AesmStatus, QuoteLibStatus
from sgx_quote_helper.cli._logs import JsonFormatter
from sgx_quote_helper.client import QuoteClient
from sgx_quote_helper.engine.base import QuoteResult
from sgx_quote_helper.server.config import ServerConfig
from sgx_quote_helper.server.metrics import LATENCY_BUCKETS, ServerMetrics, request_type_name, result_name
from sgx_quote_helper.service import AesmService
from sgx_quote_helper.testing.daemon import ServerThread
from sgx_quote_helper.testing.fakes import FakeEngine
from sgx_quote_helper.wire import messages as m

from ._aesm_helpers import quote_frame, report, short_dir, transact_raw


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with short_dir() as d:
        yield d


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_labels() -> None:
    assert request_type_name(m.GetQuoteExRequest) == "GetQuoteEx"
    assert (
        result_name(0) == "SUCCESS" and result_name(18) == "BUSY" and result_name(9999).startswith("UNKNOWN")
    )


def test_histogram_buckets() -> None:
    mt = ServerMetrics()
    for s in (0.00005, 0.0003, 0.0003, 99.0):
        mt.quote_latency(s)
    fams = {f.name: f for f in mt.collect()}
    samples = {
        (s.name, s.labels.get("le")): s.value for s in fams["sgx_quote_helper_quote_latency_seconds"].samples
    }
    assert samples[("sgx_quote_helper_quote_latency_seconds_bucket", "0.0001")] == 1
    assert samples[("sgx_quote_helper_quote_latency_seconds_bucket", "0.0005")] == 3
    assert samples[("sgx_quote_helper_quote_latency_seconds_bucket", str(LATENCY_BUCKETS[-1]))] == 3
    assert samples[("sgx_quote_helper_quote_latency_seconds_bucket", "+Inf")] == 4
    assert samples[("sgx_quote_helper_quote_latency_seconds_count", None)] == 4


class _FailingEngine(FakeEngine):
    def get_quote(self, *args: object, **kw: object) -> QuoteResult:
        from sgx_quote_helper.errors import EngineError

        raise EngineError(QuoteLibStatus.NO_PLATFORM_CERT_DATA, "simulated engine failure")


def test_metrics_endpoint(sock_dir: Path) -> None:
    path = sock_dir / "s"
    cfg = ServerConfig(socket_path=path, metrics_port=0, max_connections=1000)
    with ServerThread(AesmService(FakeEngine(initialised=True)), cfg) as d:
        assert d.server is not None and d.server.metrics_server is not None
        assert d.server.metrics_server.host == "127.0.0.1"  # loopback by default
        port = d.server.metrics_server.port
        c = QuoteClient(path)
        assert c.get_supported_att_key_id_num() == 1
        for tag in range(3):
            resp = transact_raw(path, quote_frame(report(tag)))
            assert isinstance(resp, m.GetQuoteExResponse) and resp.error_code == AesmStatus.SUCCESS
        resp = transact_raw(path, quote_frame(report(9), buf_size=10))  # too small a buffer
        assert isinstance(resp, m.GetQuoteExResponse) and resp.error_code != AesmStatus.SUCCESS
        assert transact_raw(path, b"\x02\x00\x00\x00\xff\xff") is None  # garbage: closed
        got = scrape(port)
    p = "sgx_quote_helper_"
    assert got[p + 'requests_total{result="SUCCESS",type="GetQuoteEx"}'] == 3
    assert got[p + 'requests_total{result="SUCCESS",type="GetSupportedAttKeyIDNum"}'] == 1
    assert sum(v for k, v in got.items() if k.startswith(p + "requests_total{") and "GetQuoteEx" in k) == 4
    assert got[p + "quote_latency_seconds_count"] == 4
    assert got[p + "connections_total"] == 6
    assert got[p + "in_flight"] == 0
    assert got[p + "open_connections"] >= 0
    assert got[p + 'refused_total{reason="client_error"}'] == 1
    assert got[p + 'engine_errors_total{type="GetQuoteEx"}'] == 1


def test_engine_errors_counted(sock_dir: Path) -> None:
    path = sock_dir / "s"
    with ServerThread(AesmService(_FailingEngine(initialised=True)), ServerConfig(socket_path=path)) as d:
        resp = transact_raw(path, quote_frame(report(1)))
        assert isinstance(resp, m.GetQuoteExResponse) and resp.error_code not in (0, AesmStatus.BUSY)
        assert d.server is not None and d.server.metrics.engine_errors == {m.GetQuoteExRequest: 1}


def test_debug_line_per_request_and_no_secrets_in_logs(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = sock_dir / "s"
    rep = report(0x5EC12E7)  # distinctive report data
    with (
        caplog.at_level(logging.DEBUG),
        ServerThread(AesmService(FakeEngine(initialised=True)), ServerConfig(socket_path=path)),
    ):
        resp = transact_raw(path, quote_frame(rep))
        assert isinstance(resp, m.GetQuoteExResponse) and resp.quote
        transact_raw(path, b"\x10\x00\x00\x00" + rep.body.report_data[:16])  # a garbage frame of it
    lines = [r for r in caplog.records if getattr(r, "request", None) == "GetQuoteEx"]
    assert len(lines) == 1
    rec = lines[0]
    assert rec.result == "SUCCESS" and rec.code == 0 and rec.duration_ms >= 0  # type: ignore[attr-defined]
    assert rec.pid > 0 and rec.uid >= 0  # type: ignore[attr-defined]
    everything = "\n".join(
        f"{r.getMessage()} {vars(r)}" + (JsonFormatter().format(r)) for r in caplog.records
    ).lower()
    quote = resp.quote.rstrip(b"\0")
    for secret in (rep.body.report_data, rep.body.report_data[:16], quote[-64:], rep.to_bytes()[:32]):
        assert secret.hex() not in everything
        assert repr(secret)[2:20].lower() not in everything


def test_json_formatter_keeps_structured_fields() -> None:
    rec = logging.LogRecord("x.y", logging.DEBUG, "f.py", 1, "request %s", ("GetQuoteEx",), None)
    rec.request, rec.code, rec.duration_ms = "GetQuoteEx", 0, 0.25
    out = json.loads(JsonFormatter().format(rec))
    assert out["message"] == "request GetQuoteEx" and out["level"] == "debug" and out["logger"] == "x.y"
    assert out["request"] == "GetQuoteEx" and out["code"] == 0 and out["duration_ms"] == 0.25


@pytest.mark.slow
def test_serve_json_logs_at_debug_have_one_line_per_request_and_no_payloads(sock_dir: Path) -> None:
    """A real ``serve --log-format json -vv`` subprocess with the simulated engine quotes a report:
    every line is JSON, the quote has its request line, and neither the report data nor any part
    of the quote appears anywhere in the log."""
    from sgx_quote_helper.sim.platform import Platform
    from sgx_quote_helper.testing.restart import Daemons

    daemons = Daemons(sock_dir, ("--log-format", "json", "-vv"))
    daemons.start()
    try:
        client = QuoteClient(daemons.path)
        init = client.init_quote_ex()
        report_data = bytes(range(0x40, 0x80))
        rep = Platform.open(daemons.state).ereport(init.target_info, report_data)
        quote = client.get_quote_ex(rep).quote
    finally:
        daemons.stop()
    assert daemons.exit_codes == [0]
    lines = [json.loads(line) for line in (sock_dir / "daemon-1.log").read_text().splitlines()]
    quotes = [x for x in lines if x.get("request") == "GetQuoteEx"]
    assert len(quotes) == 1 and quotes[0]["result"] == "SUCCESS" and quotes[0]["level"] == "debug"
    assert quotes[0]["pid"] == os.getpid() and quotes[0]["uid"] == os.getuid()
    text = (sock_dir / "daemon-1.log").read_text().lower()
    for secret in (report_data, report_data[:8], rep.body.mr_enclave, quote[-64:], quote[436:500]):
        assert secret.hex() not in text
