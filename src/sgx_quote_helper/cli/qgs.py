"""``sgx-quote-helper qgs serve``: the TDX Quote Generation Service (Intel's QGS protocol).

TD guests reach it through their VMM (QEMU's ``quote-generation-socket``, which wraps the guest's
TDREPORT in a GET_QUOTE_REQ) or directly over vsock (libtdx_attest). Bad input exits 2 with one
``error:`` line.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import SgxQuoteHelperError
from ._common import fail, resolve_state_dir, state_dir_option
from ._logs import setup_logging
from .serve import _group, _mode

if TYPE_CHECKING:
    from ..server.qgs import QgsServer

_TYPES = {"get-quote": 0, "get-collateral": 2, "get-platform-info": 4}


@click.group(no_args_is_help=True)
def qgs() -> None:
    """The TDX Quote Generation Service: TD guests' quotes, Intel QGS protocol v1.1."""


@qgs.command("serve")
@click.option(
    "--engine",
    type=click.Choice(["auto", "tdx", "simulated"]),
    default="simulated",
    show_default=True,
    help="simulated: the TDX side of the simulated platform in --state-dir (its TDQE quotes TDREPORTs "
    "of that platform's simulated TDX module; SIMULATED Intel root). tdx: Intel's TDX quote library "
    "(libsgx_tdx_logic.so.1, the TDQE on this TDX host), one library context per --workers thread, "
    "quoting in parallel. auto: tdx when /dev/sgx_enclave, /dev/sgx_provision and the library are "
    "present, otherwise exit 2 naming what is missing (never falls back to simulated).",
)
@click.option(
    "--tdx-library",
    default=None,
    metavar="PATH",
    help="With --engine tdx/auto: Intel's TDX quote library [default: libsgx_tdx_logic.so.1 from the "
    "loader path].",
)
@click.option(
    "--qpl-path",
    default=None,
    metavar="PATH",
    help="With --engine tdx/auto: the quote provider library (tee_att_set_path) [default: "
    "libdcap_quoteprov.so.1 from the loader path].",
)
@click.option(
    "--tdqe-path",
    default=None,
    metavar="PATH",
    help="With --engine tdx/auto: the TDQE enclave file [default: libsgx_tdqe.signed.so.1 next to "
    "the library].",
)
@click.option(
    "--device-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/dev"),
    show_default=True,
    help="With --engine tdx/auto: where sgx_enclave and sgx_provision are (a container may mount "
    "them elsewhere).",
)
@state_dir_option
@click.option(
    "--socket",
    "socket_path",
    default="/var/run/tdx-qgs/qgs.socket",
    show_default=True,
    metavar="PATH",
    help="Unix socket to serve ('none' = no Unix socket, with --vsock-port).",
)
@click.option("--socket-mode", default="0660", show_default=True, help="Mode of the socket file (octal).")
@click.option("--socket-group", metavar="NAME|GID", help="Group of the socket file (the group QEMU runs in).")
@click.option(
    "--vsock-port", type=click.IntRange(1, 0xFFFFFFFE), help="Also listen on vsock VMADDR_CID_ANY:PORT."
)
@click.option(
    "--allow",
    "allow",
    multiple=True,
    type=click.Choice(sorted(_TYPES)),
    help="Only these request types (repeat; default all). A socket for a VMM: --allow get-quote.",
)
@click.option(
    "--no-raw", is_flag=True, help="Refuse raw mode (a bare 1024-byte TDREPORT with no QGS header)."
)
@click.option("--workers", type=click.IntRange(1, 256), default=4, show_default=True, help="Quoting threads.")
@click.option(
    "--max-in-flight",
    type=click.IntRange(1),
    default=64,
    show_default=True,
    help="Requests past this get 0x12001 at once.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1),
    default=30.0,
    show_default=True,
    help="Seconds a connection may take.",
)
@click.option("--allow-uid", "allow_uids", type=int, multiple=True, help="Only these peer uids (repeat).")
@click.option(
    "--allow-gid", "allow_gids", multiple=True, metavar="NAME|GID", help="Only these peer groups (repeat)."
)
@click.option("--replace", is_flag=True, help="Take over a path another live server answers on.")
@click.option("-v", "--verbose", count=True, help="-v info, -vv debug.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
def serve(
    engine: str,
    tdx_library: str | None,
    qpl_path: str | None,
    tdqe_path: str | None,
    device_root: Path,
    state_dir: Path | None,
    socket_path: str,
    socket_mode: str,
    socket_group: str | None,
    vsock_port: int | None,
    allow: tuple[str, ...],
    no_raw: bool,
    workers: int,
    max_in_flight: int,
    timeout: float,
    allow_uids: tuple[int, ...],
    allow_gids: tuple[str, ...],
    replace: bool,
    verbose: int,
    log_format: str,
) -> None:
    """Serve TD quotes over Intel's QGS protocol (GET_QUOTE, GET_COLLATERAL, GET_PLATFORM_INFO, raw mode).

    One request per connection, answered in one write, then closed, as Intel's qgsd. Point QEMU at
    the socket with `-object '{"qom-type":"tdx-guest","id":"tdx","quote-generation-socket":
    {"type":"unix","path":"/var/run/tdx-qgs/qgs.socket"}}'` (QEMU must be in --socket-group).

    Engines: `simulated` (the default) quotes with the simulated platform in --state-dir; `tdx`
    loads Intel's TDX quote library on a TDX host and starts one library context (TDQE key) per
    worker, so --workers quotes run at once; `auto` is `tdx`, or a refusal naming what is missing.
    A TDX host needs libsgx-tdx-logic, libsgx-ae-tdqe, libsgx-ae-pce, libsgx-ae-id-enclave, a
    quote provider library (libsgx-dcap-default-qpl) and the SGX devices.

    \b
    Examples:
      sgx-quote-helper sim init --state-dir /tmp/plat
      sgx-quote-helper qgs serve --state-dir /tmp/plat --socket /tmp/qgs.socket
      sgx-quote-helper qgs serve --engine tdx --workers 8 --socket-group qgsd
      sgx-quote-helper qgs serve --engine auto --qpl-path /usr/lib/x86_64-linux-gnu/libdcap_quoteprov.so.1
      sgx-quote-helper qgs serve --socket-group qgsd --allow get-quote --no-raw
      sgx-quote-helper qgs serve --socket none --vsock-port 4050
    """
    from ..engine.select import TdxOptions, select_qgs_engine
    from ..qgs_service import QgsService
    from ..server.qgs import QgsConfig, QgsListener, QgsServer

    setup_logging(logging.WARNING - 10 * min(verbose, 2), log_format)
    try:
        path = None if socket_path == "none" else Path(socket_path)
        if path is None and vsock_port is None:
            raise click.BadParameter("--socket none needs --vsock-port")
        listener = QgsListener(
            path=path,
            vsock_port=vsock_port,
            mode=_mode(socket_mode),
            group=_group(socket_group),
            allowed=frozenset(_TYPES[a] for a in allow) if allow else frozenset(_TYPES.values()),
            allow_raw=not no_raw,
        )
        config = QgsConfig(
            listeners=(listener,),
            workers=workers,
            max_in_flight=max_in_flight,
            timeout=timeout,
            allow_uids=frozenset(allow_uids),
            allow_gids=frozenset(g for g in map(_group, allow_gids) if g is not None),
            replace=replace,
        )
    except click.BadParameter as exc:
        fail(exc.message)
    tdx = TdxOptions(device_root=device_root, qpl_path=qpl_path, tdqe_path=tdqe_path)
    if tdx_library is not None:
        tdx = TdxOptions(tdx_library, device_root, qpl_path, tdqe_path)
    try:
        quoting = select_qgs_engine(
            engine,
            state_dir=resolve_state_dir(state_dir) if engine == "simulated" else None,
            create_state=True,
            contexts=workers,
            tdx=tdx,
        )
    except SgxQuoteHelperError as exc:
        fail(str(exc))
    try:
        asyncio.run(_run(QgsServer(QgsService(quoting), config)))
    except SgxQuoteHelperError as exc:
        fail(str(exc))
    finally:
        quoting.close()


async def _run(server: QgsServer) -> None:
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    click.echo("QGS ready", err=True)
    await stop.wait()
    await server.stop()


__all__ = ["qgs"]
