"""``sgx-quote-helper serve``: run the AESM-compatible quote service in the foreground."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .. import __version__
from ..engine.base import QuotingEngine
from ..errors import ConfigError, SgxQuoteHelperError
from ._common import fail, resolve_state_dir, socket_option, state_dir_option
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

if TYPE_CHECKING:
    from ..engine.select import TdxOptions
    from ..qgs_service import TdxEngine
    from ..server.config import ServerConfig
    from ..server.instance import Instance
    from ..server.qgs import QgsServer

ENGINES = ("simulated", "dcap", "auto", "proxy")
#: ``--qgs-engine follow``: the QGS engine that goes with each ``--engine`` (proxy has none)
QGS_FOLLOWS = {"simulated": "simulated", "dcap": "tdx", "auto": "auto"}
QGS_ENGINES = ("follow", "simulated", "tdx", "auto")
#: what ``serve`` says instead of ``qgs serve``'s hint when the QGS's auto engine refuses
QGS_BESIDE_REFUSAL_HINT = (
    "The QGS's --qgs-engine auto (what --engine auto implies) never serves simulated quotes on its "
    "own; --qgs-engine simulated runs the simulated platform's TDX side instead (its quotes chain to "
    "a SIMULATED Intel root, not Intel's)."
)


_mode, _group = parse_mode, parse_group


def _when(ns: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat(timespec="milliseconds")


_rate = parse_rate


def open_engine(
    kind: str,
    state_dir: Path | None,
    dcap_library: str | None = None,
    qpl_path: str | None = None,
    device_root: Path = Path("/dev"),
) -> QuotingEngine:
    """Build the engine named on the command line (imports only what that engine needs)."""
    # engine choice (auto/dcap/simulated) lives in engine.select, shared with the in-process mode
    from ..engine.select import DcapOptions, select_engine

    dcap = DcapOptions(device_root=device_root, qpl_path=qpl_path)
    if dcap_library is not None:
        dcap = DcapOptions(library=dcap_library, device_root=device_root, qpl_path=qpl_path)
    return select_engine(kind, state_dir=resolve_state_dir(state_dir), create_state=True, dcap=dcap)


def qgs_engine_for(engine: str, qgs_engine: str) -> str:
    """The QGS engine ``serve --qgs-socket`` runs beside ``--engine`` (``follow``: dcap -> tdx)."""
    if engine == "proxy":
        raise click.BadParameter(
            "--qgs-socket does not go with --engine proxy: a proxy has no quoting engine for TD "
            "guests (it forwards AESM frames only); run `qgs serve` beside it, or serve with "
            "--engine dcap|auto|simulated"
        )
    return QGS_FOLLOWS[engine] if qgs_engine == "follow" else qgs_engine


def open_qgs_engine(name: str, state_dir: Path | None, workers: int, tdx: TdxOptions) -> TdxEngine:
    """The TDX engine of the QGS beside the AESM service; ``auto``'s refusal speaks of ``serve``'s
    flags (``--qgs-engine``) rather than ``qgs serve --engine``."""
    from ..engine.select import QGS_AUTO_REFUSAL_HINT
    from .qgs import _open_engine

    try:
        return _open_engine(name, state_dir, workers, tdx)
    except ConfigError as exc:
        text = str(exc)
        if QGS_AUTO_REFUSAL_HINT not in text:
            raise
        raise ConfigError(text.replace(QGS_AUTO_REFUSAL_HINT, QGS_BESIDE_REFUSAL_HINT)) from exc


def _qgs_choice(qgs_socket: Path | None, engine: str, qgs_engine: str) -> str | None:
    """The QGS engine to run beside the AESM service (``None``: no --qgs-socket, no QGS)."""
    if qgs_socket is not None:
        return qgs_engine_for(engine, qgs_engine)
    ctx = click.get_current_context()
    given = [
        f"--{name.replace('_', '-')}"
        for name in ("qgs_engine", "qgs_workers", "qgs_socket_group", "tdx_library", "tdqe_path")
        if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)
    ]
    if given:
        raise click.BadParameter(
            f"{' and '.join(given)} go with --qgs-socket PATH (the QGS beside this service)"
        )
    return None


def _qgs_beside(
    config: ServerConfig,
    path: Path,
    group: str | None,
    workers: int,
    engine: TdxEngine,
    instance: Instance,
) -> QgsServer:
    """The QGS service ``serve --qgs-socket`` runs beside the AESM one: the same instance, limits,
    private directory and handover window; its metrics on the AESM endpoint."""
    from ..qgs_service import QgsService
    from ..server.qgs import QgsConfig, QgsListener, QgsServer

    qgs_config = QgsConfig(
        listeners=(QgsListener(path=path, group=_group(group)),),
        workers=workers,
        idle_timeout=config.idle_timeout,
        allow_uids=config.allow_uids,
        allow_gids=config.allow_gids,
        rate_limit=config.rate_limit,
        rate_burst=config.rate_burst,
        max_in_flight_per_peer=config.max_in_flight_per_peer,
        limit_by_pid=config.limit_by_pid,
        max_connections=config.max_connections,
        max_connections_per_uid=config.max_connections_per_uid,
        max_reply_bytes=config.max_reply_bytes,
        private_dir=config.private_dir,
        handover_window=config.handover_window,
        replace=config.replace,
    )
    service = QgsService(
        engine,
        version=__version__,
        instance_id=instance.instance_id,
        pid=os.getpid(),
        started_ns=instance.started_ns,
    )
    return QgsServer(service, qgs_config)


def _run_proxy(
    config: ServerConfig, upstream_socket: Path | None, timeout: float, instance: Instance
) -> None:
    """Serve ``config``'s socket by forwarding every frame to ``upstream_socket``."""
    from ..server.proxy import ProxyServer, Upstream
    from ..server.run import run_server

    if upstream_socket is None:
        raise click.BadParameter("--engine proxy needs --upstream-socket PATH")
    try:
        server = ProxyServer(
            Upstream(upstream_socket, timeout=timeout),
            config,
            version=__version__,
            instance_id=instance.instance_id,
            pid=os.getpid(),
        )
        reason = run_server(None, config, server=server)
    except ConfigError as exc:
        fail(str(exc), 2)
    logging.getLogger(__name__).info("exiting: %s", reason)


@click.command("serve")
@socket_option("Unix socket to serve (Intel's clients only ever use the default).")
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default="simulated",
    show_default=True,
    help="simulated: software QE on a simulated platform (real signatures, SIMULATED Intel PKI); "
    "dcap: Intel's QE3/PCE on real SGX hardware; auto: dcap when /dev/sgx_enclave, "
    "/dev/sgx_provision and Intel's quote library are present, otherwise exit non-zero saying "
    "what is missing (never falls back to simulated); proxy: forward every request to another "
    "AESM (--upstream-socket).",
)
@click.option(
    "--upstream-socket",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="With --engine proxy: the AESM socket to forward to (e.g. the host's aesmd).",
)
@click.option(
    "--upstream-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="With --engine proxy: seconds for one upstream exchange before answering SERVICE_UNAVAILABLE (30).",
)
@click.option(
    "--dcap-library",
    default=None,
    metavar="PATH",
    help="With --engine dcap/auto: Intel's QE3 logic library [default: libsgx_qe3_logic.so from "
    "the loader path].",
)
@click.option(
    "--qpl-path",
    default=None,
    metavar="PATH",
    help="With --engine dcap/auto: the quote provider library (sgx_set_qpl_path); with --qgs-engine "
    "tdx/auto the QGS's TDX library gets the same one (tee_att_set_path) [default: "
    "libdcap_quoteprov.so.1 from the loader path].",
)
@device_root_option("--engine dcap/auto and --qgs-engine tdx/auto")
@state_dir_option
@click.option(
    "--replace", is_flag=True, help="Take the socket even if another program (e.g. aesmd) serves it."
)
@click.option(
    "--socket-mode", default="0777", show_default=True, help="Permission bits of the socket (octal)."
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Quote requests queued or running before new ones are answered BUSY (18).",
)
@click.option(
    "--backlog", type=click.IntRange(min=1), default=1024, show_default=True, help="listen() backlog."
)
@idle_timeout_option(
    "Seconds an idle client connection is kept open; also how long a client that stops "
    "reading its reply keeps its connection (then it is aborted and its buffer freed)."
)
@click.option(
    "--read-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=15.0,
    show_default=True,
    help="Seconds a client has to finish sending a request it began.",
)
@click.option(
    "--max-frame-size",
    type=click.IntRange(min=64),
    default=1 << 20,
    show_default=True,
    help="Largest request.",
)
@click.option(
    "--inline-engine-ms",
    type=click.FloatRange(min=0),
    default=0.5,
    show_default=True,
    help="Engine requests that recently took less than this run on the event loop, saving a thread "
    "hop (simulated quotes take ~0.06 ms); slower ones (hardware) use the engine thread. 0 = always the thread.",
)
@click.option(
    "--no-uvloop", is_flag=True, help="Use asyncio's default event loop even if uvloop is installed."
)
@click.option(
    "--socket-group",
    default=None,
    metavar="NAME|GID",
    help="Group of the socket file (with --socket-mode 0660: only that group's members may connect).",
)
@allow_options()
@peer_limit_options("BUSY (18)")
@connection_limit_options()
@reply_buffer_option(
    "BUSY (18)",
    "GetQuoteEx requests",
    "; requests for buffers of 64 KiB or more already past three quarters of it, so ordinary "
    "quotes still get through",
)
@metrics_options()
@log_format_option()
@handover_options("healthcheck --ready/--live/--startup --private-dir DIR")
@click.option(
    "--qgs-socket",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also serve the TDX Quote Generation Service (Intel's QGS protocol, as `qgs serve`) on this "
    "Unix socket, in this process, with these limits, private directory, handover window and "
    "metrics endpoint (families sgx_quote_helper_qgs_*); its engine is --qgs-engine. Not with "
    "--engine proxy.",
)
@click.option(
    "--qgs-socket-group",
    default=None,
    metavar="NAME|GID",
    help="With --qgs-socket: group of the QGS socket (mode 0660; the group QEMU runs in).",
)
@click.option(
    "--qgs-engine",
    type=click.Choice(QGS_ENGINES),
    default="follow",
    show_default=True,
    help="With --qgs-socket: the QGS's engine (as `qgs serve --engine`). follow: the one that goes "
    "with --engine (simulated -> simulated, dcap -> tdx, auto -> auto). "
    + QGS_ENGINES_HELP.format(workers="--qgs-workers"),
)
@tdx_engine_options("--qgs-engine tdx/auto", workers="--qgs-workers")
@click.option("-v", "--verbose", count=True, help="More logging (-v info is the default, -vv debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def serve(
    socket_path: Path,
    engine: str,
    upstream_socket: Path | None,
    upstream_timeout: float,
    dcap_library: str | None,
    qpl_path: str | None,
    state_dir: Path | None,
    replace: bool,
    socket_mode: str,
    max_in_flight: int,
    backlog: int,
    idle_timeout: float,
    read_timeout: float,
    max_frame_size: int,
    inline_engine_ms: float,
    no_uvloop: bool,
    socket_group: str | None,
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
    qgs_socket: Path | None,
    qgs_socket_group: str | None,
    qgs_engine: str,
    tdx_library: str | None,
    tdqe_path: str | None,
    qgs_workers: int,
    device_root: Path,
    log_format: str,
    verbose: int,
    quiet: bool,
) -> None:
    """Serve SGX quotes over the AESM (aesmd) socket protocol, as Intel's aesmd does.

    Apps reach it with Intel's libsgx_quote_ex / libsgx_dcap_ql (set SGX_AESM_ADDR=1 for the
    latter), Open Enclave, Gramine, Fortanix, Enarx, oasis-core, or our Python client. The socket
    path is taken over without a gap from a running older sgx-quote-helper (updates), never from a
    newer one; a stale socket is replaced, and a path served by another program is refused unless
    --replace. A daemon whose path a successor took over answers what it owes and stays up, drained,
    until stopped (it never exits by itself). If something that is not sgx-quote-helper replaces
    the socket, the daemon puts its own back and logs an ALERT naming that process. SIGTERM stops
    gracefully (queued and in-flight requests are answered), after up to --handover-window seconds
    of serving while no successor has the path.

    With --qgs-socket the same process also serves TD guests over Intel's QGS protocol (as `qgs
    serve`): one process, instance, private directory and metrics endpoint for both, so one
    DaemonSet runs both on a TDX host. Its engine follows --engine (dcap -> Intel's TDX quote
    library, auto -> the same or a refusal naming what is missing, simulated -> the simulated
    platform's TDX side) unless --qgs-engine says otherwise; --engine proxy has no QGS. Probe both
    with `healthcheck --ready|--quote --qgs-socket PATH`.

    \b
    Examples:
      sgx-quote-helper serve                                  # simulated platform, default socket
      sgx-quote-helper serve --socket /tmp/aesm/aesm.socket --state-dir /tmp/plat
      sgx-quote-helper serve --engine dcap --socket-mode 0660 # real SGX hardware
      sgx-quote-helper serve --engine auto                    # hardware, or refuse to start
      sgx-quote-helper serve --engine proxy --upstream-socket /var/run/aesmd-host/aesm.socket
      sgx-quote-helper serve --socket-mode 0660 --socket-group sgx --allow-gid sgx
      sgx-quote-helper serve --rate-limit 200/s --rate-burst 50 --max-in-flight-per-peer 8
      sgx-quote-helper serve --metrics-port 9464 --metrics-host 0.0.0.0 --log-format json -vv
      sgx-quote-helper healthcheck --socket /tmp/aesm/aesm.socket
      sgx-quote-helper serve --private-dir /run/sgx-quote-helper   # Kubernetes: an emptyDir
      sgx-quote-helper serve --qgs-socket /var/run/tdx-qgs/qgs.socket   # and the QGS, one process
      sgx-quote-helper serve --engine dcap --qgs-socket /var/run/tdx-qgs/qgs.socket --qgs-socket-group qgsd
      sgx-quote-helper healthcheck --ready --private-dir /run/sgx-quote-helper --qgs-socket /var/run/tdx-qgs/qgs.socket
    """
    level = logging.WARNING if quiet else logging.DEBUG if verbose >= 2 else logging.INFO
    setup_logging(level, log_format)
    from ..server.config import ServerConfig
    from ..server.instance import load_instance
    from ..server.run import run_server
    from ..service import AesmService

    try:
        config = ServerConfig(
            socket_path=socket_path,
            socket_mode=_mode(socket_mode),
            backlog=backlog,
            max_in_flight=max_in_flight,
            max_frame_size=max_frame_size,
            idle_timeout=idle_timeout,
            read_timeout=read_timeout,
            replace=replace,
            use_uvloop=not no_uvloop,
            inline_engine_below=inline_engine_ms / 1000,
            socket_group=_group(socket_group),
            allow_uids=frozenset(allow_uids),
            allow_gids=frozenset(g for g in map(_group, allow_gids) if g is not None),
            rate_limit=_rate(rate_limit),
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
        )
        qgs_name = _qgs_choice(qgs_socket, engine, qgs_engine)
        instance = load_instance(private_dir)
        if engine == "proxy":  # no engine here: frames go to another AESM (server/proxy.py)
            _run_proxy(config, upstream_socket, upstream_timeout, instance)
            return
        if upstream_socket is not None:
            raise click.BadParameter("--upstream-socket goes with --engine proxy")
        quoting_engine = open_engine(engine, state_dir, dcap_library, qpl_path, device_root)
    except click.BadParameter:
        raise
    except SgxQuoteHelperError as exc:
        fail(str(exc), 2)
    qgs_quoting: TdxEngine | None = None
    if qgs_name is not None:
        from .qgs import tdx_options

        try:
            tdx = tdx_options(tdx_library, device_root, qpl_path, tdqe_path)
            qgs_quoting = open_qgs_engine(qgs_name, state_dir, qgs_workers, tdx)
        except SgxQuoteHelperError as exc:
            quoting_engine.close()
            fail(str(exc), 2)
    also: tuple[QgsServer, ...] = ()
    try:
        service = AesmService(
            quoting_engine,
            version=__version__,
            instance_id=instance.instance_id,
            pid=os.getpid(),
            started_ns=instance.started_ns,
        )
        if instance.restarted:
            logging.getLogger(__name__).warning(
                "restarted as instance %s (this pod's daemon since %s): a successor newer than it "
                "keeps the socket path",
                instance.instance_id,
                _when(instance.started_ns),
            )
        from ..server.unix import AesmServer

        server = AesmServer(service, config)
        if qgs_socket is not None and qgs_quoting is not None:
            qgs_server = _qgs_beside(config, qgs_socket, qgs_socket_group, qgs_workers, qgs_quoting, instance)
            server.metrics_also = (qgs_server.metrics,)
            also = (qgs_server,)
        reason = run_server(service, config, server=server, also=also)
    except ConfigError as exc:
        fail(str(exc), 2)
    finally:
        quoting_engine.close()
        if qgs_quoting is not None:
            qgs_quoting.close()
    logging.getLogger(__name__).info("exiting: %s", reason)
