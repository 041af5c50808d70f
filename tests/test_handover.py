"""Handing the socket path over (server/socketpath.py, server/unix.py, server/instance.py).

A daemon whose path a successor took over stays up drained; a restarted old instance never takes
the path from a newer one; SIGTERM keeps serving for the handover window; anything that is not
sgx-quote-helper at the path gets our socket put back and an ALERT naming it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sgx_quote_helper.client import QuoteClient
from sgx_quote_helper.errors import ConfigError
from sgx_quote_helper.server.config import ServerConfig
from sgx_quote_helper.server.instance import RECORD, load_instance, private_socket
from sgx_quote_helper.server.socketpath import (
    Loss,
    NewerOwner,
    PathState,
    ProbeResult,
    is_newer,
    judge_loss,
    listener_credentials,
    probe_path,
)
from sgx_quote_helper.service import AesmService
from sgx_quote_helper.testing.daemon import ServerThread
from sgx_quote_helper.testing.fakes import FakeEngine

from ._aesm_helpers import short_dir

FAST = {"idle_timeout": 2.0, "read_timeout": 2.0, "path_check_interval": 0.05, "probe_timeout": 1.0}


@pytest.fixture
def root() -> Iterator[Path]:
    with short_dir() as d:
        yield d


def daemon(root: Path, pod: str, **kw: object) -> ServerThread:
    """A daemon of "pod" ``pod``: its own private dir under root, the shared path root/aesm.socket."""
    private = root / pod
    inst = load_instance(private)
    cfg = ServerConfig(socket_path=root / "aesm.socket", private_dir=private, **{**FAST, **kw})  # type: ignore[arg-type]
    svc = AesmService(
        FakeEngine(initialised=True), version="t", instance_id=inst.instance_id, started_ns=inst.started_ns
    )
    return ServerThread(svc, cfg).start()


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def owner(root: Path) -> ProbeResult:
    return probe_path(root / "aesm.socket", 1.0)


def test_instance_record_survives_a_container_restart(root: Path) -> None:
    first = load_instance(root / "pod", now_ns=1000)
    again = load_instance(root / "pod", now_ns=5000)
    assert (again.instance_id, again.started_ns) == (first.instance_id, 1000)
    assert again.restarted and not first.restarted
    assert load_instance(root / "other").instance_id != first.instance_id
    (root / "bad").mkdir()
    (root / "bad" / RECORD).write_text("{nope")
    with pytest.raises(ConfigError, match="not an instance record"):
        load_instance(root / "bad")
    (root / "bad" / RECORD).write_text(json.dumps({"instance_id": "", "started_ns": 0}))
    with pytest.raises(ConfigError, match="empty instance record"):
        load_instance(root / "bad")


def test_newer_means_later_start_and_older_helpers_are_older() -> None:
    def ours(started: int, iid: str = "b") -> ProbeResult:
        return ProbeResult(PathState.OURS, "x", 1, iid, "v", started)

    assert is_newer(ours(20), 10, "a")
    assert not is_newer(ours(5), 10, "a")
    assert not is_newer(ours(0), 10, "a")  # an older helper that does not say: older
    assert not is_newer(ours(20, "a"), 10, "a")  # the same instance
    assert not is_newer(ProbeResult(PathState.FOREIGN, "x"), 10, "a")


def test_loss_judgement() -> None:
    helper = ProbeResult(PathState.OURS, "x", 1, "b")
    silent = ProbeResult(PathState.FOREIGN, "x", silent=True)
    assert judge_loss(helper, 0, 10) is Loss.HAND_OVER
    assert judge_loss(helper, 0, 10, started_ns=5) is Loss.RETAKE  # an older version: no start time
    assert judge_loss(ProbeResult(PathState.OURS, "x", 1, "b", "v", 9), 0, 10, started_ns=5) is Loss.HAND_OVER
    assert judge_loss(silent, 1, 10) is Loss.WAIT
    assert judge_loss(silent, 11, 10) is Loss.RESTORE
    for state in (PathState.ABSENT, PathState.STALE, PathState.FOREIGN):
        assert judge_loss(ProbeResult(state, "x"), 0, 10) is Loss.RESTORE


def test_handed_over_daemon_stays_up_drained_and_says_so(root: Path) -> None:
    old = daemon(root, "pod-old")
    new = daemon(root, "pod-new")
    try:
        assert old.server is not None and new.server is not None
        wait_for(lambda: old.server is not None and old.server.state == "handed-over")
        assert not old.join(0.3)
        own = probe_path(private_socket(root / "pod-old"), 1.0)
        assert (own.instance_id, own.owner_state) == (old.service.instance_id, "handed-over")
        on_path = owner(root)
        assert (on_path.instance_id, on_path.owner_state) == (new.service.instance_id, "serving")
        assert on_path.started_ns > own.started_ns
        assert QuoteClient(private_socket(root / "pod-old")).get_supported_att_key_id_num() == 1
        old.stop()
        assert old.join(10)
        assert owner(root).instance_id == new.service.instance_id
        assert not private_socket(root / "pod-old").exists()
    finally:
        old.stop()
        new.stop()


def test_restarted_old_instance_never_takes_the_path_from_a_newer_one(root: Path) -> None:
    old = daemon(root, "pod-old")
    new = daemon(root, "pod-new")
    try:
        wait_for(lambda: old.server is not None and old.server.state == "handed-over")
        old.stop()
        assert old.join(10)
        again = daemon(root, "pod-old")  # the kubelet restarts the old pod's container anyway
        try:
            assert again.server is not None and again.server.state == "standby"
            assert again.service.instance_id == old.service.instance_id
            time.sleep(0.3)
            assert owner(root).instance_id == new.service.instance_id
            assert new.server is not None and new.server.state == "serving"
            assert probe_path(private_socket(root / "pod-old"), 1.0).owner_state == "standby"
        finally:
            again.stop()
        assert owner(root).instance_id == new.service.instance_id
    finally:
        new.stop()


def test_newer_owner_without_private_dir_refuses_to_start(root: Path) -> None:
    new = daemon(root, "pod-new")
    try:
        cfg = ServerConfig(socket_path=root / "aesm.socket", **FAST)  # type: ignore[arg-type]
        svc = AesmService(FakeEngine(initialised=True), instance_id="old", started_ns=1)
        with pytest.raises(NewerOwner, match="newer instance"):
            ServerThread(svc, cfg).start()
        assert owner(root).instance_id == new.service.instance_id
    finally:
        new.stop()


def test_drained_daemon_serves_the_path_again_when_nobody_does(root: Path) -> None:
    old = daemon(root, "pod-old")
    new = daemon(root, "pod-new")
    try:
        wait_for(lambda: old.server is not None and old.server.state == "handed-over")
        new.stop()  # the successor goes away and removes its socket
        assert new.join(10)
        wait_for(lambda: owner(root).instance_id == old.service.instance_id)
        assert old.server is not None and old.server.state == "serving"
    finally:
        old.stop()
        new.stop()


def test_sigterm_keeps_serving_for_the_window_then_stops(root: Path) -> None:
    d = daemon(root, "pod", handover_window=0.6)
    assert d.server is not None
    t0 = time.monotonic()
    d.call(d.server.terminate, "signal SIGTERM")
    wait_for(lambda: d.server is not None and d.server.state == "terminating")
    assert QuoteClient(root / "aesm.socket", retry_deadline=0).get_supported_att_key_id_num() == 1
    assert d.join(10)
    assert time.monotonic() - t0 >= 0.55
    assert "no successor within" in (d.stop_reason or "")
    assert not (root / "aesm.socket").exists()


def test_sigterm_then_a_successor_ends_the_window_early(root: Path) -> None:
    old = daemon(root, "pod-old", handover_window=30.0)
    assert old.server is not None
    old.call(old.server.terminate, "signal SIGTERM")
    wait_for(lambda: old.server is not None and old.server.state == "terminating")
    t0 = time.monotonic()
    new = daemon(root, "pod-new")
    try:
        assert old.join(10)
        assert time.monotonic() - t0 < 10
        assert (old.stop_reason or "").endswith("(handed over)")
        assert owner(root).instance_id == new.service.instance_id
    finally:
        new.stop()


def _impostor(path: Path, answer: bool) -> tuple[socket.socket, threading.Event]:
    """A listener renamed over ``path``: closes each connection (``answer``) or says nothing."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = path.parent / "impostor"
    srv.bind(str(tmp))
    srv.listen(16)
    srv.settimeout(0.1)
    stop = threading.Event()
    held: list[socket.socket] = []

    def loop() -> None:
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except (TimeoutError, OSError):
                continue
            if answer:
                c.close()
            else:
                held.append(c)

    threading.Thread(target=loop, daemon=True).start()
    os.rename(tmp, path)
    return srv, stop


@pytest.mark.parametrize("answer", [True, False], ids=["closes", "silent"])
def test_impostor_gets_our_socket_put_back_and_an_alert(
    root: Path, answer: bool, caplog: pytest.LogCaptureFixture
) -> None:
    d = daemon(root, "pod", foreign_grace=0.5)
    srv, stop = _impostor(root / "aesm.socket", answer)
    try:
        with caplog.at_level(logging.ERROR, logger="sgx_quote_helper.server.unix"):
            wait_for(lambda: owner(root).instance_id == d.service.instance_id)
            wait_for(lambda: any("ALERT" in r.message for r in caplog.records))
        (alert,) = [r.message for r in caplog.records if "ALERT" in r.message]
        assert "not sgx-quote-helper" in alert
        assert f"pid {os.getpid()}" in alert  # SO_PEERCRED of the impostor's listener
        assert d.server is not None and d.server.state == "serving"
        assert QuoteClient(root / "aesm.socket", retry_deadline=0).get_supported_att_key_id_num() == 1
    finally:
        stop.set()
        srv.close()
        d.stop()


def test_removed_socket_is_put_back(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = daemon(root, "pod")
    try:
        with caplog.at_level(logging.ERROR, logger="sgx_quote_helper.server.unix"):
            (root / "aesm.socket").unlink()
            wait_for(lambda: owner(root).instance_id == d.service.instance_id)
        assert any("does not exist" in r.message for r in caplog.records)
    finally:
        d.stop()


def test_listener_credentials_name_the_listener(root: Path) -> None:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(root / "s"))
    srv.listen(1)
    try:
        who = listener_credentials(root / "s")
        assert who is not None and (who.pid, who.uid) == (os.getpid(), os.getuid())
        assert "python" in who.command or "pytest" in who.command
        assert f"pid {os.getpid()}" in str(who)
    finally:
        srv.close()
    assert listener_credentials(root / "s") is None


def test_an_older_version_that_takes_the_path_gets_it_taken_back(root: Path) -> None:
    """A helper that reports no start time (versions before the instance record, which exit on a
    takeover and are restarted by the kubelet) takes the path from us: we take it back."""
    new = daemon(root, "pod-new")
    cfg = ServerConfig(socket_path=root / "aesm.socket", **FAST)  # type: ignore[arg-type]
    older = ServerThread(AesmService(FakeEngine(initialised=True), instance_id="old-version"), cfg).start()
    try:
        wait_for(lambda: owner(root).instance_id == new.service.instance_id)
        wait_for(lambda: older.server is not None and older.server.state == "handed-over")
        assert new.server is not None and new.server.state == "serving"
    finally:
        older.stop()
        new.stop()
