"""Soak run: mixed good and hostile clients against a daemon subprocess, RSS and fds sampled.

See ``sgx_quote_helper.testing.soak`` for what runs and the verdict: RSS may grow by at most 8 MiB
(or 10 %) between the first and last quarter after warm-up; fds back within 8 of the start once
the hostile clients stop; zero failed requests and no bad quote for the good clients; the daemon
exits 0. Exit status 1 when any of that fails.

Usage::

    python bench/soak.py --minutes 5                 # the documented soak
    python bench/soak.py --seconds 20                # CI slice (tests/test_soak.py runs 15 s)
    python bench/soak.py --frames 1000000            # a million hostile frames through the daemon

Writes bench/results/soak-<UTC time>.json (summary and every sample).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
from pathlib import Path

from sgx_quote_helper.testing.soak import run_soak

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    length = ap.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float)
    length.add_argument("--seconds", type=float)
    length.add_argument("--frames", type=int, help="run until this many hostile frames were sent")
    ap.add_argument("--good-clients", type=int, default=8)
    ap.add_argument("--hostile-threads", type=int, default=2)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    ap.add_argument("--rss-tolerance-mib", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    seconds = args.seconds if args.seconds is not None else (args.minutes or 5.0) * 60
    root = Path(tempfile.mkdtemp(prefix="sqsk", dir="/tmp"))
    try:
        res = run_soak(
            root,
            seconds,
            good_clients=args.good_clients,
            hostile_threads=args.hostile_threads,
            interval=args.interval,
            max_frames=args.frames,
            seed=args.seed,
            rss_tolerance_kib=int(args.rss_tolerance_mib * 1024),
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    v, g = res["verdict"], res["good"]
    print(
        f"soak {res['seconds']}s: hostile {res['hostile']}; good intel ok={g['intel']['ok']} "
        f"failed={g['intel']['failed']}, ours ok={g['ours']['ok']} failed={g['ours']['failed']}; "
        f"RSS {v['rss_first_quarter_kib'] / 1024:.1f} -> {v['rss_last_quarter_kib'] / 1024:.1f} MiB "
        f"(max {v['rss_max_kib'] / 1024:.1f}, allowed +{v['rss_allowed_growth_kib'] / 1024:.1f}); "
        f"fds {v['fds_before']} -> max {v['fds_max']} -> {v['fds_after']} -> {'PASS' if res['passed'] else 'FAIL'}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out / f"soak-{stamp}.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")
    return 0 if res["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
