"""``sgx-quote-helper bench``: benchmarks operators can run on their own nodes.

``bench quote`` loads a running quote service (ours or Intel's aesmd: it speaks only the AESM
protocol) from worker processes and reports answers/s, latency percentiles and errors by AESM code.
``bench verify`` measures the verifier on one quote, cold and warm. The measuring code lives in
:mod:`sgx_quote_helper.benchmark`; this module is options, messages and output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..abi.quote import Quote
from ..client import DEFAULT_SOCKET_PATH
from ..errors import (
    AesmError,
    BadResponseError,
    CollateralError,
    ConfigError,
    ParseError,
    PlatformStateError,
    SgxQuoteHelperError,
    TransportError,
    VerificationError,
)
from ..verify.chain import TrustedRoot
from ..verify.collateral import load_dcap_qvl_json
from ._common import default_state_dir, fail
from .verify import parse_now


@click.group("bench")
def bench() -> None:
    """Benchmarks: load a quote service (ours or Intel's aesmd) or a QGS, measure the verifier.

    \b
    Examples:
      sgx-quote-helper bench quote --clients 64 --duration 10
      sgx-quote-helper bench quote --request quote-dummy --clients 8     # a real SGX node, no enclave
      sgx-quote-helper bench verify --quote quote.bin --collateral collateral.json --json
      sgx-quote-helper bench qgs --socket /tmp/qgs.socket --state-dir /tmp/plat   # a TDX QGS
    """


def _cpu_list(value: str | None) -> frozenset[int] | None:
    if not value:
        return None
    cpus: set[int] = set()
    try:
        for part in value.split(","):
            lo, _, hi = part.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise click.BadParameter(f"--cpus takes a list like 1 or 2-3,6, got {value!r}") from None
    return frozenset(cpus)


@bench.command("quote")
@click.option(
    "--socket", "socket_path", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_SOCKET_PATH,
    show_default=True, help="The AESM socket to load (ours or Intel's aesmd).",
)  # fmt: skip
@click.option("--clients", type=click.IntRange(1, 4096), default=16, show_default=True,
              help="Concurrent clients (each waits for its answer before the next request).")  # fmt: skip
@click.option("--duration", type=click.FloatRange(0.1, 86400), default=10.0, show_default=True,
              help="Measured seconds (after the warm-up).")  # fmt: skip
@click.option("--warmup", type=click.FloatRange(0, 600), default=1.0, show_default=True,
              help="Seconds of load before measuring starts.")  # fmt: skip
@click.option(
    "--client", "--style", "style", type=click.Choice(["intel", "aesmd", "keepalive"]), default="aesmd",
    show_default=True,
    help="intel: Intel's libsgx_quote_ex socket code call for call (a new connection per call, the "
    "4-byte length and the body in two writes, the reply read length-first, epoll as Intel's does: "
    "what apps really send). aesmd: a new connection per request, each frame in one write. "
    "keepalive: one connection per client (our daemon only).",
)  # fmt: skip
@click.option(
    "--loadgen", type=click.Choice(["python", "native"]), default="python", show_default=True,
    help="Who makes the calls. python: worker processes (every style). native: with --client intel "
    "only, the same calls system call for system call from one C program (compiled on first use "
    "with `cc -O2`, cached in ~/.cache/sgx-quote-helper), at about half the Python client's "
    "CPU per call, so one load core stays ahead of one daemon core. Needs a C compiler (`cc`, or "
    "$CC): without one the command fails (exit 2), it never falls back.",
)  # fmt: skip
@click.option(
    "--sequence", type=click.Choice(["get-quote", "dcap-ql"]), default="get-quote", show_default=True,
    help="What one measured request is. get-quote: one GetQuoteEx (an app that holds the target info). "
    "dcap-ql: the four calls sgx_qe_get_target_info + sgx_qe_get_quote_size + sgx_qe_get_quote send "
    "through libsgx_dcap_ql per quote (InitQuoteEx x2, GetQuoteSizeEx, GetQuoteEx); with --request "
    "quote or quote-dummy.",
)  # fmt: skip
@click.option(
    "--request", "kind", type=click.Choice(["quote", "quote-dummy", "size", "key-ids"]), default="quote",
    show_default=True,
    help="quote: GetQuoteEx of a valid REPORT (needs --state-dir or --report). quote-dummy: GetQuoteEx "
    "of an all-zero REPORT, answered INVALID_REPORT (47) by a live QE without signing (no enclave "
    "needed). size: GetQuoteSizeEx. key-ids: GetSupportedAttKeyIDs (the service's request path, no QE).",
)  # fmt: skip
@click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="With --request quote: the simulated platform the daemon serves; REPORTs are made with its "
    "keys [default: $SGX_QUOTE_HELPER_STATE, else ~/.local/state/sgx-quote-helper/platform].",
)  # fmt: skip
@click.option(
    "--report", "report_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="With --request quote: a 432-byte REPORT a real enclave made for this node's QE target info.",
)  # fmt: skip
@click.option("--processes", type=click.IntRange(1, 256), default=None,
              help="Load-generator processes [default: half the CPUs, at most 8 and at most --clients].")  # fmt: skip
@click.option("--cpus", metavar="LIST", default=None,
              help="Pin the load-generator processes to these CPUs (e.g. 1 or 2-3), away from the daemon.")  # fmt: skip
@click.option("--no-uvloop", "no_uvloop", is_flag=True, help="Load generator on asyncio's default loop.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout (no live display).")
def quote_bench(
    socket_path: Path, clients: int, duration: float, warmup: float, style: str, sequence: str, kind: str,
    state_dir: Path | None, report_file: Path | None, processes: int | None, cpus: str | None,
    no_uvloop: bool, as_json: bool, loadgen: str,
) -> None:  # fmt: skip
    """Load a running quote service and report answers/s, p50/p90/p99 latency and errors by AESM code.

    Each client sends what Intel's libsgx_quote_ex sends (set-up first: InitQuoteEx, GetQuoteSizeEx),
    aesmd style by default; --client intel also writes and reads the way Intel's client code does
    (measure with it to size a node for real apps); the clients run as asyncio tasks in worker processes so the load
    generator is not the bottleneck (one core of the Python Intel-pattern client makes about 8,000
    calls/s: where one daemon core serves more, add --loadgen native, the same calls from a C
    program). Works against Intel's aesmd and against our daemon on a real SGX
    node (--engine dcap): there use --request quote-dummy (the QE's report check, no signature) or
    size, which need no enclave, or --report with a REPORT made by one of your enclaves, to size
    the node. Exit status 1 if any request failed (the JSON or table still says which).

    \b
    Examples:
      sgx-quote-helper serve --socket /tmp/aesm.sock --state-dir /tmp/plat &
      sgx-quote-helper bench quote --socket /tmp/aesm.sock --state-dir /tmp/plat --clients 64
      sgx-quote-helper bench quote --request quote-dummy --clients 4 --duration 30   # SGX node
      sgx-quote-helper bench quote --request key-ids --style keepalive --json
      sgx-quote-helper bench quote --client intel --clients 64 --cpus 1 --json   # as apps connect
      sgx-quote-helper bench quote --client intel --sequence dcap-ql             # 4 calls per quote
      sgx-quote-helper bench quote --client intel --loadgen native --clients 64 --cpus 1
    """
    from ..benchmark.loadgen import run_load
    from ..benchmark.machine import describe_machine
    from ..benchmark.progress import LiveProgress
    from ..benchmark.spec import LoadSpec
    from ..benchmark.workload import RequestKind, Sequence, prepare_workload

    if loadgen == "native":
        from ..benchmark.native import NativeUnavailable, compiler

        if style != "intel":
            fail("--loadgen native makes Intel-pattern calls only: use it with --client intel")
        if processes not in (None, 1):
            fail("--loadgen native runs all clients in one process: drop --processes")
        try:
            compiler()
        except NativeUnavailable as exc:
            fail(str(exc))
    request_kind: RequestKind = kind  # type: ignore[assignment]
    call_sequence: Sequence = sequence  # type: ignore[assignment]
    report = None
    if report_file is not None:
        try:
            report = report_file.read_bytes()
        except OSError as exc:
            fail(f"cannot read {report_file}: {exc.strerror}")
    if kind == "quote" and report is None and state_dir is None:
        state_dir = default_state_dir()
    try:
        affinity = _cpu_list(cpus)
        workload = prepare_workload(
            socket_path, request_kind, report=report, state_dir=state_dir, retry_deadline=1,
            sequence=call_sequence,
        )  # fmt: skip
    except click.BadParameter as exc:
        fail(exc.format_message())
    except TransportError as exc:
        fail(f"cannot reach a quote service on {socket_path}: {exc}")
    except PlatformStateError as exc:
        fail(f"{exc} (a full quote needs the daemon's platform; or use --request quote-dummy/size)")
    except AesmError as exc:
        hint = (
            " (the REPORT was not made for this service's QE: check --state-dir/--report)"
            if kind == "quote"
            else ""
        )
        fail(f"the service refused the set-up: {exc}{hint}", 1)
    except (BadResponseError, ConfigError, ParseError) as exc:
        fail(str(exc))
    spec = LoadSpec(
        str(socket_path), workload, clients=clients, duration=duration, warmup=warmup, style=style,  # type: ignore[arg-type]
        processes=processes, use_uvloop=not no_uvloop, cpu_affinity=affinity,
        loadgen="native" if loadgen == "native" else "python",
    )  # fmt: skip
    service = _who_serves(socket_path)
    unit = "quotes" if kind == "quote" else "answers"
    live = not as_json and sys.stderr.isatty()
    try:
        with LiveProgress(warmup + duration, unit, enabled=live) as progress:
            result = run_load(spec, progress.update)
    except RuntimeError as exc:
        fail(str(exc), 1)
    except SgxQuoteHelperError as exc:  # the native generator: no compiler, a failed build, a refused set-up
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    out: dict[str, Any] = result.to_dict()
    out["service"] = service
    out["machine"] = describe_machine()
    if as_json:
        sys.stdout.write(json.dumps(out) + "\n")
    else:
        _print_quote_result(out, unit)
    sys.exit(1 if out["error_count"] else 0)


def _who_serves(socket_path: Path) -> str:
    """What answers on the socket: our HelperProbe reply, or (Intel's aesmd closes) 'not sgx-quote-helper'."""
    from ..client import QuoteClient

    try:
        answer = QuoteClient(socket_path, timeout=2, retry_deadline=0).probe()
    except (TransportError, AesmError, BadResponseError):
        return "not sgx-quote-helper (no HelperProbe answer: e.g. Intel's aesmd)"
    return f"{answer.implementation or 'sgx-quote-helper'} {answer.version} (pid {answer.pid})".strip()


def _print_quote_result(out: dict[str, Any], unit: str) -> None:
    lat = out["latency_us"]
    click.echo(f"service: {out['service']}")
    click.echo(
        f"{out['request_description']}, {out['style']} style, {out['clients']} clients "
        f"({out['loadgen']} load generator: {out['processes']} load processes, {out['event_loop']}), "
        f"{out['window_s']:g} s measured"
    )
    click.echo(f"  load generator CPU: {out['load_generator_cpu_us_per_request']:,.1f} µs per request")
    if out["calls_per_request"] > 1:
        click.echo(f"  each request: the {out['sequence']} sequence, {out['calls_per_request']} calls")
    click.echo(f"  {out['ok_per_s']:,.0f} {unit}/s   ({out['ok']:,} ok of {out['requests']:,} requests)")
    click.echo(
        f"  latency µs: p50 {lat['p50_us']:,.0f}  p90 {lat['p90_us']:,.0f}  p99 {lat['p99_us']:,.0f}  "
        f"max {lat['max_us']:,.0f}"
    )
    if out["errors"]:
        click.echo("  errors: " + ", ".join(f"{k} x{v:,}" for k, v in out["errors"].items()))
        if "first_bad_response" in out:
            click.echo(f"  the first bad response was: {out['first_bad_response']}")
    else:
        click.echo("  errors: none")


@bench.command("verify")
@click.option(
    "--quote", "quote_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="The quote to verify (binary).",
)  # fmt: skip
@click.option(
    "--collateral", "collateral_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="Its collateral (dcap-qvl QuoteCollateralV3 JSON, e.g. from `sgx-quote-helper sim collateral`).",
)  # fmt: skip
@click.option(
    "--now", "now_text", metavar="TIME", help="Verification time: Unix seconds or ISO-8601 [default: now]."
)
@click.option("--root-ca", type=click.Path(dir_okay=False, path_type=Path),
              help="Trust this root (DER/PEM) [default: Intel's SGX root CA].")  # fmt: skip
@click.option(
    "--seconds", type=click.FloatRange(0.05, 600), default=2.0, show_default=True,
    help="Measuring time for each of cold and warm.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One single-line JSON object on stdout.")
def verify_bench(
    quote_file: Path, collateral_file: Path, now_text: str | None, root_ca: Path | None, seconds: float,
    as_json: bool,
) -> None:  # fmt: skip
    """Verifier throughput on one quote: cold (nothing cached, every check from scratch, the
    TCB Info and QE Identity parsed each time) and warm (same platform, caches primed).

    Any TCB status is accepted while measuring (the status is reported). One thread: on a node,
    multiply by the cores you give the verifier.

    \b
    Example:
      sgx-quote-helper bench verify --quote quote.bin --collateral collateral.json \\
          --now 2025-06-19T12:00:00Z --seconds 3 --json
    """
    from ..benchmark.verifier import VerifierBench, VerifierRates

    try:
        now = parse_now(now_text)
        quote = quote_file.read_bytes()
        Quote.from_bytes(quote)
        collateral = load_dcap_qvl_json(collateral_file.read_bytes())
        root = TrustedRoot.load(root_ca.read_bytes()) if root_ca is not None else None
    except click.BadParameter as exc:
        fail(exc.format_message())
    except (OSError, ParseError, CollateralError) as exc:
        fail(str(exc))
    try:
        measured = VerifierBench(quote, collateral, now, root)
    except VerificationError as exc:
        fail(f"the quote does not verify (step {exc.step}: {exc.reason}); nothing to measure", 1)
    click.echo(f"measuring cold for {seconds:g} s...", err=True)
    cold_rate, cold_n = measured.cold_rate(seconds)
    click.echo(f"  cold: {cold_rate:,.0f} verifications/s ({1e3 / cold_rate:.2f} ms each)", err=True)
    click.echo(f"measuring warm for {seconds:g} s...", err=True)
    warm_rate, warm_n = measured.warm_rate(seconds)
    click.echo(f"  warm: {warm_rate:,.0f} verifications/s ({1e6 / warm_rate:.0f} us each)", err=True)
    result = VerifierRates(cold_rate, warm_rate, cold_n, warm_n, measured.verdict).to_dict()
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        click.echo(
            f"cold {result['cold_per_s']}/s, warm {result['warm_per_s']}/s (status {result['status']})"
        )


def _register_attest() -> None:
    from .bench_attest import attest_bench
    from .bench_qgs import qgs_bench

    bench.add_command(attest_bench)
    bench.add_command(qgs_bench)


_register_attest()

__all__ = ["bench"]
