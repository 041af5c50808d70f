"""Verifier throughput, cold vs warm, against dcap-qvl in the same run.

Cold: a new Verifier and a new Collateral object (fields already decoded, like dcap-qvl's
prebuilt QuoteCollateralV3) for every call, so nothing is cached: every certificate, CRL and
signature is checked and the TCB Info / QE Identity JSON is parsed each time.
Warm: one Verifier, same platform, caches primed (per-quote cost: parse, QE report data hash,
attestation-key signature, TCB level look-up, policy).
dcap-qvl: ``dcap_qvl.verify(quote, collateral, now)`` with a prebuilt collateral object.

Series are interleaved (cold, warm, dcap-qvl, cold, ...) so machine noise hits all three alike.

    python bench/bench_verify.py [--vector phala-sgx-v3-processor] [--series 5] [--seconds 1.0]
        [--json] [--out bench/results/verify-<host>.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sgx_quote_helper.verify.collateral import Collateral, load_dcap_qvl_json
from sgx_quote_helper.verify.verifier import Verifier

ROOT = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("SGX_QUOTE_HELPER_SHARED", ROOT.parent / "shared")) / "testdata" / "real"
VECTORS = {
    "phala-sgx-v3-processor": ("collateral-2025-06.dcap-qvl.json", 1750334400),
    "tdx/phala-tdx-v4": ("collateral-2025-06.dcap-qvl.json", 1750334400),
}


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after a short warm-up)."""
    for _ in range(10):
        fn()
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(20):
            fn()
        n += 20
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def machine() -> dict[str, object]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "host": platform.node()}


def run(vector: str, series: int, seconds: float) -> dict[str, object]:
    import dcap_qvl

    coll_name, now = VECTORS[vector]
    d = REAL / vector
    quote = (d / "quote.bin").read_bytes()
    text = (d / coll_name).read_text()
    proto = load_dcap_qvl_json(text)
    fields = {f.name: getattr(proto, f.name) for f in dataclasses.fields(Collateral)}

    def cold() -> object:
        return Verifier(cache_size=0).verify(quote, Collateral(**fields), now)

    warm_verifier = Verifier()
    warm_verifier.verify(quote, proto, now)

    def warm() -> object:
        return warm_verifier.verify(quote, proto, now)

    theirs = dcap_qvl.QuoteCollateralV3.from_json(text)

    def ref() -> object:
        return dcap_qvl.verify(quote, theirs, now)

    # same answer from both before timing anything
    assert (
        str(dcap_qvl.verify(quote, theirs, now).status)
        == warm_verifier.verify(quote, proto, now).status.value
    )
    out: dict[str, list[float]] = {"cold": [], "warm": [], "dcap_qvl": []}
    for i in range(series):
        for name, fn in (("cold", cold), ("warm", warm), ("dcap_qvl", ref)):
            out[name].append(rate(fn, seconds))
        print(
            f"series {i + 1}/{series}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in out.items()),
            file=sys.stderr,
        )
    med = {k: statistics.median(v) for k, v in out.items()}
    return {
        "vector": vector,
        "cold_per_s": round(med["cold"], 1),
        "warm_per_s": round(med["warm"], 1),
        "dcap_qvl_per_s": round(med["dcap_qvl"], 1),
        "cold_vs_dcap_qvl": round(med["cold"] / med["dcap_qvl"], 3),
        "warm_vs_dcap_qvl": round(med["warm"] / med["dcap_qvl"], 3),
        "series": {k: [round(x, 1) for x in v] for k, v in out.items()},
        "seconds_per_series": seconds,
        "dcap_qvl_version": getattr(dcap_qvl, "__version__", "?"),
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vector", action="append", choices=sorted(VECTORS))
    ap.add_argument("--series", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--json", action="store_true", help="one JSON object per vector on stdout")
    ap.add_argument("--out", type=Path, help="also write the results (a JSON list) to this file")
    args = ap.parse_args()
    results = [run(v, args.series, args.seconds) for v in (args.vector or ["phala-sgx-v3-processor"])]
    for r in results:
        if args.json:
            print(json.dumps(r))
        else:
            print(
                f"{r['vector']}: cold {r['cold_per_s']}/s ({r['cold_vs_dcap_qvl']}x dcap-qvl), "
                f"warm {r['warm_per_s']}/s ({r['warm_vs_dcap_qvl']}x), dcap-qvl {r['dcap_qvl_per_s']}/s"
            )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
