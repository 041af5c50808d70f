"""Instructions per quote of the daemon under Intel-pattern clients, counted by callgrind.

A deterministic measure for a shared machine (wall-clock and CPU time vary with what else runs;
instruction counts do not): starts ``python -m sgx_quote_helper serve --engine simulated`` (uvloop)
under ``valgrind --tool=callgrind``, warms it up, zeroes the counters (``callgrind_control -z``),
sends exactly ``--quotes`` GetQuoteEx calls from ``--clients`` Intel-pattern clients (a new
connection per call, prefix and body written separately, reply read length-first: ``bench quote
--client intel``'s load generator), dumps the counters (``callgrind_control -d``) and prints the
user-space instructions per quote. Kernel work (the system calls themselves) is not counted;
the CPU time the interpreter spends around them is.

Usage::

    .venv/bin/python bench/callgrind_daemon.py --quotes 2000
    .venv/bin/python bench/callgrind_daemon.py --src /tmp/base/src --quotes 2000   # another tree
    .venv/bin/python bench/callgrind_daemon.py --annotate 40                     # top functions

Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sgx_quote_helper.benchmark.daemon import DaemonProcess
from sgx_quote_helper.benchmark.loadgen import run_load
from sgx_quote_helper.benchmark.spec import LoadSpec
from sgx_quote_helper.benchmark.workload import prepare_workload
from sgx_quote_helper.sim.platform import Platform


class CallgrindDaemon(DaemonProcess):
    """The daemon, run by valgrind's callgrind with its counters off until zeroed."""

    def __init__(self, *args: object, out: Path, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.out = out

    @property
    def argv(self) -> list[str]:
        vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}", "--dump-instr=no"]
        return vg + super().argv


def total_ir(path: Path) -> int:
    """The instruction count of a callgrind dump (its ``totals:`` or ``summary:`` line)."""
    for line in path.read_text().splitlines():
        found = re.match(r"(?:totals|summary):\s+(\d+)", line)
        if found:
            return int(found.group(1))
    raise RuntimeError(f"no totals in {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quotes", type=int, default=2000)
    ap.add_argument("--warmup-quotes", type=int, default=300)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--src", type=Path, default=None, help="run the daemon from this src/ tree (PYTHONPATH)")
    ap.add_argument("--annotate", type=int, default=0, help="print this many top functions (inclusive)")
    ap.add_argument("--keep", type=Path, default=None, help="copy the callgrind dump here")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed")
    with tempfile.TemporaryDirectory(prefix="sqcg", dir="/tmp") as tmp:
        root = Path(tmp)
        Platform.init(root / "plat")
        out = root / "callgrind.out"
        daemon = CallgrindDaemon(
            root / "d.socket", root / "plat", cpu_affinity=frozenset({0}), out=out
        )  # fmt: skip
        old = os.environ.get("PYTHONPATH")
        if args.src is not None:
            os.environ["PYTHONPATH"] = str(args.src.resolve())
        try:
            daemon.start(timeout=300)
        finally:
            if args.src is not None:
                if old is None:
                    del os.environ["PYTHONPATH"]
                else:
                    os.environ["PYTHONPATH"] = old
        try:
            workload = prepare_workload(
                daemon.socket_path, "quote", state_dir=root / "plat", sequence="get-quote"
            )

            def load(n: int) -> dict[str, object]:
                spec = LoadSpec(
                    str(daemon.socket_path), workload, clients=args.clients, warmup=0.0, style="intel",
                    processes=1, total_requests=n, cpu_affinity=frozenset({1}), grace=120.0,
                )  # fmt: skip
                return run_load(spec).to_dict()

            load(args.warmup_quotes)
            subprocess.run(["callgrind_control", "-z", str(daemon.pid)], check=True, capture_output=True)
            t0 = time.monotonic()
            result = load(args.quotes)
            elapsed = time.monotonic() - t0
            subprocess.run(["callgrind_control", "-d", str(daemon.pid)], check=True, capture_output=True)
        finally:
            daemon.stop(timeout=120)
        dumps = sorted(root.glob("callgrind.out.*"), key=lambda p: p.stat().st_mtime)
        dumps = [p for p in dumps if total_ir(p) > 0]
        if not dumps:
            sys.exit("no callgrind dump was written")
        dump = dumps[0]  # the first dump after the zeroing is the measured phase
        ir = total_ir(dump)
        ok = int(result["ok"])  # type: ignore[call-overload]
        print(
            f"{args.src or 'this tree'}: {ok} quotes ok, {result['error_count']} errors, "
            f"{ir:,} instructions = {ir / max(ok, 1):,.0f} per quote ({elapsed:.1f} s under callgrind)"
        )
        if args.keep is not None:
            shutil.copy(dump, args.keep)
        if args.annotate:
            ann = subprocess.run(
                ["callgrind_annotate", "--inclusive=yes", str(dump)],
                capture_output=True,
                text=True,
                check=False,
            )
            print("\n".join(ann.stdout.splitlines()[: args.annotate + 25]))


if __name__ == "__main__":
    main()
