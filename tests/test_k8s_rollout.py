"""Rolling updates of the rendered DaemonSet the way Kubernetes does them (testing/pods.py,
testing/restart.py): pods in their own pid/mount/network namespaces with the manifest's command,
env, volumes and probes; the new pod surges, its real readiness probe gates the deletion of the
old one; restartPolicy Always restarts (and counts) any container that exits.

Short runs here (3 updates per scenario); the full 20-update runs are
``python -m sgx_quote_helper.testing.restart --updates 20 --clients 32`` (figures in
bench/results/rollout-*.md).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sgx_quote_helper.engine.select import select_engine
from sgx_quote_helper.server.config import ServerConfig
from sgx_quote_helper.service import AesmService
from sgx_quote_helper.testing.daemon import ServerThread
from sgx_quote_helper.testing.pods import Node, Pod, entrypoint, load_pod_spec, namespaces_available
from sgx_quote_helper.testing.restart import MANIFEST, SCENARIOS, Rollout, run_rollout

from ._aesm_helpers import short_dir

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_JOB = ROOT / "deploy" / "manifests" / "sample-job.yaml"

#: updates per scenario here (the full runs: 20, see the module doc)
UPDATES = 3

_why_not = namespaces_available()
pytestmark = pytest.mark.skipif(_why_not is not None, reason=f"no Linux namespaces here: {_why_not}")


@pytest.fixture
def root() -> Iterator[Path]:
    with short_dir() as d:
        yield d


def test_pod_spec_is_the_rendered_manifest() -> None:
    spec = load_pod_spec(MANIFEST, config_overrides={"engine": "simulated"})
    assert spec.args[:3] == ("serve", "--socket=/var/run/aesmd/aesm.socket", "--engine=simulated")
    assert spec.env["SGX_QUOTE_HELPER_ENGINE"] == "simulated"  # from the ConfigMap, as the kubelet does
    assert spec.readiness is not None and spec.readiness.command[:3] == (
        "sgx-quote-helper",
        "healthcheck",
        "--ready",
    )
    assert spec.liveness is not None and "--quote" in spec.liveness.command
    assert spec.startup is not None and "--quote" in spec.startup.command
    kinds = {m.path: m.kind for m in spec.mounts}
    assert kinds["/var/run/aesmd"] == kinds["/var/lib/sgx-quote-helper"] == "hostPath"
    assert kinds["/run/sgx-quote-helper"] == kinds["/tmp"] == "emptyDir"
    assert spec.restart_policy == "Always"


@pytest.mark.timeout(400)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_rolling_updates_lose_no_call_and_restart_no_container(root: Path, scenario: str) -> None:
    delay, late = SCENARIOS[scenario]
    res = run_rollout(root, updates=UPDATES, clients=32, serve_delay=delay, delete_after_ready=late)
    intel = res["intel"]
    assert intel["failed"] == 0, (intel["errors"], res["per_client"][:3])
    assert intel["bad_quotes"] == 0, intel["errors"]
    assert intel["ok"] > 0
    assert res["container_restarts"] == 0, res
    assert res["old_exit_codes"] == [0] * (UPDATES + 1)  # the replaced pods and the last one, all clean
    assert res["pods"] == UPDATES + 1
    if delay:  # the gate held while the new daemon was late: its startup probe failed first
        assert any(
            "does not answer" in line or "cannot connect" in line
            for line in res["probe_failure_lines"]["startup"]
        )


def test_a_container_that_exits_is_restarted_and_counted(root: Path) -> None:
    """restartPolicy Always, and a restarted container is the same instance (its pod's emptyDir)."""
    spec = load_pod_spec(MANIFEST, config_overrides={"engine": "simulated"})
    rollout = Rollout(root, spec)
    try:
        rollout.start()
        pod = rollout.pods[0]
        first = json.loads((pod.dir / "volumes" / "private" / "instance.json").read_text())
        pod.kill_container()
        deadline = time.monotonic() + 60
        while pod.status.restarts == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert pod.ready.wait(120), pod.status.probes
        assert rollout.restarts() == 1 and pod.status.exit_codes == [-9]
        again = json.loads((pod.dir / "volumes" / "private" / "instance.json").read_text())
        assert again == first
        assert "restarted as instance" in pod.logs()
    finally:
        rollout.stop()


def test_app_in_a_read_only_mount_still_gets_quotes(root: Path) -> None:
    """The sample Job's pod, with its read-only hostPath mount of /var/run/aesmd (a real read-only
    bind mount in its own mount namespace): its own command (doctor) passes, a real quote works,
    and it cannot put anything in the socket directory."""
    node = Node(root)
    sock_dir = node.host_dir("/var/run/aesmd")
    state = root / "plat"
    engine = select_engine("simulated", state_dir=state, create_state=True)
    cfg = ServerConfig(socket_path=sock_dir / "aesm.socket", path_check_interval=0.1)
    spec = load_pod_spec(SAMPLE_JOB, kind="Job", component="sample")
    (mount,) = spec.mounts
    assert (mount.path, mount.kind, mount.read_only) == ("/var/run/aesmd", "hostPath", True)
    command, path_dirs = entrypoint()
    spec = type(spec)(
        args=spec.args,
        env={**spec.env, "SGX_QUOTE_HELPER_STATE": "/var/lib/sgx-quote-helper"},
        mounts=(
            *spec.mounts,
            type(mount)("state", "/var/lib/sgx-quote-helper", "hostPath", True, host_path="/plat"),
        ),
        readiness=None,
        liveness=None,
        startup=None,
        grace=spec.grace,
        command=(command[0], *spec.command[1:]),
        restart_policy=spec.restart_policy,
    )
    os.symlink(state, node.host / "plat")
    with ServerThread(AesmService(engine, instance_id="d"), cfg):
        pod = Pod(node, spec, "sample", command, path_dirs).start()
        try:
            assert pod.exited.wait(120)
            assert pod.status.exit_codes == [0], pod.logs()
            assert "PASS    test-quote" in pod.logs()
            code, out = pod.exec(["sgx-quote-helper", "healthcheck", "--quote"], 60)
            assert code == 0 and "signature and report checked" in out, out
            code, out = pod.exec(["sh", "-c", "touch /var/run/aesmd/x"], 30)
            assert code != 0 and "Read-only file system" in out
            code, out = pod.exec(["sh", "-c", "grep ' /run/aesmd ' /proc/self/mountinfo"], 30)
            assert code == 0 and out.split()[5].split(",")[0] == "ro", out  # the mount's own options
        finally:
            pod.delete()
    engine.close()
    assert not (sock_dir / "x").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_combined_pod_rolls_without_losing_an_aesm_or_a_td_quote(root: Path) -> None:
    """The chart's qgs.mode=combined pod (deploy/manifests/sgx-quote-helper-tdx-combined.yaml: ONE
    `serve --qgs-socket` container, probes `healthcheck --ready/--quote --qgs-socket`), both engines
    simulated, rolled twice under Intel-style AESM clients and QEMU-style TD clients at once (one
    connection per call, no retry): neither loses a call, no container restarts."""
    res = run_rollout(root, updates=2, clients=8, combined=True)
    intel, qemu = res["intel"], res["qemu"]
    assert intel["failed"] == 0 and intel["bad_quotes"] == 0 and intel["ok"] > 0, (
        intel,
        res["per_client"][:3],
    )
    assert qemu["failed"] == 0 and qemu["bad_quotes"] == 0 and qemu["ok"] > 0, (qemu, res["per_client"][:3])
    assert res["container_restarts"] == 0, res
    assert res["old_exit_codes"] == [0, 0, 0] and res["pods"] == 3
