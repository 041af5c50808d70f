"""testing/restart.py: the zero-downtime restart fault test, short slice (the long run is
``python bench/restart_fault.py --restarts 20 --clients 32``).

32 clients (half Intel-style: one connection per request, no retry; half our QuoteClient) quote
continuously against real ``serve`` subprocesses while the daemon is restarted 5 times per mode.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sgx_quote_helper.abi.report import Report, ReportBody
from sgx_quote_helper.testing.restart import check_quote, run_restarts

from ._aesm_helpers import short_dir


@pytest.fixture
def root() -> Iterator[Path]:
    with short_dir() as d:
        yield d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_rolling_restarts_lose_nothing_even_for_clients_that_never_retry(root: Path) -> None:
    port = free_port()  # every generation serves metrics on the same port (SO_REUSEPORT overlap)
    res = run_restarts(
        root, "rolling", restarts=5, clients=32, settle=0.3, daemon_args=("--metrics-port", str(port))
    )
    for kind in ("intel", "ours"):
        assert res[kind]["failed"] == 0, res[kind]["errors"]
        assert res[kind]["bad_quotes"] == 0, res[kind]["errors"]
        assert res[kind]["ok"] > 0
    assert res["old_exit_codes"] == [0] * 6  # five replaced daemons and the last one, all clean
    logs = [p.read_text() for p in sorted(root.glob("daemon-*.log"))]
    assert len(logs) == 6
    assert all(f"metrics on http://127.0.0.1:{port}/metrics" in text for text in logs)
    assert all("took over" in text for text in logs[1:])


@pytest.mark.slow
def test_sigkill_restarts_lose_nothing_for_our_client(root: Path) -> None:
    res = run_restarts(root, "sigkill", restarts=5, clients=32, settle=0.3)
    assert res["ours"]["failed"] == 0, res["ours"]["errors"]
    assert res["ours"]["bad_quotes"] == 0 and res["intel"]["bad_quotes"] == 0
    assert res["ours"]["ok"] > 0 and res["intel"]["ok"] > 0


@pytest.mark.slow
def test_quote_check_catches_corruption(root: Path) -> None:
    """The harness's quote check is not vacuous: a flipped byte, a truncation or another app's
    report are all caught."""
    from sgx_quote_helper.client import QuoteClient
    from sgx_quote_helper.sim.platform import Platform
    from sgx_quote_helper.testing.restart import Daemons

    daemons = Daemons(root)
    daemons.start()
    try:
        client = QuoteClient(daemons.path)
        init = client.init_quote_ex()
        rep = Platform.open(daemons.state).ereport(init.target_info, b"x".ljust(64, b"\0"))
        quote = client.get_quote_ex(rep).quote
    finally:
        daemons.stop()
    keys: dict = {}  # type: ignore[type-arg]
    assert check_quote(quote, rep, keys) is None
    flipped = bytearray(quote)
    flipped[100] ^= 1
    assert check_quote(bytes(flipped), rep, keys) is not None
    assert check_quote(quote[: len(quote) // 2], rep, keys) is not None
    other = Report(ReportBody(report_data=b"y" * 64), key_id=bytes(32), mac=bytes(16))
    assert check_quote(quote, other, keys) is not None
    sig_flipped = bytearray(quote)
    sig_flipped[48 + 384 + 4 + 10] ^= 1  # inside the ECDSA signature
    assert check_quote(bytes(sig_flipped), rep, keys) is not None
