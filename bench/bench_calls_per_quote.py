"""Work per quote that a shared machine's load cannot blur: Python calls and system calls per GetQuoteEx.

Throughput on a shared machine swings with what other processes do. This counts instead: the
daemon (``serve --engine simulated``, every engine request inline on the loop thread so one
profiler sees all of it) runs once under ``python -m cProfile`` and once under ``strace -c -f``;
Intel-pattern clients (``--client intel``, 8 of them) send N and then 3N quotes to fresh daemons, and
the difference of the totals divided by 2N is the work per quote (start-up and shutdown cancel).
Counts, not time: a Python call is not a fixed cost, but a daemon doing fewer of them per quote does
less, whatever the machine is doing.

Usage::

    .venv/bin/python bench/bench_calls_per_quote.py                          # this tree
    .venv/bin/python bench/bench_calls_per_quote.py --src before=/tmp/base/src --src after=
    (a ``--src`` of ``NAME=`` is this tree; ``NAME=DIR`` a ``src/`` exported with ``git archive``)

Writes ``bench/results/calls_per_quote-<UTC time>.json`` and ``.md``. Needs strace.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sgx_quote_helper.benchmark.loadgen import run_load
from sgx_quote_helper.benchmark.machine import describe_machine
from sgx_quote_helper.benchmark.spec import LoadSpec
from sgx_quote_helper.benchmark.workload import prepare_workload
from sgx_quote_helper.sim.platform import Platform

RESULTS = Path(__file__).resolve().parent / "results"
_STRACE_ROW = re.compile(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$")


def _children(pid: int) -> list[int]:
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ppid = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            continue
        if ppid == str(pid):
            kids.append(int(d))
    return kids


def one_daemon(src: str | None, state: Path, root: Path, n: int, mode: str, clients: int) -> dict[str, int]:
    """Start a daemon (under cProfile or strace), send ``n`` quotes, stop it; the totals."""
    sock, out = root / f"{mode}-{n}.socket", root / f"{mode}-{n}.out"
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    serve = ["-m", "sgx_quote_helper", "serve", "--engine", "simulated", "--socket", str(sock),
             "--state-dir", str(state), "-q", "--inline-engine-ms", "1000"]  # fmt: skip
    if mode == "python":
        cmd = ["taskset", "-c", "0", sys.executable, "-m", "cProfile", "-o", str(out), *serve]
    else:
        cmd = ["strace", "-f", "-c", "-o", str(out), "taskset", "-c", "0", sys.executable, *serve]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not start: {cmd}")
            time.sleep(0.05)
        workload = prepare_workload(sock, "quote", state_dir=state, retry_deadline=30)
        result = run_load(
            LoadSpec(str(sock), workload, clients=clients, warmup=0.0, style="intel", processes=1,
                     total_requests=n, cpu_affinity=frozenset({1}))
        )  # fmt: skip
        if result.errors:
            raise RuntimeError(f"errors under load: {result.errors}")
    finally:
        target = proc.pid if mode == "python" else next(iter(_children(proc.pid)), proc.pid)
        os.kill(target, signal.SIGTERM)
        proc.wait(300)
    if mode == "python":
        stats = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
        return {f"{k[0].split('sgx_quote_helper/')[-1]}:{k[2]}": v[1] for k, v in stats.items()}
    counts: dict[str, int] = {}
    for line in out.read_text().splitlines():
        m = _STRACE_ROW.match(line)
        if m and m.group(2) != "total":  # strace -c ends with a total row
            counts[m.group(2)] = int(m.group(1))
    return counts


def per_quote(src: str | None, n: int, clients: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sqcq", dir="/tmp") as tmp:
        root = Path(tmp)
        Platform.init(root / "plat")
        result: dict[str, Any] = {}
        for mode in ("python", "syscalls"):
            a = one_daemon(src, root / "plat", root, n, mode, clients)
            b = one_daemon(src, root / "plat", root, 3 * n, mode, clients)
            diff = {k: (b.get(k, 0) - a.get(k, 0)) / (2 * n) for k in set(a) | set(b)}
            diff = {k: round(v, 2) for k, v in diff.items() if abs(v) >= 0.05}
            result[mode] = {"total": round(sum(diff.values()), 1), "by_name": dict(sorted(diff.items()))}
        return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", action="append", default=[], metavar="NAME=DIR",
                    help="a tree to count (NAME= is this tree); repeatable [default: this tree]")  # fmt: skip
    ap.add_argument("--quotes", type=int, default=1000, help="N: the runs send N and 3N quotes")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if shutil.which("strace") is None:
        sys.exit("strace is needed (apt-get install strace)")
    trees = [s.split("=", 1) for s in args.src] or [["this tree", ""]]
    utc = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    doc: dict[str, Any] = {"utc": utc, "quotes": args.quotes, "clients": args.clients,
                           "machine": describe_machine(), "trees": {}}  # fmt: skip
    for name, src in trees:
        doc["trees"][name] = {"src": src or "this tree", **per_quote(src or None, args.quotes, args.clients)}
        t = doc["trees"][name]
        print(f"{name}: {t['python']['total']} Python calls, {t['syscalls']['total']} system calls per quote",
              file=sys.stderr)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f"calls_per_quote-{utc}"
    base.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = [
        f"# Work per GetQuoteEx in the daemon ({utc})",
        "",
        f"Intel-pattern clients ({args.clients}), daemon `serve --engine simulated --inline-engine-ms 1000` "
        f"on CPU 0; runs of {args.quotes} and {3 * args.quotes} quotes, difference / {2 * args.quotes}. "
        "Counts do not depend on the machine's load.",
        "",
        "| tree | Python calls per quote (cProfile) | system calls per quote (strace -c) |",
        "| --- | ---: | ---: |",
    ]
    for name, t in doc["trees"].items():
        lines.append(f"| {name} (`{t['src']}`) | {t['python']['total']} | {t['syscalls']['total']} |")
    for name, t in doc["trees"].items():
        top = sorted(t["syscalls"]["by_name"].items(), key=lambda kv: -kv[1])
        lines += ["", f"{name}: system calls per quote: " + ", ".join(f"{k} {v:g}" for k, v in top)]
    base.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
