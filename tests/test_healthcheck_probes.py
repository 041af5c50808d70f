"""cli/healthcheck.py --ready and --quote: the chart's readiness, liveness and startup probes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from sgx_quote_helper.cli import cli
from sgx_quote_helper.engine.base import QuotingEngine
from sgx_quote_helper.engine.select import select_engine
from sgx_quote_helper.server.config import ServerConfig
from sgx_quote_helper.server.instance import load_instance
from sgx_quote_helper.service import AesmService
from sgx_quote_helper.testing.daemon import ServerThread
from sgx_quote_helper.testing.fakes import FakeEngine

from ._aesm_helpers import short_dir

FAST = {"idle_timeout": 2.0, "read_timeout": 2.0, "path_check_interval": 0.05, "probe_timeout": 1.0}


@pytest.fixture
def root() -> Iterator[Path]:
    with short_dir() as d:
        yield d


def daemon(root: Path, pod: str, engine: QuotingEngine | None = None) -> ServerThread:
    inst = load_instance(root / pod)
    cfg = ServerConfig(socket_path=root / "aesm.socket", private_dir=root / pod, **FAST)  # type: ignore[arg-type]
    svc = AesmService(
        engine or FakeEngine(initialised=True),
        version="t",
        instance_id=inst.instance_id,
        started_ns=inst.started_ns,
    )
    return ServerThread(svc, cfg).start()


def probe(root: Path, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(
        cli, ["healthcheck", "--socket", str(root / "aesm.socket"), "--timeout", "2", *args]
    )
    return res.exit_code, res.output.strip()


def ready(root: Path, pod: str) -> tuple[int, str]:
    return probe(root, "--ready", "--private-dir", str(root / pod))


def test_ready_only_when_this_pods_daemon_serves_the_path(root: Path) -> None:
    code, out = ready(root, "pod-old")
    assert code == 1 and out.startswith("unhealthy: not ready:") and "does not answer yet" in out
    old = daemon(root, "pod-old")
    try:
        assert ready(root, "pod-old") == (
            0,
            f"ready: {root}/aesm.socket is served by this pod's daemon "
            f"(instance {old.service.instance_id}, pid {old.service.pid})",
        )
        code, out = ready(root, "pod-new")  # the new pod, its daemon not started yet
        assert code == 1
        assert f"still served by instance {old.service.instance_id}" in out
        new = daemon(root, "pod-new")
        try:
            assert ready(root, "pod-new")[0] == 0
            code, out = ready(root, "pod-old")
            assert code == 1 and ("newer instance" in out or "handed-over" in out)
            while old.server is not None and old.server.state != "handed-over":
                time.sleep(0.01)
            code, out = ready(root, "pod-old")
            assert code == 1 and "is handed-over" in out and "successor serves the socket path" in out
        finally:
            new.stop()
    finally:
        old.stop()


def test_ready_fails_for_a_daemon_standing_by(root: Path) -> None:
    old = daemon(root, "pod-old")
    new = daemon(root, "pod-new")
    try:
        old.stop()
        again = daemon(root, "pod-old")
        try:
            code, out = ready(root, "pod-old")
            assert code == 1 and "is standby" in out and "newer instance" in out
        finally:
            again.stop()
    finally:
        new.stop()


def test_ready_needs_the_private_dir(root: Path) -> None:
    code, out = probe(root, "--ready")
    assert code == 2 and "--private-dir" in out


def test_quote_probe_makes_and_checks_a_real_simulated_quote(root: Path) -> None:
    engine = select_engine("simulated", state_dir=root / "plat", create_state=True)
    d = daemon(root, "pod", engine)
    try:
        code, out = probe(
            root, "--quote", "--private-dir", str(root / "pod"), "--state-dir", str(root / "plat")
        )
        assert code == 0, out
        assert "signature and report checked; simulated engine" in out
        # a quote probe with another platform's state: its report's MAC does not verify at the QE
        select_engine("simulated", state_dir=root / "other", create_state=True).close()
        code, out = probe(
            root, "--quote", "--private-dir", str(root / "pod"), "--state-dir", str(root / "other")
        )
        assert code == 1 and "the quote path failed" in out
    finally:
        d.stop()
        engine.close()


def test_quote_probe_goes_to_this_pods_daemon_even_after_a_handover(root: Path) -> None:
    engine = select_engine("simulated", state_dir=root / "plat", create_state=True)
    old = daemon(root, "pod-old", engine)
    new = daemon(root, "pod-new", FakeEngine(initialised=True))  # refuses an all-zero report, as a QE
    try:
        code, out = probe(
            root, "--quote", "--private-dir", str(root / "pod-old"), "--state-dir", str(root / "plat")
        )
        assert code == 0, out  # the old pod stays live: no kubelet restart while it is drained
        code, out = probe(root, "--quote", "--private-dir", str(root / "pod-new"))
        assert code == 0 and "INVALID_REPORT, as it must" in out  # the hardware path of the probe
    finally:
        new.stop()
        old.stop()
        engine.close()


def test_quote_probe_refuses_an_engine_that_quotes_anything(root: Path) -> None:
    d = daemon(root, "pod", FakeEngine(initialised=True, accept_report=lambda r: True))
    try:
        code, out = probe(root, "--quote", "--private-dir", str(root / "pod"))
        assert code == 1 and "does not check reports" in out
    finally:
        d.stop()


def test_quote_probe_catches_a_wedged_engine(root: Path) -> None:
    gate = threading.Event()
    d = daemon(root, "pod", FakeEngine(initialised=True, gate=gate, gate_timeout=30))
    try:
        code, out = probe(root, "--quote", "--private-dir", str(root / "pod"))
        assert code == 1 and out.startswith("unhealthy:")
    finally:
        gate.set()
        d.stop()
