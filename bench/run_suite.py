"""The benchmark suite: every performance figure of the project, side by side, in one run.

One command, one process tree (this process, the daemons it starts with
``python -m sgx_quote_helper serve`` and the load-generator processes)::

    .venv/bin/python bench/run_suite.py            # full run, ~6 minutes on 2 cores
    .venv/bin/python bench/run_suite.py --quick    # ~1 minute: shorter runs, 50,000-quote memory test
    .venv/bin/python bench/run_suite.py --dry-run --out /tmp/x   # seconds: smoke test of every stage

(``pip install -e '.[bench]'`` for the chart.) It writes ``bench/results/<date>[-quick].json``,
a ``.md`` table ready for the README and a ``.png`` chart, with:

1. ceilings on one core: ECDSA P-256 sign rate, AES-CMAC rate, in-process SimulatedEngine quotes;
2. the daemon, aesmd style (a new connection per GetQuoteEx), 1/16/64 clients, on uvloop and on
   asyncio's loop (``serve --no-uvloop``): quotes/s, latency percentiles, ratio to the in-process
   engine rate; the daemon on CPU 0, the load generator on CPU 1 (unless ``--no-pin``);
3. one client out-of-process (through the socket) vs in-process latency;
4. the verifier cold and warm on the real Phala SGX quote, against dcap-qvl in the same run;
5. daemon RSS at idle and under 64 clients, and its growth over 1,000,000 quotes;
6. start-up time from exec to an answered request on a fresh socket.

The machine (CPUs, model, memory, Python and library versions, uvloop, protobuf backend) and the load
average before and after go into the JSON. The issue's targets are reported as met / not met; nothing
here asserts them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sgx_quote_helper.benchmark.ceilings import cmac_rate, ecdsa_sign_rate, engine_quote_latencies
from sgx_quote_helper.benchmark.daemon import DaemonProcess
from sgx_quote_helper.benchmark.loadgen import Progress, run_load
from sgx_quote_helper.benchmark.machine import (
    describe_machine,
    load_average,
    system_busy_seconds,
    wait_until_quiet,
)
from sgx_quote_helper.benchmark.spec import LoadSpec
from sgx_quote_helper.benchmark.timing import rate
from sgx_quote_helper.benchmark.verifier import VerifierBench
from sgx_quote_helper.benchmark.workload import prepare_workload
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.verify.collateral import load_dcap_qvl_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
REAL = Path(os.environ.get("SGX_QUOTE_HELPER_SHARED", ROOT.parent / "shared")) / "testdata" / "real"
VECTOR = ("phala-sgx-v3-processor", "collateral-2025-06.dcap-qvl.json", 1750334400)
CLIENT_LEVELS = (1, 16, 64)
PROFILES: dict[str, dict[str, Any]] = {
    # seconds per measurement, repetitions, warm-up, quotes for the memory test, starts
    "full": {"ceiling_s": 3.0, "load_s": 5.0, "reps": 3, "warmup": 1.0, "verify_s": 2.0, "verify_series": 3,
             "memory_quotes": 1_000_000, "memory_warmup": 20_000, "memory_chunks": 10, "starts": 5, "quiet_wait": 20},
    "quick": {"ceiling_s": 1.0, "load_s": 2.0, "reps": 1, "warmup": 0.5, "verify_s": 1.0, "verify_series": 1,
              "memory_quotes": 50_000, "memory_warmup": 5_000, "memory_chunks": 10, "starts": 3, "quiet_wait": 10},
    "dry-run": {"ceiling_s": 0.1, "load_s": 0.3, "reps": 1, "warmup": 0.1, "verify_s": 0.1, "verify_series": 1,
                "memory_quotes": 1_000, "memory_warmup": 200, "memory_chunks": 2, "starts": 1, "quiet_wait": 0},
}  # fmt: skip


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Suite:
    def __init__(self, profile: str, pin: bool, work: Path) -> None:
        self.profile = profile
        self.p = PROFILES[profile]
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.pin = pin and len(cpus) >= 2
        self.daemon_cpus = frozenset(cpus[:1]) if self.pin else None
        self.load_cpus = frozenset(cpus[1:]) if self.pin else None
        self.work = work
        self.state = work / "plat"
        Platform.init(self.state)

    def daemon(self, name: str, use_uvloop: bool = True) -> DaemonProcess:
        return DaemonProcess(self.work / f"{name}.sock", self.state, use_uvloop=use_uvloop,
                             cpu_affinity=self.daemon_cpus)  # fmt: skip

    # -- 1. ceilings ---------------------------------------------------------------------------

    def ceilings(self) -> dict[str, Any]:
        seconds = self.p["ceiling_s"]
        mask = os.sched_getaffinity(0) if self.pin else None
        if self.daemon_cpus:
            os.sched_setaffinity(0, self.daemon_cpus)  # the daemon's core, one thread
        try:
            gate = self.quiet()
            say("ceilings: ECDSA P-256 sign, AES-CMAC, in-process engine quote")
            sign = ecdsa_sign_rate(seconds)
            mac = cmac_rate(seconds)
            engine = engine_quote_latencies(Platform.open(self.state), seconds)
        finally:
            if mask:
                os.sched_setaffinity(0, mask)
        lat = engine.summary()
        return {
            "ecdsa_p256_sign_per_s": round(sign, 1),
            "aes_cmac_384B_per_s": round(mac, 1),
            "engine_quotes_per_s": round(1e6 / lat.mean_us, 1),
            "engine_latency_us": lat.to_dict(),
            "pinned_cpus": sorted(self.daemon_cpus or []),
        } | gate

    # -- 2, 3, 5. the daemon -------------------------------------------------------------------

    def quiet(self) -> dict[str, Any]:
        """Wait (bounded) for the other workloads on the machine to calm down; say how it went."""
        if self.p["quiet_wait"] <= 0:
            return {}
        quiet, waited, busy = wait_until_quiet(0.3, self.p["quiet_wait"])
        if not quiet:
            say(
                f"  machine still busy ({busy:.2f} cores used by others) after {waited:.0f} s: measuring anyway"
            )
        return {"quiet_before": quiet, "busy_cores_before": round(busy, 2), "waited_s": round(waited, 1)}

    def load(self, d: DaemonProcess, clients: int, style: str = "aesmd", **kw: Any) -> dict[str, Any]:
        """One load run against ``d``, with the CPU the rest of the machine used meanwhile."""
        workload = prepare_workload(d.socket_path, "quote", state_dir=self.state)
        gate = self.quiet() if kw.pop("gate", True) else {}
        spec = LoadSpec(str(d.socket_path), workload, clients=clients, duration=kw.pop("duration", self.p["load_s"]),
                        warmup=kw.pop("warmup", self.p["warmup"]), style=style,  # type: ignore[arg-type]
                        cpu_affinity=self.load_cpus, **kw)  # fmt: skip
        marks: list[tuple[float, float, float, float]] = []

        def mark(p: Progress) -> None:
            if p.phase == "measure":
                marks.append(
                    (
                        time.monotonic(),
                        system_busy_seconds() or 0.0,
                        d.cpu_seconds() or 0.0,
                        time.process_time(),
                    )
                )

        result = run_load(spec, mark)
        out = result.to_dict() | gate
        if len(marks) >= 2:
            (t0, s0, d0, p0), (t1, s1, d1, p1) = marks[0], marks[-1]
            span = t1 - t0
            loadgen = result.load_cpu_s / (spec.warmup + result.window_s) if result.window_s else 0.0
            out["daemon_cores"] = round((d1 - d0) / span, 2)
            out["other_cores"] = round(max(0.0, (s1 - s0 - (d1 - d0) - (p1 - p0)) / span - loadgen), 2)
        return out

    def service(self, use_uvloop: bool) -> dict[str, Any]:
        loop = "uvloop" if use_uvloop else "asyncio"
        out: dict[str, Any] = {"event_loop": loop, "levels": []}
        with self.daemon(f"svc-{loop}", use_uvloop) as d:
            prepare_workload(d.socket_path, "quote", state_dir=self.state)
            out["rss_idle_kib"] = d.rss_kib()
            for clients in CLIENT_LEVELS:
                runs = []
                peak = [0]
                for rep in range(self.p["reps"]):
                    say(f"daemon ({loop}) aesmd style, {clients} clients, run {rep + 1}/{self.p['reps']}")
                    cpu0 = d.cpu_seconds() or 0.0
                    with RssSampler(d, peak):
                        r = self.load(d, clients)
                    r["daemon_cpu_us_per_quote"] = round(((d.cpu_seconds() or 0.0) - cpu0) * 1e6 / max(1, r["ok"])
                                                         * self.p["load_s"] / (self.p["load_s"] + self.p["warmup"]), 1)  # fmt: skip
                    r["loadavg"] = load_average()
                    runs.append(r)
                best = sorted(runs, key=lambda r: r["quotes_per_s"])[len(runs) // 2]  # the median run
                out["levels"].append({
                    "clients": clients,
                    "quotes_per_s": best["quotes_per_s"],
                    "quotes_per_s_runs": [r["quotes_per_s"] for r in runs],
                    "latency_us": best["latency_us"],
                    "errors": sum(r["error_count"] for r in runs),
                    "daemon_cpu_us_per_quote": best["daemon_cpu_us_per_quote"],
                    "rss_peak_kib": peak[0],
                    "daemon_cores": best.get("daemon_cores"),
                    "load_generator_cpu_us_per_request": best["load_generator_cpu_us_per_request"],
                    "other_cores_runs": [r.get("other_cores") for r in runs],
                    "runs": runs,
                })  # fmt: skip
            if use_uvloop:
                say("one client, keep-alive (no connection set-up per quote)")
                out["one_client_keepalive"] = self.load(d, 1, "keepalive")
            out["rss_after_kib"] = d.rss_kib()
        return out

    def memory(self) -> dict[str, Any]:
        total, warm = self.p["memory_quotes"], self.p["memory_warmup"]
        chunks = self.p["memory_chunks"]
        with self.daemon("mem") as d:
            say(f"memory: {warm:,} warm-up quotes, then {total:,} quotes in {chunks} chunks (16 clients)")
            self.load(d, 16, total_requests=warm, warmup=0.0, duration=0.0, gate=False)
            series = [{"quotes": 0, "rss_kib": d.rss_kib() or 0}]
            done = 0
            t0 = time.perf_counter()
            for _ in range(chunks):
                n = total // chunks
                r = self.load(d, 16, total_requests=n, warmup=0.0, duration=0.0, gate=False)
                done += r["ok"]
                series.append({"quotes": done, "rss_kib": d.rss_kib() or 0, "errors": r["error_count"]})
                say(f"  {done:,} quotes, RSS {series[-1]['rss_kib']:,} KiB")
            elapsed = time.perf_counter() - t0
            return {
                "quotes": done,
                "seconds": round(elapsed, 1),
                "series": series,
                "rss_start_kib": series[0]["rss_kib"],
                "rss_end_kib": series[-1]["rss_kib"],
                "growth_kib": series[-1]["rss_kib"] - series[0]["rss_kib"],
                "growth_after_first_chunk_kib": series[-1]["rss_kib"] - series[1]["rss_kib"],
                "peak_kib": d.peak_rss_kib(),
                "full_million": total >= 1_000_000,
            }

    def startup(self) -> dict[str, Any]:
        times = []
        gate = self.quiet()
        for i in range(self.p["starts"]):
            d = self.daemon(f"start{i}")
            try:
                times.append(d.start())
            finally:
                d.stop()
        say(f"start-up to a served socket: {', '.join(f'{t * 1e3:.0f} ms' for t in times)}")
        return {
            "seconds": [round(t, 3) for t in times],
            "median_s": round(statistics.median(times), 3),
        } | gate

    # -- 4. the verifier -------------------------------------------------------------------------

    def verifier(self) -> dict[str, Any]:
        name, coll, now = VECTOR
        folder = REAL / name
        if not folder.is_dir():
            return {"skipped": f"real vector not found at {folder}"}
        quote = (folder / "quote.bin").read_bytes()
        text = (folder / coll).read_text()
        bench = VerifierBench(quote, load_dcap_qvl_json(text), now)
        fns: dict[str, Any] = {"cold": bench.cold, "warm": bench.warm}
        version = None
        try:
            import dcap_qvl

            theirs = dcap_qvl.QuoteCollateralV3.from_json(text)
            fns["dcap_qvl"] = lambda: dcap_qvl.verify(quote, theirs, now)
            version = getattr(dcap_qvl, "__version__", None)
        except ImportError:
            pass
        series: dict[str, list[float]] = {k: [] for k in fns}
        for i in range(self.p["verify_series"]):
            self.quiet()
            say(f"verifier series {i + 1}/{self.p['verify_series']}: cold, warm, dcap-qvl (interleaved)")
            for k, fn in fns.items():
                series[k].append(rate(fn, self.p["verify_s"])[0])
        med = {k: statistics.median(v) for k, v in series.items()}
        out: dict[str, Any] = {
            "vector": name, "status": bench.verdict.status.value,
            "cold_per_s": round(med["cold"], 1), "warm_per_s": round(med["warm"], 1),
            "dcap_qvl_per_s": round(med["dcap_qvl"], 1) if "dcap_qvl" in med else None,
            "dcap_qvl_version": version, "series": {k: [round(x, 1) for x in v] for k, v in series.items()},
        }  # fmt: skip
        if "dcap_qvl" in med:
            out["cold_vs_dcap_qvl"] = round(med["cold"] / med["dcap_qvl"], 3)
            out["warm_vs_dcap_qvl"] = round(med["warm"] / med["dcap_qvl"], 3)
        return out


class RssSampler:
    """Samples a daemon's VmRSS every 0.1 s while a load runs; keeps the maximum in ``peak[0]``."""

    def __init__(self, daemon: DaemonProcess, peak: list[int]) -> None:
        self.daemon, self.peak = daemon, peak
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            self.peak[0] = max(self.peak[0], self.daemon.rss_kib() or 0)

    def __enter__(self) -> RssSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def targets(doc: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets for this 2-core machine, tracked (met / not met), never asserted."""
    engine = doc["ceilings"]["engine_quotes_per_s"]
    uv = {lv["clients"]: lv for lv in doc["service"]["uvloop"]["levels"]}
    oop = doc["one_client"]
    ver = doc["verifier"]
    mem = doc["memory"]
    rss_load = max(lv["rss_peak_kib"] for lv in uv.values())

    def t(value: float | None, goal: str, met: bool | None) -> dict[str, Any]:
        return {"value": value, "target": goal, "met": met}

    out = {
        "daemon_64_vs_engine": t(round(uv[64]["quotes_per_s"] / engine, 3), ">= 0.5", uv[64]["quotes_per_s"] / engine >= 0.5),
        "one_client_overhead_ms": t(oop["overhead_ms"], "<= 0.2", oop["overhead_ms"] <= 0.2),
        "rss_under_load_mb": t(round(rss_load / 1024, 1), "<= 80", rss_load / 1024 <= 80),
        "rss_growth_over_quotes_mb": t(round(mem["growth_after_first_chunk_kib"] / 1024, 1),
                                       f"flat (<= 4) over {mem['quotes']:,} quotes",
                                       mem["growth_after_first_chunk_kib"] <= 4096),
        "startup_s": t(doc["startup"]["median_s"], "<= 1", doc["startup"]["median_s"] <= 1),
    }  # fmt: skip
    if ver.get("dcap_qvl_per_s"):
        out["verifier_warm_vs_dcap_qvl"] = t(ver["warm_vs_dcap_qvl"], ">= 5", ver["warm_vs_dcap_qvl"] >= 5)
        out["verifier_cold_vs_dcap_qvl"] = t(ver["cold_vs_dcap_qvl"], ">= 1", ver["cold_vs_dcap_qvl"] >= 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="short runs, 50,000-quote memory test (~1 min)")
    mode.add_argument(
        "--dry-run", action="store_true", help="every stage for a fraction of a second (smoke test)"
    )
    ap.add_argument(
        "--no-pin", dest="pin", action="store_false", help="do not pin daemon / load generator to CPUs"
    )
    ap.add_argument("--no-chart", dest="chart", action="store_false", help="skip the PNG")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results directory [bench/results]")
    args = ap.parse_args()
    profile = "quick" if args.quick else "dry-run" if args.dry_run else "full"
    started = dt.datetime.now(dt.UTC)
    doc: dict[str, Any] = {"suite": "sgx-quote-helper benchmarks", "profile": profile,
                           "started": started.isoformat(timespec="seconds"), "machine": describe_machine()}  # fmt: skip
    doc["machine"]["load_average_before"] = doc["machine"].pop("load_average")
    work = Path(tempfile.mkdtemp(prefix="sqs", dir="/tmp"))
    try:
        suite = Suite(profile, args.pin, work)
        doc["pinned"] = {
            "daemon_cpus": sorted(suite.daemon_cpus or []),
            "load_cpus": sorted(suite.load_cpus or []),
        }
        doc["ceilings"] = suite.ceilings()
        doc["startup"] = suite.startup()
        doc["service"] = {"uvloop": suite.service(True), "asyncio": suite.service(False)}
        one = next(lv for lv in doc["service"]["uvloop"]["levels"] if lv["clients"] == 1)
        inproc = doc["ceilings"]["engine_latency_us"]["p50_us"]
        doc["one_client"] = {
            "in_process_p50_us": inproc,
            "out_of_process_p50_us": one["latency_us"]["p50_us"],
            "out_of_process_keepalive_p50_us": doc["service"]["uvloop"]["one_client_keepalive"]["latency_us"]["p50_us"],
            "overhead_ms": round((one["latency_us"]["p50_us"] - inproc) / 1e3, 3),
        }  # fmt: skip
        for loop in ("uvloop", "asyncio"):
            for lv in doc["service"][loop]["levels"]:
                lv["vs_engine"] = round(lv["quotes_per_s"] / doc["ceilings"]["engine_quotes_per_s"], 3)
        doc["verifier"] = suite.verifier()
        doc["memory"] = suite.memory()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    doc["machine"]["load_average_after"] = load_average()
    doc["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    doc["targets"] = targets(doc)
    from suite_report import markdown, write_chart

    stem = started.strftime("%Y-%m-%d") + ("" if profile == "full" else f"-{profile}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    table = markdown(doc, f"{stem}.png" if args.chart else None)
    (args.out / f"{stem}.md").write_text(table)
    if args.chart:
        write_chart(doc, args.out / f"{stem}.png")
    print(table)
    say(f"wrote {args.out / stem}.json/.md" + ("/.png" if args.chart else ""))


if __name__ == "__main__":
    main()
