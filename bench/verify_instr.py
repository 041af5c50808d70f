"""Instructions per verification (warm, cold, or the quote's one ECDSA check), for callgrind.

Sets up exactly as ``bench_verify.py`` (same real quote, collateral and ``now``; warm: one primed
Verifier; cold: a new Verifier and Collateral per call), then runs N verifications. Instructions
per verification are (total for N - total for 0) / N, which is deterministic and does not depend
on what else runs on the machine::

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \\
        .venv/bin/python bench/verify_instr.py warm 200     # and again with 0

Modes: ``warm``, ``cold``, ``ecdsa`` (the quote's attestation-key signature alone: the part of a
warm verification that is OpenSSL's). ``--profile`` prints a cProfile of the loop instead;
``--cpu`` prints the best of 3 loops of N in process CPU microseconds per call, for interleaved
A/B runs against another checkout's ``src`` (``PYTHONPATH=/tmp/base/src`` alternating with none).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_verify import REAL, VECTORS

from sgx_quote_helper.abi.quote import Quote
from sgx_quote_helper.verify.collateral import Collateral, load_dcap_qvl_json
from sgx_quote_helper.verify.steps import Step, ecdsa_verify, raw_public_key
from sgx_quote_helper.verify.verifier import Verifier


def workload(mode: str, vector: str = "phala-sgx-v3-processor") -> Callable[[], object]:
    coll_name, now = VECTORS[vector]
    d = REAL / vector
    quote = (d / "quote.bin").read_bytes()
    proto = load_dcap_qvl_json((d / coll_name).read_text())
    fields = {f.name: getattr(proto, f.name) for f in dataclasses.fields(Collateral)}
    warm_verifier = Verifier()
    warm_verifier.verify(quote, proto, now)

    def warm() -> object:
        return warm_verifier.verify(quote, proto, now)

    def cold() -> object:
        return Verifier(cache_size=0).verify(quote, Collateral(**fields), now)

    q = Quote.from_bytes(quote)
    key = raw_public_key(q.signature_data.attestation_key, Step.ISV_SIGNATURE, "attestation-key")
    signed, sig = quote[q.regions.signed], q.signature_data.signature

    def ecdsa() -> object:
        return ecdsa_verify(key, sig, signed)

    for _ in range(5):  # imports, lazy caches: outside the difference
        cold(), warm(), ecdsa()
    return {"warm": warm, "cold": cold, "ecdsa": ecdsa}[mode]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("warm", "cold", "ecdsa"))
    ap.add_argument("n", type=int)
    ap.add_argument("--vector", default="phala-sgx-v3-processor", choices=sorted(VECTORS))
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--cpu", action="store_true")
    args = ap.parse_args()
    one = workload(args.mode, args.vector)
    if args.cpu:
        best = []
        for _ in range(3):
            start = time.process_time()
            for _ in range(args.n):
                one()
            best.append((time.process_time() - start) / args.n * 1e6)
        print(f"{min(best):.2f}")
        return
    if args.profile:
        import cProfile
        import pstats

        pr = cProfile.Profile()
        pr.enable()
        for _ in range(args.n):
            one()
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(35)
        return
    for _ in range(args.n):
        one()


if __name__ == "__main__":
    main()
