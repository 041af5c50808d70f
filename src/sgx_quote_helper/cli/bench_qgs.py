"""``sgx-quote-helper bench qgs``: a QGS's quotes/s and latency, framed GET_QUOTE and raw mode."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import AesmError, BadResponseError, ConfigError, PlatformStateError, TransportError
from ._common import default_state_dir, fail

DEFAULT_QGS_SOCKET = Path("/var/run/tdx-qgs/qgs.socket")


def _int_list(value: str, name: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        out = []
    if not out or any(not 1 <= n <= 4096 for n in out):
        raise click.BadParameter(f"{name} takes a list like 1,64 (each 1-4096), got {value!r}")
    return out


def _modes(value: str) -> list[str]:
    from ..benchmark.qgs import QGS_MODES

    out = [v.strip() for v in value.split(",") if v.strip()]
    if not out or any(m not in QGS_MODES for m in out):
        raise click.BadParameter(f"--mode takes framed and/or raw (a list like framed,raw), got {value!r}")
    return out


@click.command("qgs")
@click.option(
    "--socket", "socket_path", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_QGS_SOCKET,
    show_default=True, help="The QGS Unix socket to load (ours, or Intel's qgsd on its Unix socket).",
)  # fmt: skip
@click.option("--clients", "client_counts", default="1,64", show_default=True,
              help="Concurrent clients per run (a list: one run per count, each client waits for its "
              "quote before the next request).")  # fmt: skip
@click.option("--mode", "modes", default="framed,raw", show_default=True,
              help="framed: GET_QUOTE_REQ v1.1 as QEMU and libtdx_attest send it; raw: the bare 1024-byte "
              "TDREPORT (raw mode). A list: one run per mode and client count.")  # fmt: skip
@click.option("--duration", type=click.FloatRange(0.1, 86400), default=5.0, show_default=True,
              help="Measured seconds per run (after the warm-up).")  # fmt: skip
@click.option("--warmup", type=click.FloatRange(0, 600), default=1.0, show_default=True,
              help="Seconds of load before measuring starts.")  # fmt: skip
@click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="The simulated platform the QGS serves; TDREPORTs are made by its simulated TDX module "
    "[default: $SGX_QUOTE_HELPER_STATE, else ~/.local/state/sgx-quote-helper/platform].",
)  # fmt: skip
@click.option(
    "--td-report", "td_report_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Quote this 1024-byte TDREPORT instead (from a TD on this host, or `sim td-report`).",
)  # fmt: skip
@click.option(
    "--aesm-socket", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Also load this AESM service (`serve` on the same simulated platform: GetQuoteEx of a valid "
    "REPORT, aesmd style) at the same client counts, for numbers side by side on the same machine.",
)  # fmt: skip
@click.option("--processes", type=click.IntRange(1, 256), default=None,
              help="Load-generator processes [default: half the CPUs, at most 8 and at most the clients].")  # fmt: skip
@click.option("--cpus", metavar="LIST", default=None,
              help="Pin the load-generator processes to these CPUs (e.g. 1 or 2-3), away from the QGS.")  # fmt: skip
@click.option("--no-uvloop", "no_uvloop", is_flag=True, help="Load generator on asyncio's default loop.")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the JSON result here."
)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON result on stdout.")
def qgs_bench(
    socket_path: Path, client_counts: str, modes: str, duration: float, warmup: float, state_dir: Path | None,
    td_report_file: Path | None, aesm_socket: Path | None, processes: int | None, cpus: str | None,
    no_uvloop: bool, out: Path | None, as_json: bool,
) -> None:  # fmt: skip
    """Load a running QGS and report quotes/s, p50/p90/p99 latency and errors, per mode and client count.

    Each client opens a new connection per request, as QEMU and libtdx_attest do, writes the request
    at once and reads the reply (framed: until the GET_QUOTE_RESP is complete; raw: until the QGS
    closes); the clients run in worker processes (bench quote's load generator). Every reply must be
    a quote of the size the first one had. The load average is recorded before and after every run,
    since quotes/s on a shared machine measure the share of a CPU the QGS got. Exit status 1 if any
    request failed.

    \b
    Examples:
      sgx-quote-helper sim init --state-dir /tmp/plat
      taskset -c 0 sgx-quote-helper qgs serve --state-dir /tmp/plat --socket /tmp/qgs.socket &
      sgx-quote-helper bench qgs --socket /tmp/qgs.socket --state-dir /tmp/plat --cpus 1 --json
      sgx-quote-helper bench qgs --socket /tmp/qgs.socket --state-dir /tmp/plat \\
          --aesm-socket /tmp/aesm.sock --clients 1,64 --out qgs.json   # next to `serve`
    """
    from ..benchmark.loadgen import run_load
    from ..benchmark.machine import describe_machine, load_average
    from ..benchmark.qgs import QgsMode, prepare_qgs_workload
    from ..benchmark.spec import LoadSpec
    from ..benchmark.workload import prepare_workload
    from .bench import _cpu_list

    try:
        counts = _int_list(client_counts, "--clients")
        mode_list = _modes(modes)
        affinity = _cpu_list(cpus)
    except click.BadParameter as exc:
        fail(exc.format_message())
    report = None
    if td_report_file is not None:
        try:
            report = td_report_file.read_bytes()
        except OSError as exc:
            fail(f"cannot read {td_report_file}: {exc.strerror}")
    elif state_dir is None:
        state_dir = default_state_dir()
    workloads: list[tuple[str, Path, Any]] = []
    try:
        for mode in mode_list:
            qmode: QgsMode = mode  # type: ignore[assignment]
            workloads.append(
                (
                    f"qgs {mode}",
                    socket_path,
                    prepare_qgs_workload(socket_path, qmode, td_report=report, state_dir=state_dir),
                )
            )
    except TransportError as exc:
        fail(f"cannot get a quote from the QGS on {socket_path}: {exc}")
    except BadResponseError as exc:
        fail(
            f"the QGS refused the TDREPORT: {exc} (was it made on this platform? check --state-dir/--td-report)",
            1,
        )
    except PlatformStateError as exc:
        fail(f"{exc} (the TDREPORTs come from the QGS's simulated platform; or give --td-report)")
    except ConfigError as exc:
        fail(str(exc))
    if aesm_socket is not None:
        if state_dir is None:
            fail("--aesm-socket needs --state-dir (the REPORTs are made with the simulated platform)")
        try:
            workloads.append(
                ("aesm quote", aesm_socket, prepare_workload(aesm_socket, "quote", state_dir=state_dir))
            )
        except (TransportError, BadResponseError, ConfigError, PlatformStateError) as exc:
            fail(f"cannot get a quote from the AESM service on {aesm_socket}: {exc}")
        except AesmError as exc:
            fail(f"the AESM service refused the set-up: {exc}", 1)
    result: dict[str, Any] = {
        "benchmark": "qgs",
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "socket": str(socket_path),
        "load_average_before": load_average(),
        "runs": [],
    }
    for n in counts:  # services inner: a change of the machine's load hits them alike
        for service, path, workload in workloads:
            style = "qgs" if service.startswith("qgs") else "aesmd"
            spec = LoadSpec(
                str(path), workload, clients=n, duration=duration, warmup=warmup, style=style,  # type: ignore[arg-type]
                processes=processes, use_uvloop=not no_uvloop, cpu_affinity=affinity,
            )  # fmt: skip
            click.echo(f"{service}, {n} client(s), {duration:g} s...", err=True)
            load = load_average()
            try:
                run = run_load(spec)
            except RuntimeError as exc:
                fail(str(exc), 1)
            except KeyboardInterrupt:
                fail("interrupted", 130)
            row = {"service": service, "mode": getattr(workload, "mode", "aesmd"), "load_average": load,
                   **run.to_dict()}  # fmt: skip
            result["runs"].append(row)
            lat = row["latency_us"]
            click.echo(
                f"  {row['ok_per_s']:,.0f} quotes/s; latency p50 {lat['p50_us'] / 1e3:.2f} ms, "
                f"p99 {lat['p99_us'] / 1e3:.2f} ms; errors {row['errors'] or 'none'} (load average {load})",
                err=True,
            )
    result["load_average_after"] = load_average()
    result["machine"] = describe_machine()
    result["error_count"] = sum(r["error_count"] for r in result["runs"])
    text = json.dumps(result, indent=1)
    if out is not None:
        try:
            out.write_text(text + "\n")
        except OSError as exc:
            fail(f"cannot write {out}: {exc.strerror}")
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        click.echo("service      clients  quotes/s   p50 ms   p99 ms  errors")
        for r in result["runs"]:
            lat = r["latency_us"]
            click.echo(
                f"{r['service']:<12} {r['clients']:>7} {r['ok_per_s']:>9,.0f} {lat['p50_us'] / 1e3:>8.2f} "
                f"{lat['p99_us'] / 1e3:>8.2f}  {r['error_count']}"
            )
    sys.exit(1 if result["error_count"] else 0)


__all__ = ["DEFAULT_QGS_SOCKET", "qgs_bench"]
