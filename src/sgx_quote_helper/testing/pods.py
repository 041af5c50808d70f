"""Kubernetes pods on this machine, as a kubelet would run the rendered chart's DaemonSet pod.

No control plane can run here (shared/specs/kubernetes.md §5), so this module plays the kubelet and
the container runtime with Linux namespaces, reading everything from the rendered manifest
(deploy/manifests/sgx-quote-helper.yaml, kept in sync with the chart by deploy/render.py):

- :func:`load_pod_spec`: the quote-helper container's args, env (``configMapKeyRef`` resolved from
  the ConfigMap, ``$(VAR)`` expanded in args as the kubelet does), probes (exact commands, periods,
  timeouts, thresholds), volumes and mounts, and terminationGracePeriodSeconds.
- :class:`Pod`: a sandbox process in its own pid, mount and network namespaces (``unshare --pid
  --mount --net --fork --mount-proc``; the "pause" container). It mounts the pod's volumes over the
  container paths in its mount namespace: a ``hostPath`` is a bind mount of the node's directory
  (:class:`Node`, shared by every pod of the node), an ``emptyDir`` a bind mount of a directory of
  this pod alone, ``readOnly`` mounts are remounted read-only. Containers and exec probes enter the
  sandbox's namespaces (``nsenter --target <sandbox> --pid --mount --net``), so a probe sees what
  the container sees. The kubelet part: the startup probe first, then readiness and liveness on
  their periods; a liveness failure past its threshold kills the container; a container that exits
  is started again (restartPolicy Always) and counted in ``restarts``. ``delete()`` is a pod
  deletion: SIGTERM, up to terminationGracePeriodSeconds, SIGKILL, sandbox gone.

Paths the host lacks (the container's ``/run/...``, ``/var/lib/...``) are made on a tmpfs the
sandbox mounts over the nearest existing parent in its own mount namespace, never on the host; a
``configMap`` file whose target directory would need that under ``/etc`` is left out (``skipped``:
only Intel's quote provider library reads it, not the simulated engine).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: directories a sandbox may cover with its own tmpfs to create a mount point (never /etc, /usr...)
PRIVATE_PARENTS = ("/run", "/var/lib", "/var/run", "/srv", "/opt", "/mnt")

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384


@dataclass(frozen=True, slots=True)
class Probe:
    """One probe of the manifest (exec only: that is what the chart uses)."""

    command: tuple[str, ...]
    period: float = 10.0
    timeout: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1
    initial_delay: float = 0.0

    @classmethod
    def from_manifest(cls, spec: dict[str, Any] | None) -> Probe | None:
        if not spec:
            return None
        return cls(
            tuple(spec["exec"]["command"]),
            float(spec.get("periodSeconds", 10)),
            float(spec.get("timeoutSeconds", 1)),
            int(spec.get("failureThreshold", 3)),
            int(spec.get("successThreshold", 1)),
            float(spec.get("initialDelaySeconds", 0)),
        )


@dataclass(frozen=True, slots=True)
class Mount:
    """A volumeMount with its volume: ``kind`` is hostPath, emptyDir or configMap."""

    name: str
    path: str
    kind: str
    read_only: bool = False
    host_path: str = ""
    sub_path: str = ""
    data: str = ""


@dataclass(frozen=True, slots=True)
class PodSpec:
    """What the kubelet needs of the quote-helper pod (see :func:`load_pod_spec`)."""

    args: tuple[str, ...]
    env: dict[str, str]
    mounts: tuple[Mount, ...]
    readiness: Probe | None
    liveness: Probe | None
    startup: Probe | None
    grace: float
    #: the container's ``command`` (empty: the image's entrypoint, given to :class:`Pod`)
    command: tuple[str, ...] = ()
    restart_policy: str = "Always"


def _expand(text: str, env: dict[str, str]) -> str:
    for name, value in env.items():
        text = text.replace(f"$({name})", value)
    return text


def load_pod_spec(
    manifest: Path,
    *,
    component: str = "quote-helper",
    kind: str = "DaemonSet",
    config_overrides: dict[str, str] | None = None,
) -> PodSpec:
    """The pod of the ``kind`` object of ``component`` in a rendered manifest; ``config_overrides``
    changes the ConfigMap data first (``{"engine": "simulated"}``: what ``kubectl edit configmap``
    would do)."""
    import yaml  # type: ignore[import-untyped]

    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    (ds,) = [
        d
        for d in docs
        if d["kind"] == kind and d["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    maps = {d["metadata"]["name"]: dict(d.get("data", {})) for d in docs if d["kind"] == "ConfigMap"}
    for data in maps.values():
        data.update(config_overrides or {})
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env: dict[str, str] = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = _expand(str(e["value"]), env)
        else:
            ref = e["valueFrom"]["configMapKeyRef"]
            env[e["name"]] = maps[ref["name"]][ref["key"]]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = []
    for m in c.get("volumeMounts", []):
        vol = volumes[m["name"]]
        if "hostPath" in vol:
            mounts.append(
                Mount(m["name"], m["mountPath"], "hostPath", bool(m.get("readOnly")), vol["hostPath"]["path"])
            )
        elif "emptyDir" in vol:
            mounts.append(Mount(m["name"], m["mountPath"], "emptyDir", bool(m.get("readOnly"))))
        elif "configMap" in vol:
            sub = m.get("subPath", "")
            text = maps[vol["configMap"]["name"]].get(sub, "") if sub else ""
            mounts.append(Mount(m["name"], m["mountPath"], "configMap", True, sub_path=sub, data=text))
        else:
            raise ValueError(f"volume {m['name']}: only hostPath, emptyDir and configMap are modelled")
    return PodSpec(
        args=tuple(_expand(a, env) for a in c.get("args", [])),
        env=env,
        mounts=tuple(mounts),
        readiness=Probe.from_manifest(c.get("readinessProbe")),
        liveness=Probe.from_manifest(c.get("livenessProbe")),
        startup=Probe.from_manifest(c.get("startupProbe")),
        grace=float(pod.get("terminationGracePeriodSeconds", 30)),
        command=tuple(_expand(a, env) for a in c.get("command", [])),
        restart_policy=str(pod.get("restartPolicy", "Always")),
    )


class Node:
    """One node's host directories (hostPath volumes) under ``root/host``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = root / "host"

    def host_dir(self, host_path: str) -> Path:
        """Where the node's ``host_path`` lives (created on first use: DirectoryOrCreate)."""
        d = self.host / host_path.strip("/")
        d.mkdir(parents=True, exist_ok=True)
        return d


# ------------------------------------------------------------------ the sandbox (inside the pod)


def _libc_mount(
    source: str, target: str, flags: int, fstype: str | None = None, data: str | None = None
) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _make_target(target: Path, is_dir: bool, covered: set[str]) -> None:
    """Create ``target`` as a mount point without touching the host (see the module doc)."""
    if target.exists():
        return
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    real = str(parent.resolve())
    if not any(real == c or real.startswith(c + "/") for c in covered):
        if not any(real == p or real.startswith(p + "/") for p in PRIVATE_PARENTS):
            raise OSError(f"cannot create {target} without writing to the host's {real}")
        _libc_mount("pod-tmpfs", real, 0, "tmpfs", "mode=0755,size=16m")
        covered.add(real)
    if is_dir:
        target.mkdir(parents=True, exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()


def image_paths() -> list[str]:
    """What a container "image" holds here: this interpreter's prefixes and the package's source
    directory (the host's files, since no image is built)."""
    package = Path(__file__).resolve().parents[2]  # src/ (or site-packages/) holding the package
    return sorted({str(Path(sys.prefix).resolve()), str(Path(sys.base_prefix).resolve()), str(package)})


def sandbox_main(plan_file: str) -> int:
    """pid 1 of the pod: mount the volumes, say so, then wait (the pause container)."""
    plan = json.loads(Path(plan_file).read_text())
    # open every source first: mounting over /tmp may hide the node's directories otherwise
    fds = {i: os.open(m["source"], os.O_PATH) for i, m in enumerate(plan["mounts"])}
    keep = {k: os.open(k, os.O_PATH) for k in plan.get("keep", ()) if os.path.isdir(k)}
    ready = os.open(plan["ready_file"] + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    done = os.open(str(Path(plan["ready_file"]).parent), os.O_PATH)
    covered: set[str] = set()
    skipped = []
    for i, m in enumerate(plan["mounts"]):
        target = Path(m["target"])
        try:
            _make_target(target, m["is_dir"], covered)
        except OSError as exc:
            skipped.append(f"{m['target']}: {exc}")
            continue
        real = str(target.resolve())
        _libc_mount(f"/proc/self/fd/{fds[i]}", real, MS_BIND | MS_REC)
        if m["read_only"]:
            _libc_mount("none", real, MS_BIND | MS_REMOUNT | MS_RDONLY)
    # the "image": where this Python and the package live must stay visible to the containers
    # even when a volume covers it (a checkout under /tmp, and the chart mounts an emptyDir there)
    for path, fd in keep.items():
        seen = os.fstat(fd)
        try:
            now = os.stat(path)
            if (now.st_dev, now.st_ino) == (seen.st_dev, seen.st_ino):
                continue
        except OSError:
            pass
        try:
            Path(path).mkdir(parents=True, exist_ok=True)  # inside the covering volume, not the host
            _libc_mount(f"/proc/self/fd/{fd}", path, MS_BIND | MS_REC)
            _libc_mount("none", path, MS_BIND | MS_REMOUNT | MS_RDONLY)
        except OSError as exc:
            skipped.append(f"{path} (the image): {exc}")
    for fd in (*fds.values(), *keep.values()):
        os.close(fd)
    os.write(ready, json.dumps({"skipped": skipped}).encode())
    os.close(ready)
    name = Path(plan["ready_file"]).name
    os.rename(f"/proc/self/fd/{done}/{name}.tmp", f"/proc/self/fd/{done}/{name}")
    os.close(done)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        # reap whatever ends up here (pid 1 of the namespace adopts orphans)
        try:
            os.wait()
        except ChildProcessError:
            signal.pause()


# ------------------------------------------------------------------ the kubelet (outside)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


@dataclass(slots=True)
class ProbeLog:
    """What the kubelet saw of one probe."""

    runs: int = 0
    failures: int = 0
    last_output: str = ""
    #: the distinct failure lines seen (first few): why the probe failed
    failure_lines: list[str] = field(default_factory=list)


@dataclass(slots=True)
class PodStatus:
    ready_at: float | None = None
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    probes: dict[str, ProbeLog] = field(default_factory=dict)
    skipped_mounts: list[str] = field(default_factory=list)


class Pod:
    """A pod of ``spec`` on ``node`` (see the module doc).

    Args:
        command: the image's entrypoint (the ``sgx-quote-helper`` executable); the container runs
            ``command + spec.args``.
        path_dirs: prepended to PATH in the container (where ``sgx-quote-helper`` is installed, as
            in the image): the probes' commands find it there.
        start_delay: seconds the container waits before its entrypoint runs (a slow node).
    """

    def __init__(
        self,
        node: Node,
        spec: PodSpec,
        name: str,
        command: list[str],
        path_dirs: list[str],
        *,
        start_delay: float = 0.0,
    ) -> None:
        self.node, self.spec, self.name = node, spec, name
        self.dir = node.root / "pods" / name
        self.command = command
        self.start_delay = start_delay
        self.env = {
            **spec.env,
            "PATH": os.pathsep.join([*path_dirs, "/usr/local/bin", "/usr/bin", "/bin"]),
            "PYTHONUNBUFFERED": "1",
            "HOSTNAME": name,
        }
        self.status = PodStatus()
        self._sandbox: subprocess.Popen[bytes] | None = None
        self._sandbox_pid = 0
        self._container: subprocess.Popen[bytes] | None = None
        self._deleting = threading.Event()
        self._lock = threading.Lock()
        self._kubelet: threading.Thread | None = None
        self.ready = threading.Event()
        #: restartPolicy Never: the container has exited (its status in ``status.exit_codes``)
        self.exited = threading.Event()

    # -- sandbox

    def start(self, timeout: float = 30.0) -> Pod:
        """Create the sandbox, start the container and the kubelet's probe loop."""
        self.dir.mkdir(parents=True)
        mounts = []
        for m in self.spec.mounts:
            if m.kind == "hostPath":
                source = self.node.host_dir(m.host_path)
                is_dir = True
            elif m.kind == "emptyDir":
                source = self.dir / "volumes" / m.name
                source.mkdir(parents=True)
                is_dir = True
            else:
                source = self.dir / "volumes" / f"{m.name}-{Path(m.sub_path).name or 'data'}"
                source.parent.mkdir(parents=True, exist_ok=True)
                source.write_text(m.data)
                is_dir = False
            mounts.append(
                {"source": str(source), "target": m.path, "read_only": m.read_only, "is_dir": is_dir}
            )
        ready_file = self.dir / "sandbox.ready"
        plan = self.dir / "sandbox.json"
        plan.write_text(json.dumps({"mounts": mounts, "ready_file": str(ready_file), "keep": image_paths()}))
        log = open(self.dir / "sandbox.log", "wb")  # noqa: SIM115 - the child owns it
        self._sandbox = subprocess.Popen(
            [
                "unshare", "--pid", "--mount", "--net", "--fork", "--mount-proc", "--kill-child",
                sys.executable, "-c",
                "import sys; from sgx_quote_helper.testing.pods import sandbox_main; sys.exit(sandbox_main(sys.argv[1]))",
                str(plan),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while not ready_file.exists():
            if self._sandbox.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pod {self.name}: the sandbox did not start; see {self.dir}/sandbox.log")
            time.sleep(0.01)
        self.status.skipped_mounts = json.loads(ready_file.read_text())["skipped"]
        (self._sandbox_pid,) = _children(self._sandbox.pid)
        self._start_container()
        self._kubelet = threading.Thread(target=self._kubelet_loop, name=f"kubelet-{self.name}", daemon=True)
        self._kubelet.start()
        return self

    def nsenter(self) -> list[str]:
        """The command prefix that enters this pod's namespaces."""
        return ["nsenter", f"--target={self._sandbox_pid}", "--pid", "--mount", "--net", "--"]

    def exec(self, command: list[str] | tuple[str, ...], timeout: float) -> tuple[int, str]:
        """Run ``command`` in the pod (a kubelet exec probe); (exit status, output). A timeout is a failure."""
        try:
            res = subprocess.run(
                [*self.nsenter(), *command],
                env=self.env,
                capture_output=True,
                timeout=timeout,
                cwd="/",
            )
        except subprocess.TimeoutExpired:
            return -1, f"probe timed out after {timeout:g}s"
        return res.returncode, (res.stdout + res.stderr).decode(errors="replace").strip()

    # -- the container

    def _start_container(self) -> None:
        n = len(self.status.exit_codes)
        log = open(self.dir / f"container-{n}.log", "wb")  # noqa: SIM115 - the child owns it
        cmd = [*(self.spec.command or self.command), *self.spec.args]
        if self.start_delay > 0:  # the slow node: everything the entrypoint does starts late
            cmd = ["sh", "-c", f'sleep {self.start_delay}; exec "$@"', "sh", *cmd]
        self._container = subprocess.Popen(
            [*self.nsenter(), *cmd], env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd="/"
        )
        log.close()

    def container_pid(self) -> int:
        """The container's main process (host pid), once nsenter has forked it."""
        c = self._container
        assert c is not None
        for _ in range(500):
            kids = _children(c.pid)
            if kids:
                return kids[0]
            if c.poll() is not None:
                return 0
            time.sleep(0.01)
        return 0

    def kill_container(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the container's main process (a crash, for tests of the kubelet)."""
        pid = self.container_pid()
        if pid:
            os.kill(pid, sig)

    def logs(self) -> str:
        """Every container log of this pod, oldest first."""
        return "".join(p.read_text(errors="replace") for p in sorted(self.dir.glob("container-*.log")))

    # -- the kubelet

    def _run_probe(self, name: str, probe: Probe) -> bool:
        code, out = self.exec(probe.command, probe.timeout)
        log = self.status.probes.setdefault(name, ProbeLog())
        log.runs += 1
        log.last_output = out[-300:]
        if code != 0:
            log.failures += 1
            line = out.splitlines()[-1] if out else f"exit status {code}"
            if line not in log.failure_lines and len(log.failure_lines) < 8:
                log.failure_lines.append(line)
        return code == 0

    def _kubelet_loop(self) -> None:
        spec = self.spec
        started = spec.startup is None
        live_fail = 0
        ready_ok = ready_fail = 0
        start_fail = 0
        t0 = time.monotonic()
        next_ready = next_live = next_start = t0
        while not self._deleting.is_set():
            c = self._container
            assert c is not None
            if c.poll() is not None:
                with self._lock:
                    if self._deleting.is_set():
                        return
                    if self.spec.restart_policy == "Never":
                        self.status.exit_codes.append(c.returncode)
                        self.exited.set()
                        return
                    self.status.exit_codes.append(c.returncode)
                    self.status.restarts += 1
                    self.ready.clear()
                    self._start_container()
                started, live_fail, ready_ok, ready_fail, start_fail = spec.startup is None, 0, 0, 0, 0
                t0 = time.monotonic()
                next_ready = next_live = next_start = t0
                continue
            now = time.monotonic()
            if not started and spec.startup is not None and now >= next_start:
                if self._run_probe("startup", spec.startup):
                    started = True
                    next_ready = next_live = time.monotonic()
                else:
                    start_fail += 1
                    if start_fail >= spec.startup.failure_threshold:
                        self.kill_container()
                next_start = now + spec.startup.period
            if started and spec.readiness is not None and now >= next_ready:
                if self._run_probe("readiness", spec.readiness):
                    ready_ok, ready_fail = ready_ok + 1, 0
                    if ready_ok >= spec.readiness.success_threshold and not self.ready.is_set():
                        self.status.ready_at = time.monotonic()
                        self.ready.set()
                else:
                    ready_ok, ready_fail = 0, ready_fail + 1
                    if ready_fail >= spec.readiness.failure_threshold:
                        self.ready.clear()
                next_ready = now + spec.readiness.period
            if started and spec.liveness is not None and now >= next_live:
                if self._run_probe("liveness", spec.liveness):
                    live_fail = 0
                else:
                    live_fail += 1
                    if live_fail >= spec.liveness.failure_threshold:
                        self.kill_container()
                next_live = now + spec.liveness.period
            self._deleting.wait(0.02)

    def delete(self, grace: float | None = None) -> int | None:
        """Delete the pod: SIGTERM the container, wait up to the grace period, SIGKILL, remove the
        sandbox. Returns the container's exit status (None if it had to be killed)."""
        with self._lock:  # from here the kubelet loop neither restarts nor probes anew
            self._deleting.set()
        code: int | None = None
        c = self._container
        if c is not None and c.poll() is None:
            pid = self.container_pid()
            if pid:
                os.kill(pid, signal.SIGTERM)
            try:
                code = c.wait(self.spec.grace if grace is None else grace)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait(10)
        elif c is not None:
            code = c.returncode
        if self._kubelet is not None:  # a probe still running ends with the sandbox at the latest
            self._kubelet.join(0.5)
        if self._sandbox is not None and self._sandbox.poll() is None:
            # unshare ignores SIGTERM while it waits: stop the sandbox (pid 1 of the pod) itself;
            # every process left in the pod's pid namespace dies with it
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._sandbox_pid, signal.SIGKILL)
            try:
                self._sandbox.wait(10)
            except subprocess.TimeoutExpired:
                self._sandbox.kill()
                self._sandbox.wait(10)
        return code


def entrypoint() -> tuple[list[str], list[str]]:
    """The image's entrypoint here (this interpreter's ``sgx-quote-helper``) and the PATH dirs
    that hold it (for the probes' commands)."""
    bindir = Path(sys.executable).parent
    exe = bindir / "sgx-quote-helper"
    if exe.exists():
        return [str(exe)], [str(bindir)]
    found = shutil.which("sgx-quote-helper")
    if found is None:
        raise RuntimeError("sgx-quote-helper is not installed next to this interpreter nor on PATH")
    return [found], [str(Path(found).parent)]


def namespaces_available() -> str | None:
    """None when pods can run here; else why not (no unshare/nsenter, not permitted)."""
    for tool in ("unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        res = subprocess.run(
            ["unshare", "--pid", "--mount", "--net", "--fork", "--mount-proc", "true"],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare failed: {exc}"
    if res.returncode != 0:
        return f"unshare is not permitted here: {res.stderr.decode(errors='replace').strip()}"
    return None


__all__ = [
    "Mount",
    "Node",
    "Pod",
    "PodSpec",
    "PodStatus",
    "Probe",
    "entrypoint",
    "load_pod_spec",
    "namespaces_available",
    "sandbox_main",
]
