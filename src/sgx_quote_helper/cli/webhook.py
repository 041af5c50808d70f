"""``sgx-quote-helper webhook``: the mutating admission webhook for SGX pods (HTTPS)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from pathlib import Path

import click

from ..abi.aesm import DEFAULT_SOCKET_PATH
from ._common import fail


@click.command("webhook")
@click.option(
    "--tls-cert",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="PEM serving certificate (chain) for <service>.<namespace>.svc.",
)
@click.option(
    "--tls-key",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="PEM private key.",
)
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8443, show_default=True)
@click.option(
    "--opt-in-label",
    default="sgx-quote-helper.io/inject",
    show_default=True,
    help='Label or annotation a pod sets to "true" to opt in ("false" opts out).',
)
@click.option(
    "--epc-resource",
    multiple=True,
    default=("kubernetes.azure.com/sgx_epc_mem_in_MiB", "sgx.intel.com/epc"),
    show_default=True,
    help="Resources whose request means the container uses SGX (repeatable).",
)
@click.option(
    "--socket-dir",
    default=str(DEFAULT_SOCKET_PATH.parent),
    show_default=True,
    help="Host dir holding aesm.socket.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every injection.")
def webhook(
    tls_cert: Path,
    tls_key: Path,
    host: str,
    port: int,
    opt_in_label: str,
    epc_resource: tuple[str, ...],
    socket_dir: str,
    verbose: bool,
) -> None:
    """Mutating admission webhook: wire SGX pods to the node's quote service.

    For pods labelled (or annotated) OPT_IN_LABEL=true, or containers requesting an EPC resource,
    it adds the env SGX_AESM_ADDR=1 and the host's /var/run/aesmd as a hostPath volume and mount,
    never twice. It always allows the pod; install it with failurePolicy: Ignore (the Helm chart
    does) so it can never block unrelated pods. Serves POST /mutate and GET /healthz over HTTPS.

    \b
    Examples:
      sgx-quote-helper webhook --tls-cert /tls/tls.crt --tls-key /tls/tls.key
      sgx-quote-helper webhook --tls-cert c.pem --tls-key k.pem --port 9443 --epc-resource sgx.intel.com/epc
    """
    from aiohttp import web

    from ..k8s.webhook import InjectionPolicy, build_app, server_ssl_context

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        context = server_ssl_context(str(tls_cert), str(tls_key))
    except (ssl.SSLError, OSError) as exc:
        fail(f"cannot load the TLS certificate/key: {exc}")
    policy = InjectionPolicy(
        opt_in_key=opt_in_label, epc_resources=tuple(epc_resource), socket_dir=socket_dir.rstrip("/") or "/"
    )

    async def run() -> None:
        runner = web.AppRunner(build_app(policy), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=context)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            fail(f"cannot listen on {host}:{port}: {exc.strerror}", 1)
        click.echo(f"webhook: serving https://{host}:{port}/mutate", err=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(run())


__all__ = ["webhook"]
