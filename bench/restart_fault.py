"""Restart fault run: clients quote continuously while the daemon is restarted (issue 8).

Real ``serve --engine simulated`` subprocesses on a temporary socket; half the clients behave like
Intel's libsgx_quote_ex (one connection per request, no retry), half use our QuoteClient (retry
within its deadline). Every quote is parsed and its signature and report data checked.

Pass criteria (exit 1 otherwise): rolling restarts: zero failed requests for both kinds of client;
sigkill: zero failed requests for our client; never a bad quote; old daemons exit 0 on SIGTERM.

Usage::

    python bench/restart_fault.py --restarts 20 --clients 32             # both modes, ~1-2 min
    python bench/restart_fault.py --modes rolling --restarts 100 --clients 64

Writes bench/results/restart_fault-<UTC time>.json (per-kind totals, max gap a client saw between
two good quotes, max latency, per-restart time).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
from pathlib import Path

from sgx_quote_helper.testing.restart import run_restarts

RESULTS = Path(__file__).resolve().parent / "results"


def passed(result: dict[str, object]) -> bool:
    """The issue's criteria for one mode's result."""
    intel, ours = result["intel"], result["ours"]
    assert isinstance(intel, dict) and isinstance(ours, dict)
    ok = ours["failed"] == 0 and intel["bad_quotes"] == 0 and ours["bad_quotes"] == 0
    if result["mode"] == "rolling":
        ok = ok and intel["failed"] == 0 and all(c == 0 for c in result["old_exit_codes"])  # type: ignore[attr-defined]
    return bool(ok and intel["ok"] and ours["ok"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--restarts", type=int, default=20)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--modes", default="rolling,sigkill", help="comma-separated: rolling, sigkill")
    ap.add_argument("--settle", type=float, default=0.5, help="seconds of load between restarts")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    results = []
    for mode in args.modes.split(","):
        root = Path(tempfile.mkdtemp(prefix="sqrf", dir="/tmp"))
        try:
            res = run_restarts(root, mode, args.restarts, args.clients, settle=args.settle)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        res["passed"] = passed(res)
        results.append(res)
        i, o = res["intel"], res["ours"]
        print(
            f"{mode:8} restarts={args.restarts} clients={args.clients} {res['seconds']}s: "
            f"intel ok={i['ok']} failed={i['failed']} bad={i['bad_quotes']} max_gap={i['max_gap_s']}s | "
            f"ours ok={o['ok']} failed={o['failed']} bad={o['bad_quotes']} max_gap={o['max_gap_s']}s | "
            f"max restart {res['max_restart_s']}s -> {'PASS' if res['passed'] else 'FAIL'}"
        )
        for kind in ("intel", "ours"):
            for e in res[kind]["errors"]:
                print(f"  {kind}: {e}")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out / f"restart_fault-{stamp}.json"
    out.write_text(json.dumps({"results": results}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
