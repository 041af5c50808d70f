"""Micro-benchmark of the simulated platform and engine (single thread, warm).

Run: ``python bench/bench_sim_engine.py [--number N]``. Prints microseconds per call (best of 5
repetitions) for: EREPORT, the QE's report-MAC check, a quote, a quote with a QE report back,
loading a platform, creating one, and building the full collateral.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path

from sgx_quote_helper.abi.keyid import AttKeyId, QeReportInfo
from sgx_quote_helper.abi.report import TargetInfo
from sgx_quote_helper.engine.simulated import SimulatedEngine
from sgx_quote_helper.sim.collateral import quote_collateral_json
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.sim.qe import QE_TARGET_INFO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--number", type=int, default=2000, help="calls per repetition for the fast operations"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "platform"
        platform = Platform.init(state)
        engine = SimulatedEngine(platform)
        key_id = AttKeyId.ecdsa_p256_qe3()
        engine.init_quote(key_id, True)
        report = platform.ereport(QE_TARGET_INFO, b"bench")
        info = QeReportInfo(bytes(16), TargetInfo(mr_enclave=b"\x01" * 32))
        now = dt.datetime.now(dt.UTC)
        counter = iter(range(10**9))
        cases: list[tuple[str, Callable[[], object], int]] = [
            ("ereport", lambda: platform.ereport(QE_TARGET_INFO, b"bench"), args.number),
            ("verify_report_mac", lambda: platform.verify_report_mac(report, QE_TARGET_INFO), args.number),
            ("get_quote", lambda: engine.get_quote(report, key_id), args.number),
            ("get_quote + qe_report_info", lambda: engine.get_quote(report, key_id, info), args.number),
            ("Platform.open", lambda: Platform.open(state), 50),
            ("Platform.init (new keys, RSA-3072)", lambda: Platform.init(Path(tmp) / f"n{next(counter)}"), 5),
            ("quote_collateral_json", lambda: quote_collateral_json(platform, now), 50),
        ]
        for name, fn, number in cases:
            fn()  # warm up
            best = min(timeit.repeat(fn, number=number, repeat=5)) / number
            print(f"{name:40s} {best * 1e6:10.1f} us/call")


if __name__ == "__main__":
    main()
