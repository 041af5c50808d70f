"""Throughput and latency of the quote service, aesmd style (one connection per request).

The daemon (``sgx-quote-helper serve --engine simulated``) runs in its own process on a temporary
socket; this process is the load generator. Each request is what Intel's libsgx_quote_ex sends for
``sgx_get_quote_ex``: connect, one GetQuoteEx frame (432-byte app REPORT made for the QE, key id,
buf_size = GetQuoteSizeEx), read the reply, close. Every reply is checked (errorCode 0, quote of
buf_size bytes); BUSY answers and failures are counted, not hidden.

Usage::

    python bench/bench_quote_service.py                       # 1 and 64 clients, 3 runs of 4 s
    python bench/bench_quote_service.py --clients 1,16,64 --seconds 2 --runs 1 --pin
    python bench/bench_quote_service.py --no-uvloop           # daemon and load on asyncio's loop

Results go to bench/results/quote_service-<UTC time>.json and .md with the machine description
(nproc, CPU model, Python, uvloop, protobuf backend).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform as pyplatform
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sgx_quote_helper.client import QuoteClient
from sgx_quote_helper.server.run import protobuf_backend, uvloop_available
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.wire import messages as m
from sgx_quote_helper.wire.framing import encode_frame

RESULTS = Path(__file__).resolve().parent / "results"
CLI = [sys.executable, "-c", "import sys; from sgx_quote_helper.cli import main; sys.exit(main())"]
HDR = struct.Struct("<I")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    uv = None
    if uvloop_available():
        import uvloop

        uv = getattr(uvloop, "__version__", "?")
    import google.protobuf

    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "python": pyplatform.python_version(),
        "uvloop": uv,
        "protobuf": google.protobuf.__version__,
        "protobuf_backend": protobuf_backend(),
        "loadavg_at_start": os.getloadavg(),
    }


def start_daemon(root: Path, use_uvloop: bool, pin: bool) -> tuple[subprocess.Popen[bytes], Path, Path]:
    sock, state = root / "aesm.socket", root / "plat"
    cmd = [*CLI, "serve", "--socket", str(sock), "--state-dir", str(state), "-q"]
    if not use_uvloop:
        cmd.append("--no-uvloop")
    if pin and shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    proc = subprocess.Popen(cmd)
    QuoteClient(sock, retry_deadline=60, timeout=60).get_supported_att_key_id_num()
    return proc, sock, state


def quote_request(sock: Path, state: Path) -> tuple[bytes, int]:
    """The GetQuoteEx frame an app would send, and the expected reply body length."""
    platform = Platform.open(state)
    with QuoteClient(sock) as client:
        init = client.init_quote_ex()
        size = client.get_quote_size_ex()
        report = platform.ereport(init.target_info, b"bench".ljust(64, b"\0"), mr_enclave=b"\x42" * 32)
        ok = client.get_quote_ex(report, buf_size=size)
        assert len(ok.quote) == size
    key = client.key_id.to_bytes()
    frame = encode_frame(m.encode_request(m.GetQuoteExRequest(report.to_bytes(), key, None, size, 15000)))
    reply_len = len(m.encode_response(m.GetQuoteExResponse(0, bytes(size))))
    return frame, reply_len


async def _one(loop: asyncio.AbstractEventLoop, path: str, frame: bytes, reply_len: int) -> int:
    """One aesmd-style request. Returns 0 ok, 18 busy, other = error code / -1 transport/shape."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        await loop.sock_connect(s, path)
        await loop.sock_sendall(s, frame)
        buf = b""
        need = 4
        while len(buf) < need:
            chunk = await loop.sock_recv(s, 65536)
            if not chunk:
                return -1
            buf += chunk
            if need == 4 and len(buf) >= 4:
                need = 4 + HDR.unpack_from(buf)[0]
        body = buf[4:]
        # GetQuoteExResponse (field 17): 8a 01 <len> 08 <errorCode> ...
        if body[:2] != b"\x8a\x01":
            return -1
        i = 2
        while body[i] & 0x80:
            i += 1
        code = body[i + 2]
        if code == 0 and len(body) != reply_len:
            return -1
        return int(code)
    except OSError:
        return -1
    finally:
        s.close()


async def _load(
    path: str, frame: bytes, reply_len: int, clients: int, warmup: float, seconds: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    lat: list[int] = []
    counts = {"ok": 0, "busy": 0, "errors": 0}
    t_start = loop.time()
    t_measure = t_start + warmup
    t_end = t_measure + seconds

    async def worker() -> None:
        while True:
            t0 = time.perf_counter_ns()
            code = await _one(loop, path, frame, reply_len)
            t1 = time.perf_counter_ns()
            now = loop.time()
            if now >= t_end:
                return
            if now < t_measure:
                continue
            lat.append(t1 - t0)
            if code == 0:
                counts["ok"] += 1
            elif code == 18:
                counts["busy"] += 1
            else:
                counts["errors"] += 1

    await asyncio.gather(*(worker() for _ in range(clients)))
    lat.sort()
    n = len(lat)

    def pct(p: float) -> float:
        return lat[min(n - 1, int(p * n))] / 1000 if n else float("nan")

    return {
        "clients": clients,
        "seconds": seconds,
        "requests": n,
        "req_per_s": n / seconds,
        "quotes_per_s": counts["ok"] / seconds,
        **counts,
        "p50_us": pct(0.50),
        "p90_us": pct(0.90),
        "p99_us": pct(0.99),
        "max_us": lat[-1] / 1000 if n else float("nan"),
    }


def run_load(
    args: argparse.Namespace, path: str, frame: bytes, reply_len: int, clients: int
) -> dict[str, Any]:
    if args.uvloop and uvloop_available():
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_load(path, frame, reply_len, clients, args.warmup, args.seconds))
    finally:
        loop.close()


def cpu_times(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds all processes used so far (``/proc/stat``: everything but idle and iowait)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")


def wait_idle(limit_cores: float, max_wait: float) -> float:
    """Wait until the machine used less than ``limit_cores`` over one second (up to ``max_wait``
    seconds); returns the last measured load in cores."""
    deadline = time.monotonic() + max_wait
    while True:
        a0, t0 = machine_busy(), time.monotonic()
        time.sleep(1.0)
        load = (machine_busy() - a0) / (time.monotonic() - t0)
        if load < limit_cores or time.monotonic() >= deadline:
            return load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="1,64", help="comma-separated concurrency levels")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pin", action="store_true", help="daemon on core 0, load generator on core 1")
    ap.add_argument("--no-uvloop", dest="uvloop", action="store_false")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="S",
        help="before each run wait up to S seconds for the machine to be idle (< 0.3 cores busy)",
    )
    args = ap.parse_args()
    if args.pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    info = machine()
    results: list[dict[str, Any]] = []
    root = Path(tempfile.mkdtemp(prefix="sqb", dir="/tmp"))
    proc, sock, state = start_daemon(root, args.uvloop, args.pin)
    try:
        frame, reply_len = quote_request(sock, state)
        for clients in [int(c) for c in args.clients.split(",")]:
            for run in range(args.runs):
                idle = wait_idle(0.3, args.wait_idle) if args.wait_idle > 0 else None
                cpu0, me0, all0, t0 = (
                    cpu_times(proc.pid),
                    cpu_times(os.getpid()),
                    machine_busy(),
                    time.monotonic(),
                )
                r = run_load(args, str(sock), frame, reply_len, clients)
                cpu1, me1, all1, t1 = (
                    cpu_times(proc.pid),
                    cpu_times(os.getpid()),
                    machine_busy(),
                    time.monotonic(),
                )
                total = args.warmup + args.seconds
                # CPU used by processes other than the daemon and this load generator (noise)
                r["other_cpu_cores"] = max(0.0, (all1 - all0) - (cpu1 - cpu0) - (me1 - me0)) / (t1 - t0)
                r["run"] = run + 1
                r["machine_load_before_cores"] = idle
                r["daemon_cpu_us_per_req"] = (
                    (cpu1 - cpu0) / max(1, r["requests"] * total / args.seconds) * 1e6
                )
                results.append(r)
                print(
                    f"clients={clients:3d} run={run + 1}: {r['quotes_per_s']:8.0f} quotes/s  "
                    f"p50={r['p50_us']:7.0f}us p99={r['p99_us']:7.0f}us  busy={r['busy']} errors={r['errors']}  "
                    f"daemon cpu={r['daemon_cpu_us_per_req']:.0f}us/req  other procs={r['other_cpu_cores']:.2f} cores",
                    flush=True,
                )
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(root, ignore_errors=True)
    summary = []
    for clients in sorted({r["clients"] for r in results}):
        rs = [r for r in results if r["clients"] == clients]
        summary.append(
            {
                "clients": clients,
                "quotes_per_s_median": statistics.median(r["quotes_per_s"] for r in rs),
                "quotes_per_s_min": min(r["quotes_per_s"] for r in rs),
                "p50_us_median": statistics.median(r["p50_us"] for r in rs),
                "p99_us_median": statistics.median(r["p99_us"] for r in rs),
                "busy": sum(r["busy"] for r in rs),
                "errors": sum(r["errors"] for r in rs),
                "other_cpu_cores_max": max(r["other_cpu_cores"] for r in rs),
            }
        )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "quote_service",
        "mode": "aesmd style: one connection per GetQuoteEx; daemon and load generator in separate processes",
        "when": stamp,
        "machine": info,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "summary": summary,
        "runs": results,
    }
    (args.out / f"quote_service-{stamp}.json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = [
        f"# quote service benchmark {stamp}",
        "",
        f"Machine: {info['nproc']} CPUs, {info['cpu_model']}; Python {info['python']}; "
        f"uvloop {info['uvloop']} (used: {args.uvloop}); protobuf {info['protobuf']} ({info['protobuf_backend']}); "
        f"load average at start {info['loadavg_at_start']}; pinned: {args.pin}.",
        "",
        f"aesmd style (new connection per GetQuoteEx, simulated engine), {args.runs} runs x {args.seconds:g} s.",
        "",
        "| clients | quotes/s (median) | quotes/s (min) | p50 µs | p99 µs | BUSY | errors | other processes (cores, max) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in summary:
        lines.append(
            f"| {s['clients']} | {s['quotes_per_s_median']:.0f} | {s['quotes_per_s_min']:.0f} | "
            f"{s['p50_us_median']:.0f} | {s['p99_us_median']:.0f} | {s['busy']} | {s['errors']} | "
            f"{s['other_cpu_cores_max']:.2f} |"
        )
    (args.out / f"quote_service-{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
