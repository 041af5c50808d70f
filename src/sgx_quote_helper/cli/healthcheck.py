"""``sgx-quote-helper healthcheck``: exit 0 only if the quote service is healthy (Kubernetes probes).

Three checks, one per probe of the chart's DaemonSet (deploy/README.md, "Probes"):

- default: the socket answers GetSupportedAttKeyIDNum with at least one key id (any host);
- ``--ready`` (readinessProbe): the shared path is served by THIS pod's daemon. The daemon's
  private socket in ``--private-dir`` (the pod's emptyDir, ``serve --private-dir``) says which
  instance it is; the probe asks the shared path who serves it (HelperProbe) and passes only when
  it is the same instance and that instance says ``serving``. Before the takeover it fails with
  "the path is still served by instance X"; after a handover, with "handed over to instance Y";
- ``--quote`` (livenessProbe, startupProbe): a quote through this daemon's own engine (its private
  socket when ``--private-dir`` is given, whoever serves the shared path): InitQuoteEx (loads the
  QE, asks the quote provider for the certification data), GetQuoteSizeEx, then GetQuoteEx. With
  the simulated engine the report is a real one made for its QE from the platform state
  (``--state-dir``/``$SGX_QUOTE_HELPER_STATE``, as the daemon's container has it) and the quote that
  comes back must carry that report and a valid signature. On hardware no enclave of ours can make
  a report, so the probe sends an all-zero one: the QE3 checks it inside the enclave and must refuse
  it with INVALID_REPORT (47), which a wedged QE or quote library never answers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from ..errors import AesmError, BadResponseError, LocalProtocolError, SgxQuoteHelperError, TransportError
from ._common import resolve_state_dir, socket_option, state_dir_option

if TYPE_CHECKING:
    from ..server.socketpath import Prober

_CLIENT_ERRORS = (TransportError, BadResponseError, LocalProtocolError)


@click.command("healthcheck")
@socket_option()
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True, help="Seconds."
)
@click.option(
    "--private-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The daemon's private directory (serve --private-dir): reach this very daemon there.",
)
@click.option(
    "--ready",
    is_flag=True,
    help="Readiness: pass only when the --socket path is served by the daemon of --private-dir.",
)
@click.option(
    "--quote",
    is_flag=True,
    help="Liveness/startup: a quote through the daemon's own engine (see above).",
)
@click.option(
    "--qgs-socket",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also check the QGS that `serve --qgs-socket` runs in the same daemon, the same way "
    "(`qgs healthcheck` with --ready/--quote/neither, same --private-dir): one probe for both.",
)
@state_dir_option
def healthcheck(
    socket_path: Path,
    timeout: float,
    private_dir: Path | None,
    ready: bool,
    quote: bool,
    qgs_socket: Path | None,
    state_dir: Path | None,
) -> None:
    """Check the quote service; exit 0 when healthy, 1 (with one line saying why) when not.

    Without --ready/--quote: GetSupportedAttKeyIDNum must answer at least one key id. --ready: the
    socket path is served by the daemon whose private socket is in --private-dir (Kubernetes
    readiness: this pod, not the one it replaces). --quote: a quote through that daemon's engine
    (Kubernetes liveness and startup: a wedged quoting enclave or quote provider fails it). No
    retries: a probe must answer now. With --qgs-socket (a daemon run as `serve --qgs-socket`): the
    same check of its QGS too (`qgs healthcheck`), both must pass; what each says, one line each.

    \b
    Examples:
      sgx-quote-helper healthcheck
      sgx-quote-helper healthcheck --socket /tmp/aesm/aesm.socket --timeout 2
      sgx-quote-helper healthcheck --ready --private-dir /run/sgx-quote-helper
      sgx-quote-helper healthcheck --quote --private-dir /run/sgx-quote-helper
      sgx-quote-helper healthcheck --ready --private-dir /run/sgx-quote-helper --qgs-socket /var/run/tdx-qgs/qgs.socket
    Kubernetes (the chart):
      readinessProbe: {exec: {command: [sgx-quote-helper, healthcheck, --ready, --private-dir, /run/sgx-quote-helper]}}
      livenessProbe:  {exec: {command: [sgx-quote-helper, healthcheck, --quote, --private-dir, /run/sgx-quote-helper]}}
    """
    if ready and quote:
        raise click.BadParameter("give --ready or --quote, not both (one per probe)")
    if ready:
        if private_dir is None:
            raise click.BadParameter("--ready needs --private-dir (where this pod's daemon is reached)")
        click.echo(_check_ready(socket_path, private_dir, timeout))
    elif quote:
        click.echo(_check_quote(socket_path, private_dir, state_dir, timeout))
    else:
        click.echo(_check_answers(socket_path, timeout))
    if qgs_socket is not None:
        from .qgs import check_qgs

        click.echo(check_qgs(qgs_socket, private_dir, state_dir, timeout, ready=ready, quote=quote))


def _check_answers(socket_path: Path, timeout: float) -> str:
    from ..client import QuoteClient

    client = QuoteClient(socket_path, timeout=timeout, retry_deadline=0.0)
    try:
        num = client.get_supported_att_key_id_num()
    except AesmError as exc:
        unhealthy(f"{socket_path} answered with an error: {exc}")
    except _CLIENT_ERRORS as exc:
        unhealthy(f"{socket_path}: {exc}")
    if num < 1:
        unhealthy(f"{socket_path} answers but offers no attestation key id")
    return f"ok: {socket_path} answers, {num} attestation key id(s)"


def _check_ready(socket_path: Path, private_dir: Path, timeout: float) -> str:
    from ..server.instance import private_socket
    from ..server.socketpath import probe_path

    return check_ready(socket_path, private_socket(private_dir), timeout, probe_path)


def check_ready(socket_path: Path, own_socket: Path, timeout: float, probe: Prober) -> str:
    """Readiness (see the module doc), for either protocol: ``own_socket`` is this pod's daemon's
    private socket, ``probe`` asks a path who serves it (``probe_path``, ``probe_qgs_path``)."""
    from ..server.socketpath import PathState

    own = probe(own_socket, timeout)
    if own.state is not PathState.OURS:
        found = probe(socket_path, timeout)
        now = (
            f"the path {socket_path} is still served by instance {found.instance_id} (pid {found.pid})"
            if found.state is PathState.OURS
            else found.detail
        )
        unhealthy(f"not ready: {now}; this pod's daemon does not answer yet ({own.detail})")
    me = f"instance {own.instance_id}"
    if own.owner_state not in ("", "serving"):
        unhealthy(f"not ready: this pod's daemon ({me}) is {own.owner_state}: {_why(own.owner_state)}")
    found = probe(socket_path, timeout)
    if found.state is not PathState.OURS:
        unhealthy(f"not ready: {found.detail}, not by this pod's daemon ({me})")
    if found.instance_id != own.instance_id and found.started_ns > own.started_ns:
        unhealthy(
            f"not ready: the path {socket_path} is served by a newer instance {found.instance_id} "
            f"(pid {found.pid}); this pod's daemon ({me}) is handing it over"
        )
    if found.instance_id != own.instance_id:
        unhealthy(
            f"not ready: the path {socket_path} is still served by instance {found.instance_id} "
            f"(sgx-quote-helper {found.version}, pid {found.pid}, {found.owner_state or 'serving'}), "
            f"not by this pod's daemon ({me}, pid {own.pid})"
        )
    return f"ready: {socket_path} is served by this pod's daemon ({me}, pid {own.pid})"


def _why(state: str) -> str:
    return {
        "handed-over": "a successor serves the socket path now; it stays up drained until its pod is deleted",
        "standby": "a newer instance serves the socket path; it will not take it",
        "terminating": "it got SIGTERM and serves only until a successor takes over",
    }.get(state, "not serving")


def _check_quote(socket_path: Path, private_dir: Path | None, state_dir: Path | None, timeout: float) -> str:
    from ..abi.codes import AesmStatus
    from ..abi.report import Report
    from ..client import QuoteClient
    from ..server.instance import private_socket
    from ..sim.qe import SIMULATED_QE_MRENCLAVE

    path = private_socket(private_dir) if private_dir is not None else socket_path
    client = QuoteClient(path, timeout=timeout, retry_deadline=0.0)
    try:
        init = client.init_quote_ex()
        size = client.get_quote_size_ex()
        if init.target_info.mr_enclave == SIMULATED_QE_MRENCLAVE:
            from ..sim.platform import Platform

            state = resolve_state_dir(state_dir)
            try:
                platform = Platform.open(state)
            except (SgxQuoteHelperError, OSError) as exc:
                unhealthy(
                    f"the simulated engine answers on {path} but its platform {state} cannot be read: {exc}"
                )
            report = platform.ereport(init.target_info, b"sgx-quote-helper healthcheck" + os.urandom(16))
            raw = client.get_quote_ex(report, buf_size=size).quote
            problem = _quote_problem(raw, report)
            if problem is not None:
                unhealthy(f"{path} returned a bad quote: {problem}")
            return f"ok: {path} quoted ({len(raw)} bytes, signature and report checked; simulated engine)"
        try:
            client.get_quote_ex(bytes(Report.SIZE), buf_size=size)
        except AesmError as exc:
            if exc.status == AesmStatus.INVALID_REPORT:
                return (
                    f"ok: {path}: the quoting enclave loaded its key ({size}-byte quotes) and checked "
                    "our all-zero report inside the enclave (INVALID_REPORT, as it must)"
                )
            raise
        unhealthy(f"{path} quoted an all-zero report no enclave made: its engine does not check reports")
    except AesmError as exc:
        unhealthy(f"{path}: the quote path failed: {exc}")
    except _CLIENT_ERRORS as exc:
        unhealthy(f"{path}: {exc}")


def _quote_problem(raw: bytes, report: object) -> str | None:
    from ..abi.quote import Quote
    from ..abi.report import Report
    from ..verify.steps import Step, ecdsa_verify, raw_public_key

    assert isinstance(report, Report)
    try:
        q = Quote.from_bytes(raw)
        key = raw_public_key(q.signature_data.attestation_key, Step.ISV_SIGNATURE, "attestation-key")
    except SgxQuoteHelperError as exc:
        return f"unparsable: {exc}"
    if q.body != report.body:
        return "it does not carry the report we sent"
    if not ecdsa_verify(key, q.signature_data.signature, q.signed_bytes):
        return "its signature does not verify with its attestation key"
    return None


def unhealthy(message: str) -> NoReturn:
    """Say why on stderr and exit 1 (what a probe reads)."""
    click.echo(f"unhealthy: {message}", err=True)
    raise SystemExit(1)
