"""``sgx-quote-helper quote``: act as a (simulated) enclave app and get a quote from the service."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import AesmError, BadResponseError, SgxQuoteHelperError, TransportError
from ._common import fail, parse_hex, resolve_state_dir, socket_option, state_dir_option


@click.command("quote")
@socket_option()
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the quote here.",
)
@click.option(
    "--report-data", default=None, metavar="HEX", help="Up to 64 bytes the quote binds (zero padded)."
)
@click.option(
    "--mr-enclave", default=None, metavar="HEX", help="MRENCLAVE of the simulated app enclave (32 bytes)."
)
@state_dir_option
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=15.0, show_default=True)
def quote(
    socket_path: Path,
    out: Path,
    report_data: str | None,
    mr_enclave: str | None,
    state_dir: Path | None,
    timeout: float,
) -> None:
    """Get a quote from a running quote service the way an enclave app does.

    Steps (the out-of-process flow of libsgx_quote_ex): InitQuoteEx gives the quoting enclave's
    target info; the simulated platform in --state-dir makes the app's EREPORT for that target
    (only a report made for the QE verifies); GetQuoteSizeEx, then GetQuoteEx returns the quote.
    The platform must be the one the service uses (same --state-dir) for the report MAC to verify.

    \b
    Examples:
      sgx-quote-helper serve --socket /tmp/aesm/aesm.socket --state-dir /tmp/plat &
      sgx-quote-helper quote --socket /tmp/aesm/aesm.socket --state-dir /tmp/plat \\
          --report-data 00112233 --out quote.bin
      sgx-quote-helper inspect quote.bin
    """
    data = parse_hex(report_data, "--report-data", max_len=64) or b""
    mre = parse_hex(mr_enclave, "--mr-enclave", exact=32) or bytes(32)
    from ..client import QuoteClient
    from ..sim.platform import Platform

    try:
        platform = Platform.open(resolve_state_dir(state_dir), create=False)
        with QuoteClient(socket_path, timeout=timeout, reuse_connection=False) as client:
            init = client.init_quote_ex(want_pub_key_id=True)
            report = platform.ereport(init.target_info, data, mr_enclave=mre)
            size = client.get_quote_size_ex()
            result = client.get_quote_ex(report, buf_size=size)
    except AesmError as exc:
        fail(f"the service refused: {exc}", 1)
    except (TransportError, BadResponseError) as exc:
        fail(f"cannot get a quote from {socket_path}: {exc}", 1)
    except SgxQuoteHelperError as exc:
        fail(str(exc), 2)
    quote_bytes = result.trimmed()
    try:
        out.write_bytes(quote_bytes)
    except OSError as exc:
        fail(f"cannot write {out}: {exc}", 2)
    click.echo(f"wrote a {len(quote_bytes)}-byte quote to {out} (from {socket_path})")
