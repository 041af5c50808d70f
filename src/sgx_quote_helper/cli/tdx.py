"""``sgx-quote-helper tdx quote``: a TD guest gets its quote (configfs-tsm, a QGS over vsock, or a
QGS socket given with --qgs-socket). Bad input or no usable path exits 2 with one ``error:`` line;
a failed request exits 1."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import BadResponseError, ConfigError, ParseError, TransportError
from ._common import fail, parse_hex


@click.group(no_args_is_help=True)
def tdx() -> None:
    """Inside a TDX guest: get a TD quote the way Intel's libtdx_attest does."""


@tdx.command("quote")
@click.option("--report-data", metavar="HEX", help="Up to 64 bytes of REPORTDATA, hex (zero-padded).")
@click.option("--out", required=True, metavar="FILE", help="Where to write the quote ('-' = stdout).")
@click.option(
    "--qgs-socket",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Talk to a QGS on this Unix socket directly (hosts, tests) instead of configfs-tsm / vsock.",
)
@click.option(
    "--td-report",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Send this 1024-byte TDREPORT (e.g. from `sim td-report`) instead of asking /dev/tdx_guest "
    "(QGS paths only).",
)
@click.option(
    "--configfs",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/sys/kernel/config/tsm/report"),
    show_default=True,
    help="The configfs-tsm report directory.",
)
@click.option(
    "--attest-conf",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("/etc/tdx-attest.conf"),
    show_default=True,
    help="libtdx_attest's config: 'port = N' selects a QGS on vsock CID 2, port N.",
)
@click.option(
    "--timeout", type=click.FloatRange(0.1), default=30.0, show_default=True, help="Seconds for a QGS answer."
)
def quote(
    report_data: str | None,
    out: str,
    qgs_socket: Path | None,
    td_report: Path | None,
    configfs: Path,
    attest_conf: Path,
    timeout: float,
) -> None:
    """Get this TD's quote: configfs-tsm if present, else a QGS over vsock (/etc/tdx-attest.conf),
    else a clear error; --qgs-socket uses a QGS socket directly.

    \b
    Examples:
      sgx-quote-helper tdx quote --report-data "$(printf nonce | xxd -p)" --out quote.bin
      sgx-quote-helper tdx quote --qgs-socket /var/run/tdx-qgs/qgs.socket --td-report r.bin --out q.bin
    """
    from ..client.tdx_guest import get_td_quote

    try:
        data = parse_hex(report_data, "--report-data", max_len=64) or b""
    except click.BadParameter as exc:
        fail(exc.message)
    report = None
    if td_report is not None:
        try:
            report = td_report.read_bytes()
        except OSError as exc:
            fail(f"cannot read {td_report}: {exc.strerror}")
        if len(report) != 1024:
            fail(f"{td_report} is {len(report)} bytes, not a 1024-byte TDREPORT")
    try:
        result = get_td_quote(
            data,
            qgs_socket=qgs_socket,
            td_report=report,
            configfs_root=configfs,
            attest_conf=attest_conf,
            timeout=timeout,
        )
    except (ConfigError, ParseError) as exc:
        fail(str(exc))
    except (TransportError, BadResponseError) as exc:
        fail(str(exc), 1)
    if out == "-":
        sys.stdout.buffer.write(result.quote)
        sys.stdout.buffer.flush()
    else:
        try:
            Path(out).write_bytes(result.quote)
        except OSError as exc:
            fail(f"cannot write {out}: {exc.strerror}")
    click.echo(f"wrote a {len(result.quote)}-byte TD quote from {result.source} to {out}", err=out == "-")


__all__ = ["tdx"]
