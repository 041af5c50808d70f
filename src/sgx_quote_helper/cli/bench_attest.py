"""``sgx-quote-helper bench attest``: the attestation service's tokens/s and latency."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import SgxQuoteHelperError
from ._common import fail


@click.command("attest")
@click.option(
    "--clients",
    "client_counts",
    default="1,16",
    show_default=True,
    help="Concurrent clients per run (comma list).",
)
@click.option(
    "--seconds",
    type=click.FloatRange(0.5, 600),
    default=5.0,
    show_default=True,
    help="Measuring time per run.",
)
@click.option("--paths", default="warm,cold", show_default=True,
              help="warm: collateral fetched once and cached; cold: fetched from the PCCS for every request.")  # fmt: skip
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the JSON result here."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def attest_bench(client_counts: str, seconds: float, paths: str, out: Path | None, as_json: bool) -> None:
    """Tokens/s and latency of `attest serve` on loopback (plain HTTP, simulated SGX quotes with
    JSON runtime data, the default policy), at each client count, on the warm and cold paths.

    Starts a simulated platform, `pccs serve --simulated` and `attest serve` as child processes;
    the clients (aiohttp, one keep-alive connection each) run in this process. "per core" is
    tokens per CPU-second of the service process, which stays meaningful on a shared machine;
    the load average is recorded with the result. Before each run, RSA-2048 RS256 signing is
    timed in this process (signatures per CPU-second): a token's CPU in signatures, the figure
    least moved by other load, is reported next to it (1.0 would be the signature alone).

    \b
    Example:
      sgx-quote-helper bench attest --clients 1,16 --seconds 10 --out bench/results/attest.json
    """
    from ..benchmark.attest import rsa_sign_rate, run_load
    from ..benchmark.machine import describe_machine, load_average
    from ..testing.attest import AttestRig

    try:
        counts = [int(c) for c in client_counts.split(",") if c.strip()]
    except ValueError:
        fail(f"--clients takes a list like 1,16, got {client_counts!r}")
    kinds = [p.strip() for p in paths.split(",") if p.strip()]
    if not counts or any(c < 1 for c in counts) or any(k not in ("warm", "cold") for k in kinds):
        fail("--clients needs positive numbers; --paths takes warm and/or cold")
    runs: list[dict[str, Any]] = []
    load_before = load_average()
    for kind in kinds:
        rig = AttestRig(cold=kind == "cold")
        try:
            rig.__enter__()
        except SgxQuoteHelperError as exc:
            fail(f"cannot start the attestation rig: {exc}")
        with contextlib.closing(rig):
            url = f"{rig.url}/attest/SgxEnclave?api-version=2022-08-01"
            for n in counts:
                click.echo(f"{kind}, {n} client(s), {seconds:g} s...", err=True)
                signs = rsa_sign_rate()
                result = asyncio.run(run_load(url, rig.body, n, seconds, server_pid=rig.pid))
                result.rsa_signs_per_cpu_s = signs
                row = {"path": kind, **result.to_dict()}
                runs.append(row)
                lat = row["latency_us"]
                per_core = row["tokens_per_server_cpu_s"]
                cost = row["cpu_per_token_in_rsa_signs"]
                click.echo(
                    f"  {row['tokens_per_s']:,.0f} tokens/s, {per_core or 0:,.0f} per service CPU-second "
                    f"(RSA-2048 here: {signs:,.0f} signs per CPU-second; a token costs {cost or 0:.2f} signatures); "
                    f"latency p50 {lat['p50_us'] / 1e3:.2f} ms, p99 {lat['p99_us'] / 1e3:.2f} ms; errors {row['errors'] or 'none'}",
                    err=True,
                )  # fmt: skip
    report = {
        "benchmark": "attest",
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "machine": describe_machine(),
        "runs": runs,
    }
    text = json.dumps(report, indent=1)
    if out is not None:
        try:
            out.write_text(text + "\n")
        except OSError as exc:
            fail(f"cannot write {out}: {exc.strerror}")
    if as_json:
        sys.stdout.write(text + "\n")


__all__ = ["attest_bench"]
