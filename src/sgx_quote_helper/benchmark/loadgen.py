"""The load generator: N concurrent clients of an AESM socket, spread over worker processes.

:func:`run_load` starts ``processes`` worker processes (``spawn``; each runs its share of the
clients as asyncio tasks on uvloop when available, over raw non-blocking sockets), starts them all
at one instant of the system-wide monotonic clock, and merges their counts and latency samples.
Load generation therefore scales with cores and is not what a benchmark of one daemon measures.

Styles: ``intel`` is Intel's client library call for call and syscall for syscall (a new
connection per call, the length and the body in two writes, the reply read length-first: see
:mod:`.intel`); ``aesmd`` opens a new connection per request but writes each frame at once and reads
in 64 KiB chunks (the suite's historical load generator); ``keepalive`` keeps one connection per client (our
daemon allows it; Intel's does not). Requests are timed from connect to the last reply byte.
A request counts when it completes inside the measured window (after ``warmup``); requests still
running ``grace`` seconds after the end are cancelled and counted as ``timeout``.

With ``loadgen="native"`` (style ``intel`` only) the clients run in one native process instead
(:mod:`.native`: the same calls, system call for system call, for a fraction of the CPU, so that
one load core stays ahead of one daemon core).

Workers are ``spawn``-ed, so a script calling :func:`run_load` needs the usual
``if __name__ == "__main__":`` guard.

The workers (:mod:`.worker`) do socket I/O and read the clock: a measuring tool, above the client layer.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Literal

from .spec import DONE, GO, PROGRESS, PROGRESS_INTERVAL, READY, STYLES, LoadSpec, Style
from .timing import LatencySamples, LatencySummary
from .worker import worker_main
from .workload import OK


@dataclass(frozen=True, slots=True)
class Progress:
    """A live snapshot: seconds since the start, phase, measured answers so far, current rate."""

    elapsed: float
    phase: Literal["warmup", "measure", "drain"]
    ok: int
    errors: int
    ok_per_s: float


@dataclass
class LoadResult:
    """Merged outcome of a run. ``counts`` maps "ok" and error labels to measured requests."""

    spec: LoadSpec
    processes: int
    window_s: float
    counts: Counter[str]
    latency: LatencySummary
    event_loop: str
    #: CPU seconds the load-generator processes used (warm-up included)
    load_cpu_s: float = 0.0
    samples: LatencySamples = field(repr=False, default_factory=LatencySamples)
    #: ``python`` or ``native`` (:mod:`.native`)
    loadgen: str = "python"
    #: the load generator's CPU seconds inside the measured window, when it measures them (native)
    load_cpu_window_s: float | None = None
    #: anything else the load generator reports (native: calls in the window, the first bad reply)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return self.counts.get(OK, 0)

    @property
    def requests(self) -> int:
        return sum(self.counts.values())

    @property
    def errors(self) -> dict[str, int]:
        return {k: v for k, v in sorted(self.counts.items()) if k != OK}

    @property
    def ok_per_s(self) -> float:
        return self.ok / self.window_s if self.window_s > 0 else 0.0

    def _load_cpu_per_request(self) -> float:
        if self.load_cpu_window_s is not None:  # measured inside the window: exact
            return self.load_cpu_window_s / self.requests if self.requests else 0.0
        # the CPU time covers warm-up + window; scale the measured requests to that span
        if self.window_s <= 0 or not self.requests:
            return 0.0
        return self.load_cpu_s / (self.requests * (self.spec.warmup + self.window_s) / self.window_s)

    def to_dict(self) -> dict[str, Any]:
        """The JSON result of ``bench quote``."""
        spec = self.spec
        return {
            "socket": spec.socket_path,
            "request": spec.workload.kind,
            "request_description": spec.workload.description,
            "style": spec.style,
            "sequence": spec.workload.sequence,
            "calls_per_request": 1 + len(spec.workload.prelude),
            "clients": spec.clients,
            "processes": self.processes,
            "event_loop": self.event_loop,
            "warmup_s": spec.warmup,
            "window_s": round(self.window_s, 3),
            "requests": self.requests,
            "ok": self.ok,
            "ok_per_s": round(self.ok_per_s, 1),
            "quotes_per_s": round(self.ok_per_s, 1) if spec.workload.kind == "quote" else None,
            "error_count": self.requests - self.ok,
            "errors": self.errors,
            "latency_us": self.latency.to_dict(),
            "load_generator_cpu_s": round(self.load_cpu_s, 3),
            "load_generator_cpu_us_per_request": round(self._load_cpu_per_request() * 1e6, 1),
            "loadgen": self.loadgen,
            **self.extra,
        }


def default_processes(clients: int, cpus: int | None = None) -> int:
    """Worker processes for ``clients``: half the CPUs (the other half is the daemon's), 1..8."""
    n = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(1, min(clients, n // 2, 8))


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_load(spec: LoadSpec, on_progress: Callable[[Progress], None] | None = None) -> LoadResult:
    """Run the load described by ``spec``; calls ``on_progress`` about every 0.25 s.

    Raises:
        RuntimeError: a worker process died or could not start.
    """
    if spec.clients < 1:
        raise ValueError("clients must be >= 1")
    if spec.loadgen == "native":
        return _run_native(spec, on_progress)
    nproc = min(spec.processes or default_processes(spec.clients), spec.clients)
    shares = _split(spec.clients, nproc)
    quotas = _split(spec.total_requests, nproc) if spec.total_requests else [None] * nproc
    ctx = multiprocessing.get_context("spawn")
    conns: list[Connection] = []
    procs = []
    try:
        for share, quota in zip(shares, quotas, strict=True):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child, spec, share, quota), daemon=True)
            proc.start()
            child.close()
            conns.append(parent)
            procs.append(proc)
        for conn in conns:
            try:
                started = conn.poll(60) and conn.recv()[0] == READY
            except (EOFError, OSError):
                started = False
            if not started:
                raise RuntimeError(
                    "a load-generator process did not start (is the caller's main module guarded?)"
                )
        start_ns = time.monotonic_ns() + 20_000_000
        for conn in conns:
            conn.send((GO, start_ns))
        return _collect(spec, conns, start_ns, on_progress, nproc)
    except BaseException:
        for proc in procs:  # interrupted or failed: do not wait for the workers' runs to end
            proc.terminate()
        raise
    finally:
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        for conn in conns:
            conn.close()


class _ProgressMeter:
    """What ``on_progress`` is told as a run goes: the phase by the seconds elapsed, and the rate
    over the last second or so (at least 0.2 s: reports arrive in bursts)."""

    def __init__(self, spec: LoadSpec, on_progress: Callable[[Progress], None] | None, start: float) -> None:
        self.spec, self.on_progress = spec, on_progress
        self.history: deque[tuple[float, int]] = deque([(start, 0)])
        self.current = 0.0

    def report(self, elapsed: float, ok: int, errors: int) -> None:
        if self.on_progress is None:
            return
        spec, history, now = self.spec, self.history, time.monotonic()
        phase: Literal["warmup", "measure", "drain"] = (
            "warmup"
            if elapsed < spec.warmup
            else "measure"
            if spec.total_requests or elapsed < spec.warmup + spec.duration
            else "drain"
        )
        history.append((now, ok))
        while len(history) > 2 and now - history[1][0] >= 1.0:
            history.popleft()
        t0, ok0 = history[0]
        if now - t0 >= 0.2:
            self.current = (ok - ok0) / (now - t0)
        self.on_progress(Progress(elapsed, phase, ok, errors, self.current))


def _run_native(spec: LoadSpec, on_progress: Callable[[Progress], None] | None) -> LoadResult:
    from . import native

    t0 = time.monotonic()
    meter = _ProgressMeter(spec, on_progress, t0)

    def progress(ok: int, errors: int) -> None:
        meter.report(time.monotonic() - t0, ok, errors)

    out = native.run_native(spec, progress)
    extra: dict[str, Any] = {
        "calls_in_window": out["calls_in_window"],
        # of the whole run (warm-up included): user space vs the kernel's socket work
        "load_generator_cpu_user_s": round(float(out["cpu_user_s"]), 3),
        "load_generator_cpu_system_s": round(float(out["cpu_system_s"]), 3),
    }
    if "first_bad_response" in out:
        extra["first_bad_response"] = out["first_bad_response"]
    return LoadResult(
        spec, 1, float(out["window_s"]), native.counts(out), native.latency_summary(out), "epoll (native)",
        float(out["cpu_s"]), loadgen="native", load_cpu_window_s=float(out["cpu_window_s"]), extra=extra,
    )  # fmt: skip


def _collect(
    spec: LoadSpec,
    conns: list[Connection],
    start_ns: int,
    on_progress: Callable[[Progress], None] | None,
    nproc: int,
) -> LoadResult:
    live: dict[int, tuple[int, int]] = {}
    counts: Counter[str] = Counter()
    samples = LatencySamples()
    window_ns = 0
    cpu_s = 0.0
    loop_name = "?"
    pending = {id(c): c for c in conns}
    meter = _ProgressMeter(spec, on_progress, time.monotonic())
    while pending:
        ready = wait(list(pending.values()), timeout=PROGRESS_INTERVAL)
        for conn in ready:
            assert isinstance(conn, Connection)
            try:
                msg = conn.recv()
            except EOFError:
                raise RuntimeError("a load-generator process died") from None
            if msg[0] == PROGRESS:
                live[id(conn)] = (msg[1], msg[2])
            elif msg[0] == DONE:
                _, worker_counts, raw, worker_window_ns, loop_name, worker_cpu = msg
                cpu_s += worker_cpu
                counts.update(worker_counts)
                samples.merge(LatencySamples.from_bytes(raw))
                window_ns = max(window_ns, worker_window_ns)
                live[id(conn)] = (
                    worker_counts.get(OK, 0),
                    sum(worker_counts.values()) - worker_counts.get(OK, 0),
                )
                del pending[id(conn)]
        if on_progress is not None:
            ok = sum(v[0] for v in live.values())
            errors = sum(v[1] for v in live.values())
            meter.report((time.monotonic_ns() - start_ns) / 1e9, ok, errors)
    window = window_ns / 1e9 if spec.total_requests else spec.duration
    return LoadResult(spec, nproc, window, counts, samples.summary(), loop_name, cpu_s, samples)


__all__ = ["STYLES", "LoadResult", "LoadSpec", "Progress", "Style", "default_processes", "run_load"]
