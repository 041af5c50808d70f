"""``sgx-quote-helper qgs serve|healthcheck``: the TDX Quote Generation Service (Intel's QGS protocol).

TD guests reach it through their VMM (QEMU's ``quote-generation-socket``, which wraps the guest's
TDREPORT in a GET_QUOTE_REQ) or directly over vsock (libtdx_attest). The service has the AESM
daemon's lifecycle and limits (server/lifecycle.py): takeover without a gap, ``--private-dir`` and
``--handover-window``, the impostor watch, the connection and per-peer limits, metrics, JSON logs.
``qgs healthcheck`` is its probe (``--ready``: this pod's instance serves the path; ``--quote``: a
quote through its own engine). Bad input exits 2 with one ``error:`` line.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .. import __version__
from ..errors import SgxQuoteHelperError
from ._common import fail, resolve_state_dir, state_dir_option
from ._logs import setup_logging
from ._options import (
    QGS_ENGINES_HELP,
    allow_options,
    connection_limit_options,
    device_root_option,
    handover_options,
    idle_timeout_option,
    log_format_option,
    metrics_options,
    parse_group,
    parse_mode,
    parse_rate,
    peer_limit_options,
    reply_buffer_option,
    tdx_engine_options,
)
from .healthcheck import check_ready, unhealthy

if TYPE_CHECKING:
    from ..engine.select import TdxOptions
    from ..qgs_service import TdxEngine
    from ..server.qgs import QgsServer
    from ..sim.tdx_module import TdxModule

_TYPES = {"get-quote": 0, "get-collateral": 2, "get-platform-info": 4}
DEFAULT_SOCKET = "/var/run/tdx-qgs/qgs.socket"
BUSY = "0x12001 (raw mode: a close)"


@click.group(no_args_is_help=True)
def qgs() -> None:
    """The TDX Quote Generation Service: TD guests' quotes, Intel QGS protocol v1.1."""


def _open_engine(
    engine: str, state_dir: Path | None, workers: int = 4, tdx: TdxOptions | None = None
) -> TdxEngine:
    """The TDX engine named on the command line (one library context per worker for ``tdx``)."""
    from ..engine.select import TdxOptions, select_qgs_engine

    return select_qgs_engine(
        engine,
        state_dir=resolve_state_dir(state_dir) if engine == "simulated" else None,
        create_state=True,
        contexts=workers,
        tdx=tdx or TdxOptions(),
    )


def tdx_options(
    library: str | None, device_root: Path, qpl_path: str | None, tdqe_path: str | None
) -> TdxOptions:
    """The TDX engine's options from the command line (``None`` library: Intel's default name)."""
    from ..engine.select import TdxOptions

    if library is None:
        return TdxOptions(device_root=device_root, qpl_path=qpl_path, tdqe_path=tdqe_path)
    return TdxOptions(library, device_root, qpl_path, tdqe_path)


@qgs.command("serve")
@click.option(
    "--engine",
    type=click.Choice(["auto", "tdx", "simulated"]),
    default="simulated",
    show_default=True,
    help=QGS_ENGINES_HELP.format(workers="--workers"),
)
@tdx_engine_options("--engine tdx/auto")
@click.option(
    "--qpl-path",
    default=None,
    metavar="PATH",
    help="With --engine tdx/auto: the quote provider library (tee_att_set_path) [default: "
    "libdcap_quoteprov.so.1 from the loader path].",
)
@device_root_option("--engine tdx/auto")
@state_dir_option
@click.option(
    "--socket",
    "socket_path",
    default=DEFAULT_SOCKET,
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
@click.option(
    "--max-in-flight",
    type=click.IntRange(1),
    default=64,
    show_default=True,
    help="Requests queued or running in the workers before new ones get 0x12001 at once (raw mode: closed).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1),
    default=30.0,
    show_default=True,
    help="Seconds a connection may take to send its request (Intel's 30 s).",
)
@idle_timeout_option("Seconds a client that does not read its reply keeps it (then it is aborted).")
@allow_options()
@peer_limit_options(BUSY, "Requests")
@connection_limit_options()
@reply_buffer_option(BUSY, "quote and collateral requests", "")
@metrics_options()
@handover_options("qgs healthcheck --ready/--quote --private-dir DIR")
@click.option(
    "--replace", is_flag=True, help="Take the socket even if another program (e.g. Intel's qgsd) serves it."
)
@click.option("-v", "--verbose", count=True, help="-v info, -vv debug (one line per request).")
@log_format_option()
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
    idle_timeout: float,
    allow_uids: tuple[int, ...],
    allow_gids: tuple[str, ...],
    rate_limit: str,
    rate_burst: int,
    max_in_flight_per_peer: int,
    limit_by: str,
    max_connections: int,
    max_connections_per_uid: int,
    max_reply_mib: float,
    metrics_port: int | None,
    metrics_host: str,
    private_dir: Path | None,
    handover_window: float,
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

    The socket path is taken over without a gap from a running older sgx-quote-helper QGS (updates),
    never from a newer one; a stale socket is replaced; a path another program serves (Intel's
    qgsd) is refused unless --replace. A server whose path a successor took over answers what it
    owes and stays up, drained, until stopped. If something that is not sgx-quote-helper replaces
    the socket, the server puts its own back and logs an ALERT naming that process. SIGTERM stops
    gracefully after up to --handover-window seconds of serving while no successor has the path.

    \b
    Examples:
      sgx-quote-helper sim init --state-dir /tmp/plat
      sgx-quote-helper qgs serve --state-dir /tmp/plat --socket /tmp/qgs.socket
      sgx-quote-helper qgs serve --engine tdx --workers 8 --socket-group qgsd
      sgx-quote-helper qgs serve --engine auto --qpl-path /usr/lib/x86_64-linux-gnu/libdcap_quoteprov.so.1
      sgx-quote-helper qgs serve --socket-group qgsd --allow get-quote --no-raw
      sgx-quote-helper qgs serve --socket none --vsock-port 4050
      sgx-quote-helper qgs serve --max-connections-per-uid 32 --metrics-port 9465 --log-format json
      sgx-quote-helper qgs serve --private-dir /run/sgx-quote-helper   # Kubernetes: an emptyDir
      sgx-quote-helper qgs healthcheck --socket /tmp/qgs.socket
      sgx-quote-helper serve --engine dcap --qgs-socket /var/run/tdx-qgs/qgs.socket   # AESM and QGS, one process
    """
    from ..qgs_service import QgsService
    from ..server.instance import load_instance
    from ..server.qgs import QgsConfig, QgsListener, QgsServer
    from ..server.run import run_path_server

    setup_logging(logging.WARNING - 10 * min(verbose, 2), log_format)
    try:
        path = None if socket_path == "none" else Path(socket_path)
        if path is None and vsock_port is None:
            raise click.BadParameter("--socket none needs --vsock-port")
        listener = QgsListener(
            path=path,
            vsock_port=vsock_port,
            mode=parse_mode(socket_mode),
            group=parse_group(socket_group),
            allowed=frozenset(_TYPES[a] for a in allow) if allow else frozenset(_TYPES.values()),
            allow_raw=not no_raw,
        )
        config = QgsConfig(
            listeners=(listener,),
            workers=workers,
            max_in_flight=max_in_flight,
            timeout=timeout,
            idle_timeout=idle_timeout,
            allow_uids=frozenset(allow_uids),
            allow_gids=frozenset(g for g in map(parse_group, allow_gids) if g is not None),
            rate_limit=parse_rate(rate_limit),
            rate_burst=rate_burst,
            max_in_flight_per_peer=max_in_flight_per_peer,
            limit_by_pid=limit_by == "pid",
            max_connections=max_connections,
            max_connections_per_uid=max_connections_per_uid,
            max_reply_bytes=int(max_reply_mib * (1 << 20)),
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            private_dir=private_dir,
            handover_window=handover_window,
            replace=replace,
        )
    except click.BadParameter as exc:
        fail(exc.message)
    except SgxQuoteHelperError as exc:
        fail(str(exc))
    try:
        instance = load_instance(private_dir)
        quoting = _open_engine(
            engine, state_dir, workers, tdx_options(tdx_library, device_root, qpl_path, tdqe_path)
        )
    except SgxQuoteHelperError as exc:
        fail(str(exc))
    try:
        service = QgsService(
            quoting,
            version=__version__,
            instance_id=instance.instance_id,
            pid=os.getpid(),
            started_ns=instance.started_ns,
        )
        reason = run_path_server(QgsServer(service, config), _ready)
    except SgxQuoteHelperError as exc:
        fail(str(exc))
    finally:
        quoting.close()
    logging.getLogger(__name__).info("exiting: %s", reason)


def _ready(server: QgsServer) -> None:
    if server.state == "standby":
        click.echo("QGS standing by (a newer instance serves the path)", err=True)
    else:
        click.echo("QGS ready", err=True)


@qgs.command("healthcheck")
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_SOCKET,
    show_default=True,
    help="The QGS socket.",
)
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True, help="Seconds."
)
@click.option(
    "--private-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The server's private directory (qgs serve --private-dir): reach this very server there.",
)
@click.option(
    "--ready",
    is_flag=True,
    help="Readiness: pass only when the --socket path is served by the server of --private-dir.",
)
@click.option("--quote", is_flag=True, help="Liveness/startup: a quote through the server's own engine.")
@state_dir_option
def healthcheck(
    socket_path: Path,
    timeout: float,
    private_dir: Path | None,
    ready: bool,
    quote: bool,
    state_dir: Path | None,
) -> None:
    """Check the QGS service; exit 0 when healthy, 1 (with one line saying why) when not.

    Without --ready/--quote: GET_PLATFORM_INFO must succeed on --socket. --ready: the socket path is
    served by the server whose private socket (qgs.socket) is in --private-dir and that server says
    it is serving (Kubernetes readiness: this pod, not the one it replaces; before the takeover it
    fails with "the path ... is still served by instance X"). --quote: a GET_QUOTE through that
    server's engine (its private socket with --private-dir, else --socket): with the simulated
    engine a real TDREPORT of the platform in --state-dir, whose quote must carry it and verify;
    otherwise an all-zero TDREPORT the engine must refuse (0x12001), which a wedged TDQE or quote
    library never answers. No retries: a probe must answer now.

    \b
    Examples:
      sgx-quote-helper qgs healthcheck --socket /tmp/qgs.socket
      sgx-quote-helper qgs healthcheck --socket /var/run/tdx-qgs/qgs.socket --ready --private-dir /run/sgx-quote-helper
      sgx-quote-helper qgs healthcheck --quote --private-dir /run/sgx-quote-helper
    """
    if ready and quote:
        raise click.BadParameter("give --ready or --quote, not both (one per probe)")
    if ready and private_dir is None:
        raise click.BadParameter("--ready needs --private-dir (where this pod's server is reached)")
    click.echo(check_qgs(socket_path, private_dir, state_dir, timeout, ready=ready, quote=quote))


def check_qgs(
    socket_path: Path,
    private_dir: Path | None,
    state_dir: Path | None,
    timeout: float,
    *,
    ready: bool = False,
    quote: bool = False,
) -> str:
    """One ``qgs healthcheck`` (``--ready``, ``--quote`` or neither): its ``ok``/``ready`` line, or
    the unhealthy exit. Also ``healthcheck --qgs-socket`` (a ``serve --qgs-socket`` daemon)."""
    if ready:
        from ..server.instance import QGS_PRIVATE_SOCKET, private_socket
        from ..server.socketpath import probe_qgs_path

        assert private_dir is not None
        own = private_socket(private_dir, QGS_PRIVATE_SOCKET)
        return check_ready(socket_path, own, timeout, probe_qgs_path)
    if quote:
        return _check_quote(socket_path, private_dir, state_dir, timeout)
    return _check_answers(socket_path, timeout)


def _exchange(path: Path, request: object, timeout: float) -> object:
    """One QGS request on ``path``; the response (unhealthy exit on any failure to get one)."""
    import socket

    from ..abi import qgs as q
    from ..errors import RemoteProtocolError
    from ..wire.qgs import QgsClientConnection, ResponseReceived

    assert isinstance(request, q.Request)
    client = QgsClientConnection()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(client.send(request))
            while True:
                event = client.next_event()
                if isinstance(event, ResponseReceived):
                    return event.response
                client.receive_data(s.recv(65536))
    except (OSError, RemoteProtocolError) as exc:
        unhealthy(f"{path}: {exc}")


def _check_answers(socket_path: Path, timeout: float) -> str:
    from ..abi import qgs as q

    resp = _exchange(socket_path, q.GetPlatformInfoRequest(), timeout)
    assert isinstance(resp, q.GetPlatformInfoResponse)
    if resp.error_code != 0:
        unhealthy(f"{socket_path} answered GET_PLATFORM_INFO with error {resp.error_code:#x}")
    return f"ok: {socket_path} answers (TDQE ISVSVN {resp.tdqe_isvsvn}, PCE ISVSVN {resp.pce_isvsvn})"


def _check_quote(socket_path: Path, private_dir: Path | None, state_dir: Path | None, timeout: float) -> str:
    from ..abi import qgs as q
    from ..server.instance import QGS_PRIVATE_SOCKET, private_socket

    path = private_socket(private_dir, QGS_PRIVATE_SOCKET) if private_dir is not None else socket_path
    info = _exchange(path, q.GetPlatformInfoRequest(), timeout)
    assert isinstance(info, q.GetPlatformInfoResponse)
    if info.error_code != 0:
        unhealthy(f"{path}: GET_PLATFORM_INFO failed with {info.error_code:#x}")
    module = _simulated_module(state_dir, info.platform_id)
    if module is not None:
        report = module.report(b"sgx-quote-helper qgs healthcheck" + os.urandom(16))
        resp = _exchange(path, q.GetQuoteRequest(report.to_bytes()), timeout)
        assert isinstance(resp, q.GetQuoteResponse)
        if resp.error_code != 0:
            unhealthy(f"{path}: the simulated TDQE refused our TDREPORT ({resp.error_code:#x})")
        problem = _quote_problem(resp.quote, report.mac_struct.report_data)
        if problem is not None:
            unhealthy(f"{path} returned a bad quote: {problem}")
        return f"ok: {path} quoted ({len(resp.quote)} bytes, signature and report checked; simulated engine)"
    resp = _exchange(path, q.GetQuoteRequest(bytes(1024)), timeout)
    assert isinstance(resp, q.GetQuoteResponse)
    if resp.error_code == 0:
        unhealthy(f"{path} quoted an all-zero TDREPORT no TDX module made: its engine does not check reports")
    return f"ok: {path}: the engine checked our all-zero TDREPORT and refused it ({resp.error_code:#x}, as it must)"


def _simulated_module(state_dir: Path | None, platform_id: bytes) -> TdxModule | None:
    """The simulated TDX module of --state-dir when it is the platform the server quotes for."""
    from ..sim.platform import Platform
    from ..sim.tdx_module import TdxModule

    try:
        platform = Platform.open(resolve_state_dir(state_dir))
        if platform.identity.qe_id != platform_id:
            return None
        return TdxModule.open(platform)
    except (SgxQuoteHelperError, OSError):
        return None


def _quote_problem(raw: bytes, report_data: bytes) -> str | None:
    from ..abi.quote import Quote
    from ..verify.steps import Step, ecdsa_verify, raw_public_key

    try:
        quote = Quote.from_bytes(raw)
        key = raw_public_key(quote.signature_data.attestation_key, Step.ISV_SIGNATURE, "attestation-key")
    except SgxQuoteHelperError as exc:
        return f"unparsable: {exc}"
    if not quote.is_tdx or quote.report_data != report_data:
        return "it does not carry the TDREPORT we sent"
    if not ecdsa_verify(key, quote.signature_data.signature, quote.signed_bytes):
        return "its signature does not verify with its attestation key"
    return None


__all__ = ["check_qgs", "qgs", "tdx_options"]
