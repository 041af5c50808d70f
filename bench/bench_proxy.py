"""What the upstream proxy costs: latency and throughput direct to a daemon vs through the proxy.

Two processes are started on temporary sockets: a daemon (``serve --engine simulated``) and a proxy
in front of it (``serve --engine proxy --upstream-socket ...``). This process sends requests the way
Intel's client does (one connection per request) to each socket and checks every reply (errorCode
0). Two request kinds: GetSupportedAttKeyIDNum (no engine work: pure transport cost) and GetQuoteEx
(a simulated quote: ECDSA signing upstream).

Usage::

    python bench/bench_proxy.py                      # 300 sequential requests, then 8 clients x 2 s
    python bench/bench_proxy.py --requests 1000 --clients 16 --seconds 3

Results go to bench/results/proxy-<UTC time>.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sgx_quote_helper.abi.keyid import AttKeyId
from sgx_quote_helper.client import QuoteClient
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.wire import messages as m
from sgx_quote_helper.wire.framing import encode_frame

RESULTS = Path(__file__).resolve().parent / "results"
CLI = [sys.executable, "-c", "import sys; from sgx_quote_helper.cli import main; sys.exit(main())"]
HDR = struct.Struct("<I")


def exchange(path: str, frame: bytes) -> bytes:
    """One connection, one request frame, one reply body."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(frame)
        data = b""
        while len(data) < 4 or len(data) < 4 + HDR.unpack(data[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError(f"{path} closed without a full reply")
            data += chunk
        return data[4:]


def check_ok(body: bytes) -> None:
    reply = m.decode_response(body)
    code = getattr(reply, "error_code", None)
    if code != 0:
        raise RuntimeError(f"reply {reply!r} is not a success")


def sequential(path: str, frame: bytes, n: int) -> dict[str, float]:
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        body = exchange(path, frame)
        lat.append(time.perf_counter() - t0)
        check_ok(body)
    lat.sort()
    return {
        "median_ms": statistics.median(lat) * 1e3,
        "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1e3,
    }


def concurrent(path: str, frame: bytes, clients: int, seconds: float) -> float:
    """Requests per second with ``clients`` threads hammering for ``seconds``."""
    stop = time.perf_counter() + seconds
    counts = [0] * clients

    def run(i: int) -> None:
        while time.perf_counter() < stop:
            check_ok(exchange(path, frame))
            counts[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def wait_for(sock: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{sock} did not appear")
        time.sleep(0.05)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    results: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "python": sys.version.split()[0],
        "requests": args.requests,
        "clients": args.clients,
    }
    with tempfile.TemporaryDirectory() as tmp:
        state, up, px = Path(tmp) / "platform", Path(tmp) / "up.sock", Path(tmp) / "px.sock"
        platform = Platform.open(state, create=True)
        daemon = subprocess.Popen(
            [*CLI, "serve", "--engine", "simulated", "--state-dir", str(state), "--socket", str(up), "-q"]
        )
        procs = [daemon]
        try:
            wait_for(up, daemon)
            proxy = subprocess.Popen(
                [*CLI, "serve", "--engine", "proxy", "--upstream-socket", str(up), "--socket", str(px), "-q"]
            )
            procs.append(proxy)
            wait_for(px, proxy)
            with QuoteClient(up) as client:
                target = client.init_quote_ex().target_info
                size = client.get_quote_size_ex()
            report = platform.ereport(target, b"bench").to_bytes()
            key = AttKeyId.ecdsa_p256_qe3().to_bytes()
            frames = {
                "GetSupportedAttKeyIDNum": encode_frame(
                    m.encode_request(m.GetSupportedAttKeyIDNumRequest(15000))
                ),
                "GetQuoteEx": encode_frame(
                    m.encode_request(m.GetQuoteExRequest(report, key, None, size, 15000))
                ),
            }
            for kind, frame in frames.items():
                for target_name, path in (("direct", up), ("proxy", px)):
                    row = sequential(str(path), frame, args.requests)
                    row["rps"] = concurrent(str(path), frame, args.clients, args.seconds)
                    results[f"{kind}/{target_name}"] = row
                    print(f"{kind:24} {target_name:6} {row}", flush=True)
        finally:
            for p in procs:
                p.terminate()
                p.wait(30)
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"proxy-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        f"# proxy overhead ({results['when']}, {results['nproc']} CPUs, Python {results['python']})",
        "",
        "| request | path | median ms | p99 ms | req/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for k, v in results.items():
        if "/" in k:
            kind, where = k.split("/")
            lines.append(
                f"| {kind} | {where} | {v['median_ms']:.3f} | {v['p99_ms']:.3f} | {v['rps']:.0f} "
                f"({args.clients} clients) |"
            )
    (RESULTS / f"proxy-{stamp}.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
