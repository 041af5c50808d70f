"""Restart and update harness: clients quote continuously while the daemon is replaced.

Two ways to replace it:

- :func:`run_rollout` (the one that matters): the rendered chart's DaemonSet pod, rolled the way
  Kubernetes rolls it (``maxSurge: 1, maxUnavailable: 0``), with pods in their own pid, mount and
  network namespaces (testing/pods.py: the manifest's command, env, volumes and probes, the
  ConfigMap's engine set to ``simulated``). Per update: create the new pod, poll its real readiness
  probe (the manifest's exact command, period and thresholds, run inside the pod), delete the old
  pod once the new one is Ready (SIGTERM, terminationGracePeriodSeconds, SIGKILL). Containers that
  exit are restarted and counted (restartPolicy Always). Scenarios: the new pod's ``serve`` delayed
  (``serve_delay``: a slow node), the old pod deleted late (``delete_after_ready``).
- :func:`run_restarts`: bare ``serve`` subprocesses on one path (``rolling``: start the new one,
  wait until it answers our HelperProbe on the path, SIGTERM the old one; ``sigkill``: a crash and a
  restart by a supervisor).

Clients (threads of this process, on the node's socket path like an app pod's hostPath mount):

- ``intel``: what Intel's libsgx_quote_ex does: one connection per request, connect once, no retry
  (a refused connect, a close without reply or a bad reply is a failure);
- ``ours``: :class:`~sgx_quote_helper.client.QuoteClient` with its retry within its deadline.

Every quote is parsed with :mod:`sgx_quote_helper.abi.quote`, its report body compared with the app
report that was sent (so the right report data), and its ECDSA signature checked with the
attestation key it carries: a corrupted or truncated quote cannot pass.

Command line (the full runs of issue 12; bench/results/ keeps their figures)::

    python -m sgx_quote_helper.testing.restart --updates 20 --clients 32 --scenario all
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ..abi.quote import Quote
from ..abi.report import Report
from ..benchmark.intel import IntelCallError, call_blocking
from ..client import QuoteClient
from ..errors import SgxQuoteHelperError
from ..server.socketpath import PathState, probe_path
from ..sim.platform import Platform
from ..wire import messages as m
from .pods import Mount, Node, Pod, PodSpec, Probe, entrypoint, load_pod_spec

CLI = [sys.executable, "-c", "import sys; from sgx_quote_helper.cli import main; sys.exit(main())"]
#: Intel's client gives up after this long
INTEL_TIMEOUT = 15.0


@dataclass(slots=True)
class ClientStats:
    """What one client thread saw."""

    kind: str
    ok: int = 0
    failed: int = 0
    bad_quotes: int = 0
    max_latency: float = 0.0
    max_gap: float = 0.0
    errors: list[str] = field(default_factory=list)


def check_quote(raw: bytes, report: Report, keys: dict[bytes, ec.EllipticCurvePublicKey]) -> str | None:
    """None if ``raw`` is a whole, correctly signed quote of ``report``; else what is wrong."""
    try:
        q = Quote.from_bytes(raw)
    except SgxQuoteHelperError as exc:
        return f"unparsable quote: {exc}"
    if q.body != report.body:
        return "quote body is not the app's report body (wrong report data)"
    sig = q.signature_data
    key = keys.get(sig.attestation_key)
    if key is None:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + sig.attestation_key)
        keys[sig.attestation_key] = key
    r, s = int.from_bytes(sig.signature[:32], "big"), int.from_bytes(sig.signature[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), q.signed_bytes, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return "bad quote signature"
    return None


class Daemons:
    """The serve subprocesses on one path (see the module doc)."""

    def __init__(self, root: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.root = root
        self.path = root / "aesm.socket"
        self.state = root / "plat"
        self.extra_args = extra_args
        self.current: subprocess.Popen[bytes] | None = None
        self.started = 0
        self.exit_codes: list[int] = []

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start one more daemon on the path and wait until it answers there."""
        self.started += 1
        log = open(self.root / f"daemon-{self.started}.log", "wb")  # noqa: SIM115 - the child owns it
        cmd = [*CLI, "serve", "--socket", str(self.path), "--state-dir", str(self.state)]
        cmd += [*("--handover-window", "0"), *self.extra_args]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"daemon exited with {proc.returncode}; see {self.root}/daemon-{self.started}.log"
                )
            found = probe_path(self.path, 1.0)
            if found.state is PathState.OURS and found.pid == proc.pid:
                return proc
            time.sleep(0.02)
        raise RuntimeError("the new daemon did not take the path over within 60 s")

    def start(self) -> None:
        """The first daemon."""
        self.current = self.spawn()

    def restart(self, mode: str) -> None:
        """Replace the running daemon (``rolling`` or ``sigkill``)."""
        old = self.current
        assert old is not None
        if mode == "rolling":
            self.current = self.spawn()
            old.send_signal(signal.SIGTERM)
            self.exit_codes.append(old.wait(60))
        elif mode == "sigkill":
            old.kill()
            old.wait(60)
            self.current = self.spawn()
        else:
            raise ValueError(f"unknown restart mode {mode!r}")

    def stop(self) -> None:
        """SIGTERM the running daemon and wait."""
        if self.current is not None and self.current.poll() is None:
            self.current.send_signal(signal.SIGTERM)
            self.exit_codes.append(self.current.wait(60))
        self.current = None


def _intel_request(path: Path, body: bytes) -> bytes:
    """One GetQuoteEx call as libsgx_quote_ex makes it, syscall for syscall (connect, length and body
    in two writes, the reply read length-first, close: :func:`benchmark.intel.call_blocking`)."""
    reply = call_blocking(str(path), body, timeout_ms=int(INTEL_TIMEOUT * 1000))
    resp = m.decode_response(reply)
    if not isinstance(resp, m.GetQuoteExResponse) or resp.error_code != 0 or resp.quote is None:
        raise ConnectionError(f"reply {resp!r:.120}")
    return resp.quote


class Load:
    """``clients`` threads quoting until :meth:`stop` (``kinds`` in turn: half ``intel``, half
    ``ours`` by default). ``target``: the :class:`Daemons`, or (socket path, platform state dir)."""

    def __init__(
        self,
        target: Daemons | tuple[Path, Path],
        clients: int,
        retry_deadline: float = 15.0,
        kinds: tuple[str, ...] = ("intel", "ours"),
        pace: float = 0.0,
    ) -> None:
        self.pace = pace
        path, state = (target.path, target.state) if isinstance(target, Daemons) else target
        platform = Platform.open(state)
        probe = QuoteClient(path, retry_deadline=30, timeout=30)
        init = probe.init_quote_ex()
        self.size = probe.get_quote_size_ex()
        self.key = probe.key_id.to_bytes()
        self.path = path
        self.retry_deadline = retry_deadline
        self.stats = [ClientStats(kinds[i % len(kinds)]) for i in range(clients)]
        self.reports = [
            platform.ereport(init.target_info, f"restart-fault client {i}".encode().ljust(64, b"\0"))
            for i in range(clients)
        ]
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"client-{i}", daemon=True)
            for i in range(clients)
        ]

    def start(self) -> None:
        """Start the client threads."""
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop and join the client threads."""
        self._stop.set()
        for t in self._threads:
            t.join(INTEL_TIMEOUT + self.retry_deadline + 5)

    def _run(self, i: int) -> None:
        st, rep = self.stats[i], self.reports[i]
        keys: dict[bytes, ec.EllipticCurvePublicKey] = {}
        body = m.encode_request(m.GetQuoteExRequest(rep.to_bytes(), self.key, None, self.size, 15000))
        client = QuoteClient(self.path, retry_deadline=self.retry_deadline, timeout=INTEL_TIMEOUT)
        last_ok = time.monotonic()
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                if st.kind == "intel":
                    quote = _intel_request(self.path, body)
                else:
                    quote = client.get_quote_ex(rep, buf_size=self.size).quote
            except (OSError, SgxQuoteHelperError, IntelCallError) as exc:
                st.failed += 1
                if len(st.errors) < 5:
                    st.errors.append(f"{type(exc).__name__}: {exc}")
                self._stop.wait(0.01)  # an app would report the error; do not spin
                continue
            now = time.monotonic()
            problem = check_quote(quote, rep, keys)
            if problem is not None:
                st.bad_quotes += 1
                if len(st.errors) < 5:
                    st.errors.append(problem)
                continue
            st.ok += 1
            st.max_latency = max(st.max_latency, now - t0)
            st.max_gap = max(st.max_gap, now - last_ok)
            last_ok = now
            if self.pace > 0:  # an app quotes now and then, not in a tight loop
                self._stop.wait(self.pace)


def check_td_quote(
    raw: bytes, report_data: bytes, keys: dict[bytes, ec.EllipticCurvePublicKey]
) -> str | None:
    """None if ``raw`` is a whole, correctly signed TD quote carrying ``report_data``."""
    try:
        q = Quote.from_bytes(raw)
    except SgxQuoteHelperError as exc:
        return f"unparsable quote: {exc}"
    if not q.is_tdx or q.report_data != report_data.ljust(64, b"\0"):
        return "not a TD quote of the TD's report (wrong report data)"
    sig = q.signature_data
    key = keys.get(sig.attestation_key)
    if key is None:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + sig.attestation_key)
        keys[sig.attestation_key] = key
    r, s = int.from_bytes(sig.signature[:32], "big"), int.from_bytes(sig.signature[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), q.signed_bytes, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return "bad quote signature"
    return None


def qemu_request(path: Path, frame: bytes) -> bytes:
    """One GET_QUOTE as QEMU forwards it: connect, send, read until the QGS closes; the quote.
    A refused connect, an error response or a close without a whole reply is a failure."""
    from ..abi import qgs as q

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(INTEL_TIMEOUT)
    try:
        s.connect(str(path))
        s.sendall(frame)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    finally:
        s.close()
    if len(out) < 4 or int.from_bytes(out[:4], "big") != len(out) - 4:
        raise ConnectionError(f"closed after {len(out)} bytes, not a whole reply")
    resp = q.GetQuoteResponse.from_bytes(out[4:])
    if resp.error_code != 0:
        raise ConnectionError(f"GET_QUOTE answered {resp.error_code:#x}")
    return resp.quote


class QgsLoad:
    """``clients`` TD threads quoting through the QGS socket at ``path`` as QEMU forwards a guest's
    GetQuote (one connection per request, no retry), until :meth:`stop`; kind ``qemu``."""

    def __init__(self, path: Path, state: Path, clients: int, pace: float = 0.0) -> None:
        from ..abi import qgs as q
        from ..sim.tdx_module import TdxModule
        from ..wire.qgs import encode_frame as qgs_frame

        self.path, self.pace = path, pace
        deadline = time.monotonic() + 30
        while True:  # the platform's TDX state appears once the first server has started
            try:
                module = TdxModule.open(Platform.open(state))
                break
            except SgxQuoteHelperError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.stats = [ClientStats("qemu") for _ in range(clients)]
        self.data = [f"qgs rollout client {i}".encode() for i in range(clients)]
        self.frames = [
            qgs_frame(q.GetQuoteRequest(module.report(d).to_bytes()).to_bytes()) for d in self.data
        ]
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"td-{i}", daemon=True) for i in range(clients)
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(INTEL_TIMEOUT + 5)

    def _run(self, i: int) -> None:
        st, frame, data = self.stats[i], self.frames[i], self.data[i]
        keys: dict[bytes, ec.EllipticCurvePublicKey] = {}
        last_ok = time.monotonic()
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                quote = qemu_request(self.path, frame)
            except (OSError, SgxQuoteHelperError) as exc:
                st.failed += 1
                if len(st.errors) < 5:
                    st.errors.append(f"{type(exc).__name__}: {exc}")
                self._stop.wait(0.01)
                continue
            now = time.monotonic()
            problem = check_td_quote(quote, data, keys)
            if problem is not None:
                st.bad_quotes += 1
                if len(st.errors) < 5:
                    st.errors.append(problem)
                continue
            st.ok += 1
            st.max_latency = max(st.max_latency, now - t0)
            st.max_gap = max(st.max_gap, now - last_ok)
            last_ok = now
            if self.pace > 0:
                self._stop.wait(self.pace)


def summarize(stats: list[ClientStats]) -> dict[str, Any]:
    """Totals per client kind."""
    out: dict[str, Any] = {}
    for kind in ("intel", "ours", "qemu"):
        group = [s for s in stats if s.kind == kind]
        if not group:
            continue
        out[kind] = {
            "clients": len(group),
            "ok": sum(s.ok for s in group),
            "failed": sum(s.failed for s in group),
            "bad_quotes": sum(s.bad_quotes for s in group),
            "max_latency_s": round(max((s.max_latency for s in group), default=0.0), 4),
            "max_gap_s": round(max((s.max_gap for s in group), default=0.0), 4),
            "errors": sorted({e for s in group for e in s.errors})[:10],
        }
    return out


def run_restarts(
    root: Path,
    mode: str,
    restarts: int,
    clients: int,
    *,
    settle: float = 0.3,
    retry_deadline: float = 15.0,
    daemon_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Start a daemon, ``clients`` quoting threads, restart ``restarts`` times in ``mode`` with
    ``settle`` seconds of load between restarts; the per-kind totals, exit codes and timings.
    Each daemon's output stays in ``root/daemon-N.log``."""
    daemons = Daemons(root, daemon_args)
    daemons.start()
    load = Load(daemons, clients, retry_deadline)
    t0 = time.monotonic()
    restart_times: list[float] = []
    try:
        load.start()
        time.sleep(settle)
        for _ in range(restarts):
            r0 = time.monotonic()
            daemons.restart(mode)
            restart_times.append(time.monotonic() - r0)
            time.sleep(settle)
    finally:
        load.stop()
        daemons.stop()
    return {
        "mode": mode,
        "restarts": restarts,
        "clients": clients,
        "seconds": round(time.monotonic() - t0, 2),
        "old_exit_codes": daemons.exit_codes,
        "max_restart_s": round(max(restart_times, default=0.0), 3),
        "pid": os.getpid(),
        **summarize(load.stats),
        "per_client": [asdict(s) for s in load.stats if s.failed or s.bad_quotes],
    }


MANIFEST = Path(__file__).resolve().parents[3] / "deploy" / "manifests" / "sgx-quote-helper.yaml"
#: the chart's qgs.mode=combined render: ONE pod serves the AESM and the QGS socket (serve --qgs-socket)
COMBINED_MANIFEST = MANIFEST.parent / "sgx-quote-helper-tdx-combined.yaml"

#: the scenarios of issue 12: (serve delay of the new pod, old pod deleted this long after Ready)
SCENARIOS: dict[str, tuple[float, float]] = {
    "plain": (0.0, 0.0),
    "slow-node": (3.0, 0.0),
    "late-delete": (0.0, 3.0),
}


#: where the QGS pod serves (Intel's default path) and its private socket directory
QGS_SOCKET = "/var/run/tdx-qgs/qgs.socket"


def qgs_pod_spec(spec: PodSpec, socket_path: str = QGS_SOCKET) -> PodSpec:
    """The manifest's quote-helper pod turned into a QGS pod: the same volumes, env and grace, plus
    a hostPath for the QGS socket's directory; ``qgs serve`` with the pod's private directory and
    handover window; the probes are ``qgs healthcheck --ready`` (readiness) and ``--quote``
    (liveness, startup) with the AESM probes' periods and thresholds (the interface the chart's QGS
    container uses, deploy/README.md)."""
    private = next(a.split("=", 1)[1] for a in spec.args if a.startswith("--private-dir="))
    window = next((a.split("=", 1)[1] for a in spec.args if a.startswith("--handover-window=")), "5")
    sock_dir = str(Path(socket_path).parent)
    mounts = (*spec.mounts, Mount("qgs-socket", sock_dir, "hostPath", host_path=sock_dir))
    args = (
        "qgs",
        "serve",
        f"--socket={socket_path}",
        "--engine=simulated",
        f"--private-dir={private}",
        f"--handover-window={window}",
        "-v",
    )

    def probe(p: Probe | None, cmd: tuple[str, ...]) -> Probe | None:
        return None if p is None else replace(p, command=cmd)

    ready = (
        "sgx-quote-helper",
        "qgs",
        "healthcheck",
        "--ready",
        "--socket",
        socket_path,
        "--private-dir",
        private,
    )
    quote = ("sgx-quote-helper", "qgs", "healthcheck", "--quote", "--private-dir", private)
    return replace(
        spec,
        args=args,
        mounts=mounts,
        readiness=probe(spec.readiness, (*ready, "--timeout", "4")),
        liveness=probe(spec.liveness, (*quote, "--timeout", "9")),
        startup=probe(spec.startup, (*quote, "--timeout", "9")),
    )


class Rollout:
    """The DaemonSet controller on one node (``maxSurge: 1, maxUnavailable: 0``), see the module doc."""

    def __init__(
        self, root: Path, spec: PodSpec, *, serve_delay: float = 0.0, delete_after_ready: float = 0.0
    ):
        self.node = Node(root)
        self.spec = spec
        self.serve_delay = serve_delay
        self.delete_after_ready = delete_after_ready
        self.command, self.path_dirs = entrypoint()
        self.pods: list[Pod] = []
        self.current: Pod | None = None
        self.old_exit_codes: list[int | None] = []
        self.ready_seconds: list[float] = []
        state_mount = next(m for m in spec.mounts if m.path == spec.env.get("SGX_QUOTE_HELPER_STATE"))
        self.socket = self._host_socket("--socket=")
        #: the QGS socket of a combined pod (``serve --qgs-socket``), on the node
        self.qgs_socket = (
            self._host_socket("--qgs-socket=")
            if any(a.startswith("--qgs-socket=") for a in spec.args)
            else None
        )
        self.state = self.node.host_dir(state_mount.host_path)

    def _host_socket(self, flag: str) -> Path:
        """Where the socket the container serves (``flag`` PATH) is on the node (its hostPath)."""
        container_socket = Path(next(a for a in self.spec.args if a.startswith(flag)).split("=", 1)[1])
        mount = next(
            m for m in self.spec.mounts if m.kind == "hostPath" and container_socket.is_relative_to(m.path)
        )
        return self.node.host_dir(mount.host_path) / container_socket.relative_to(mount.path)

    def _new_pod(self, delay: float) -> Pod:
        pod = Pod(
            self.node, self.spec, f"pod-{len(self.pods)}", self.command, self.path_dirs, start_delay=delay
        )
        self.pods.append(pod)
        return pod.start()

    def _wait_ready(self, pod: Pod, timeout: float = 180.0) -> float:
        t0 = time.monotonic()
        if not pod.ready.wait(timeout):
            raise RuntimeError(
                f"{pod.name} not Ready within {timeout:g}s; probes: {pod.status.probes}; see {pod.dir}"
            )
        return time.monotonic() - t0

    def start(self) -> None:
        """The DaemonSet's first pod, Ready."""
        self.current = self._new_pod(0.0)
        self._wait_ready(self.current)

    def update(self) -> None:
        """One rolling update: surge a new pod, wait for its readiness, then delete the old one."""
        old = self.current
        assert old is not None
        new = self._new_pod(self.serve_delay)
        self.ready_seconds.append(self._wait_ready(new))
        if self.delete_after_ready > 0:
            # the controller acts late (a busy control plane): the old pod lives on, handed over
            time.sleep(self.delete_after_ready)
        self.old_exit_codes.append(old.delete())
        self.current = new

    def stop(self) -> None:
        """Delete every pod still there (the DaemonSet is deleted)."""
        for pod in self.pods:
            code = pod.delete()
            if pod is self.current:
                self.old_exit_codes.append(code)
        self.current = None

    def restarts(self) -> int:
        """Container restarts over all pods."""
        return sum(p.status.restarts for p in self.pods)


def run_rollout(
    root: Path,
    updates: int,
    clients: int,
    *,
    serve_delay: float = 0.0,
    delete_after_ready: float = 0.0,
    manifest: Path = MANIFEST,
    settle: float = 0.3,
    kinds: tuple[str, ...] = ("intel",),
    pace: float = 0.02,
    qgs: bool = False,
    combined: bool = False,
) -> dict[str, Any]:
    """Roll the rendered DaemonSet ``updates`` times under ``clients`` quoting threads (Intel-style
    by default: one connection per call, no retry; each at most one call per ``pace`` seconds);
    totals, restarts, exit codes, probe lines. ``qgs``: the QGS pod (:func:`qgs_pod_spec`) under TD
    clients (:class:`QgsLoad`, kind ``qemu``). ``combined``: the chart's qgs.mode=combined pod
    (:data:`COMBINED_MANIFEST`, both engines simulated), ``clients`` AESM clients and ``clients``
    TD clients at once."""
    if combined:
        manifest = COMBINED_MANIFEST if manifest == MANIFEST else manifest
    spec = load_pod_spec(manifest, config_overrides={"engine": "simulated", "qgsEngine": "simulated"})
    if qgs:
        spec = qgs_pod_spec(spec)
    rollout = Rollout(root, spec, serve_delay=serve_delay, delete_after_ready=delete_after_ready)
    t0 = time.monotonic()
    loads: list[Load | QgsLoad] = []
    try:
        rollout.start()
        if qgs:
            loads.append(QgsLoad(rollout.socket, rollout.state, clients, pace=pace))
        else:
            loads.append(Load((rollout.socket, rollout.state), clients, kinds=kinds, pace=pace))
        if combined:
            assert rollout.qgs_socket is not None, "the manifest's pod serves no --qgs-socket"
            loads.append(QgsLoad(rollout.qgs_socket, rollout.state, clients, pace=pace))
        for load in loads:
            load.start()
        time.sleep(settle)
        for _ in range(updates):
            rollout.update()
            time.sleep(settle)
    finally:
        for load in loads:
            load.stop()
        rollout.stop()
    stats = [s for load in loads for s in load.stats]
    probes: dict[str, list[str]] = {}
    for pod in rollout.pods:
        for name, plog in pod.status.probes.items():
            for line in plog.failure_lines:
                if line not in probes.setdefault(name, []) and len(probes[name]) < 10:
                    probes[name].append(line)
    return {
        "updates": updates,
        "clients": clients,
        "serve_delay_s": serve_delay,
        "delete_after_ready_s": delete_after_ready,
        "client_pace_s": pace,
        "ready_s": [round(x, 2) for x in rollout.ready_seconds],
        "seconds": round(time.monotonic() - t0, 2),
        "pods": len(rollout.pods),
        "container_restarts": rollout.restarts(),
        "old_exit_codes": rollout.old_exit_codes,
        "max_ready_s": round(max(rollout.ready_seconds, default=0.0), 3),
        "probe_failure_lines": probes,
        "skipped_mounts": sorted({m for p in rollout.pods for m in p.status.skipped_mounts}),
        "pid": os.getpid(),
        **summarize(stats),
        "per_client": [asdict(s) for s in stats if s.failed or s.bad_quotes],
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m sgx_quote_helper.testing.restart``: the full rollout runs; JSON to stdout/--out."""
    import argparse
    import json
    import shutil
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--updates", type=int, default=20)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--scenario", default="all", help=f"one of {', '.join(SCENARIOS)} or all")
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON results here")
    args = ap.parse_args(argv)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    results = []
    for name in names:
        delay, late = SCENARIOS[name]
        root = Path(tempfile.mkdtemp(prefix="sqro", dir="/tmp"))
        try:
            res = run_rollout(
                root,
                args.updates,
                args.clients,
                serve_delay=delay,
                delete_after_ready=late,
                manifest=args.manifest,
            )
        finally:
            shutil.rmtree(root, ignore_errors=True)
        intel = res["intel"]
        res["scenario"] = name
        res["passed"] = bool(
            intel["failed"] == 0
            and intel["bad_quotes"] == 0
            and intel["ok"] > 0
            and res["container_restarts"] == 0
        )
        results.append(res)
        print(
            f"{name:12} updates={res['updates']} clients={res['clients']} {res['seconds']}s: ok={intel['ok']} "
            f"failed={intel['failed']} bad={intel['bad_quotes']} max_gap={intel['max_gap_s']}s "
            f"restarts={res['container_restarts']} max_ready={res['max_ready_s']}s "
            f"-> {'PASS' if res['passed'] else 'FAIL'}",
            file=sys.stderr,
        )
    text = json.dumps({"results": results}, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    return 0 if all(r["passed"] for r in results) else 1


__all__ = [
    "COMBINED_MANIFEST",
    "MANIFEST",
    "QGS_SOCKET",
    "SCENARIOS",
    "ClientStats",
    "Daemons",
    "Load",
    "QgsLoad",
    "Rollout",
    "check_quote",
    "check_td_quote",
    "main",
    "qemu_request",
    "qgs_pod_spec",
    "run_restarts",
    "run_rollout",
    "summarize",
]

if __name__ == "__main__":
    sys.exit(main())
