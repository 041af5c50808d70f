"""``sgx-quote-helper bench``: benchmarks users can run on their own nodes.

``bench verify`` measures the verifier on one quote, cold and warm. (The benchmarks issue adds
more subcommands to this group.)
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from ..abi.quote import Quote
from ..errors import CollateralError, ParseError, VerificationError
from ..verify.chain import TrustedRoot
from ..verify.collateral import Collateral, load_dcap_qvl_json
from ..verify.policy import Policy
from ..verify.status import TcbStatus
from ..verify.verifier import Verifier
from ._common import fail
from .verify import parse_now


@click.group("bench")
def bench() -> None:
    """Benchmarks: measure the verifier (and, with the benchmark suite, the quote service)."""


def _rate(fn: Callable[[], object], seconds: float) -> tuple[float, int]:
    for _ in range(5):
        fn()
    n, start = 0, time.perf_counter()
    while True:
        for _ in range(10):
            fn()
        n += 10
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed, n


@bench.command("verify")
@click.option(
    "--quote",
    "quote_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The quote to verify (binary).",
)
@click.option(
    "--collateral",
    "collateral_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Its collateral (dcap-qvl QuoteCollateralV3 JSON).",
)
@click.option(
    "--now", "now_text", metavar="TIME", help="Verification time: Unix seconds or ISO-8601 [default: now]."
)
@click.option("--root-ca", type=click.Path(dir_okay=False, path_type=Path), help="Trust this root (DER/PEM).")
@click.option(
    "--seconds",
    type=click.FloatRange(0.05, 600),
    default=2.0,
    show_default=True,
    help="Measuring time for each of cold and warm.",
)
@click.option("--json", "as_json", is_flag=True, help="One single-line JSON object on stdout.")
def verify_bench(
    quote_file: Path, collateral_file: Path, now_text: str | None, root_ca: Path | None, seconds: float,
    as_json: bool,
) -> None:  # fmt: skip
    """Verifier throughput on one quote: cold (nothing cached, every check from scratch, the
    TCB Info and QE Identity parsed each time) and warm (same platform, caches primed).

    \b
    Example:
      sgx-quote-helper bench verify --quote quote.bin --collateral collateral.json \\
          --now 2025-06-19T12:00:00Z --seconds 3 --json
    """
    try:
        now = parse_now(now_text)
        quote = quote_file.read_bytes()
        Quote.from_bytes(quote)
        proto = load_dcap_qvl_json(collateral_file.read_bytes())
        root = TrustedRoot.load(root_ca.read_bytes()) if root_ca is not None else None
    except click.BadParameter as exc:
        fail(exc.format_message())
    except (OSError, ParseError, CollateralError) as exc:
        fail(str(exc))
    policy = Policy(allow_debug=True, allow_service_td=True, allowed_statuses=frozenset(TcbStatus))
    fields = {f.name: getattr(proto, f.name) for f in dataclasses.fields(Collateral)}
    warm_verifier = Verifier(root, policy=policy)
    try:
        verdict = warm_verifier.verify(quote, proto, now)
    except VerificationError as exc:
        fail(f"the quote does not verify (step {exc.step}: {exc.reason}); nothing to measure", 1)

    def cold() -> object:
        return Verifier(root, policy=policy, cache_size=0).verify(quote, Collateral(**fields), now)

    def warm() -> object:
        return warm_verifier.verify(quote, proto, now)

    click.echo(f"measuring cold for {seconds:g} s...", err=True)
    cold_rate, cold_n = _rate(cold, seconds)
    click.echo(f"  cold: {cold_rate:,.0f} verifications/s ({1e3 / cold_rate:.2f} ms each)", err=True)
    click.echo(f"measuring warm for {seconds:g} s...", err=True)
    warm_rate, warm_n = _rate(warm, seconds)
    click.echo(f"  warm: {warm_rate:,.0f} verifications/s ({1e6 / warm_rate:.0f} us each)", err=True)
    result = {
        "cold_per_s": round(cold_rate, 1),
        "warm_per_s": round(warm_rate, 1),
        "cold_ms": round(1e3 / cold_rate, 3),
        "warm_ms": round(1e3 / warm_rate, 3),
        "iterations": {"cold": cold_n, "warm": warm_n},
        "status": verdict.status.value,
        "tee": verdict.tee,
    }
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        click.echo(
            f"cold {result['cold_per_s']}/s, warm {result['warm_per_s']}/s (status {verdict.status.value})"
        )


__all__ = ["bench"]
