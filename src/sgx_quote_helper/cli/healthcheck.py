"""``sgx-quote-helper healthcheck``: exit 0 only if the quote service answers (Kubernetes probes)."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import click

from ..errors import AesmError, BadResponseError, LocalProtocolError, TransportError
from ._common import socket_option


@click.command("healthcheck")
@socket_option()
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True, help="Seconds."
)
def healthcheck(socket_path: Path, timeout: float) -> None:
    """Ask the service GetSupportedAttKeyIDNum; exit 0 only on success with at least one key id.

    Prints one line either way; exit status 1 when unhealthy. No retries: a probe must answer now.

    \b
    Examples:
      sgx-quote-helper healthcheck
      sgx-quote-helper healthcheck --socket /tmp/aesm/aesm.socket --timeout 2
    Kubernetes:
      livenessProbe: {exec: {command: [sgx-quote-helper, healthcheck, --timeout, "3"]}}
    """
    from ..client import QuoteClient

    client = QuoteClient(socket_path, timeout=timeout, retry_deadline=0.0)
    try:
        num = client.get_supported_att_key_id_num()
    except AesmError as exc:
        _unhealthy(f"{socket_path} answered with an error: {exc}")
    except (TransportError, BadResponseError, LocalProtocolError) as exc:
        _unhealthy(f"{socket_path}: {exc}")
    if num < 1:
        _unhealthy(f"{socket_path} answers but offers no attestation key id")
    click.echo(f"ok: {socket_path} answers, {num} attestation key id(s)")


def _unhealthy(message: str) -> NoReturn:
    click.echo(f"unhealthy: {message}", err=True)
    raise SystemExit(1)
